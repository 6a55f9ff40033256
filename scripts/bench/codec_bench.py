#!/usr/bin/env python3
"""Bytes per update, dense vs topk8, and codec speed, for the node's CNN.

    .venv/bin/python scripts/bench/codec_bench.py [--repeats 20] [--steps 40] [--json]

Two kinds of delta: a real one (the model trained ``--steps`` SGD steps on the bundled
PneumoniaMNIST subset, minus its initial weights) and Gaussian noise. Sizes depend on the delta
only through the index gap dtype, which real, clustered deltas push wider. Times are medians over
``--repeats`` and given per MB of dense float32 input, so specs of different size compare; a wide
spec is included because a 0.4 MB model is dominated by fixed per-call costs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.ml.models import ModelSpec, federated_state, initial_model  # noqa: E402
from fedtrail.storage.codec import (  # noqa: E402
    Compression,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
)

DATA = ROOT / "fedtrail" / "data" / "pneumoniamnist_balanced.npz"
FRACTIONS = (0.01, 0.05, 0.1)
MB = 1024 * 1024


def trained_delta(spec: ModelSpec, steps: int) -> dict[str, torch.Tensor]:
    """A realistic update: a few SGD steps of local training from the seeded initial model."""
    model = initial_model(spec, seed=0)
    before = {k: v.clone() for k, v in federated_state(model).items()}
    with np.load(DATA) as d:
        x = torch.from_numpy(d["train_images"]).float().div(255).unsqueeze(1)
        y = torch.from_numpy(d["train_labels"]).long().reshape(-1)
    if spec.image_size != x.shape[-1]:
        raise SystemExit("the real delta needs a 28x28 spec")
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        i = torch.randint(0, len(x), (32,), generator=g)
        opt.zero_grad()
        loss_fn(model(x[i]), y[i]).backward()
        opt.step()
    return {k: v.detach() - before[k] for k, v in federated_state(model).items()}


def gaussian_delta(spec: ModelSpec) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {n: torch.randn(s, generator=g) * 0.01 for n, (s, _) in spec.tensor_layout().items()}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


@dataclass
class SizeRow:
    method: str
    fraction: float | None
    bytes: int
    reduction_pct: float
    index_dtypes: list[str]


@dataclass
class SpeedRow:
    what: str
    dense_mb: float
    encode_ms: float
    decode_ms: float

    @property
    def encode_ms_per_mb(self) -> float:
        return self.encode_ms / self.dense_mb

    @property
    def decode_ms_per_mb(self) -> float:
        return self.decode_ms / self.dense_mb


def sizes(spec: ModelSpec, delta: dict[str, torch.Tensor]) -> list[SizeRow]:
    dense = len(encode_update(delta, spec=spec, round=1).blob)
    rows = [SizeRow("none", None, dense, 0.0, [])]
    for f in FRACTIONS:
        comp = Compression(method="topk8", fraction=f)
        blob = encode_update(delta, spec=spec, round=1, compression=comp).blob
        header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
        idx = sorted({e["dtype"] for k, e in header.items() if k.endswith(":idx")})
        rows.append(SizeRow("topk8", f, len(blob), 100 * (1 - len(blob) / dense), idx))
    return rows


def speed(spec: ModelSpec, delta: dict[str, torch.Tensor], repeats: int) -> list[SpeedRow]:
    dense_mb = 4 * sum(t.numel() for t in delta.values()) / MB
    state = federated_state(initial_model(spec, seed=0))
    model_blob = encode_model(state, spec=spec, round=1)
    rows = [
        SpeedRow(
            "model",
            dense_mb,
            median_ms(lambda: encode_model(state, spec=spec, round=1), repeats),
            median_ms(lambda: decode_model(model_blob, spec=spec), repeats),
        )
    ]
    for comp in (Compression(), *(Compression(method="topk8", fraction=f) for f in FRACTIONS)):
        blob = encode_update(delta, spec=spec, round=1, compression=comp).blob

        def enc(c: Compression = comp) -> object:
            return encode_update(delta, spec=spec, round=1, compression=c)

        def dec(b: bytes = blob) -> object:
            return decode_update(b, spec=spec)

        name = "update none" if comp.method == "none" else f"update topk8@{comp.fraction}"
        rows.append(SpeedRow(name, dense_mb, median_ms(enc, repeats), median_ms(dec, repeats)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--steps", type=int, default=40, help="SGD steps for the real delta")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the node trains on few cores; keep timings comparable

    spec, wide = ModelSpec(), ModelSpec(width=64, hidden=256)
    params = sum(math.prod(s) for s, _ in spec.tensor_layout().values())
    size_rows = {
        "trained delta": sizes(spec, trained_delta(spec, args.steps)),
        "gaussian delta": sizes(spec, gaussian_delta(spec)),
    }
    speed_rows = {
        "ModelSpec()": speed(spec, trained_delta(spec, args.steps), args.repeats),
        "ModelSpec(width=64, hidden=256)": speed(
            wide, gaussian_delta(wide), max(3, args.repeats // 4)
        ),
    }
    if args.json:
        doc = {
            "params": params,
            "sizes": {k: [asdict(r) for r in v] for k, v in size_rows.items()},
            "speed": {
                k: [
                    {
                        **asdict(r),
                        "encode_ms_per_mb": r.encode_ms_per_mb,
                        "decode_ms_per_mb": r.decode_ms_per_mb,
                    }
                    for r in v
                ]
                for k, v in speed_rows.items()
            },
        }
        print(json.dumps(doc, indent=2))
        return
    print(f"ModelSpec(): {params} parameters, {4 * params / MB:.3f} MB dense float32")
    for label, srows in size_rows.items():
        print(f"\nbytes per update ({label}):")
        print(f"  {'method':<8}{'fraction':>9}{'bytes':>10}{'reduction':>11}  index dtypes")
        for r in srows:
            frac = "-" if r.fraction is None else f"{r.fraction:.2f}"
            idx = ",".join(r.index_dtypes) or "-"
            print(f"  {r.method:<8}{frac:>9}{r.bytes:>10}{r.reduction_pct:>10.2f}%  {idx}")
    for which, prows in speed_rows.items():
        print(f"\nspeed, {which}, {prows[0].dense_mb:.3f} MB dense, 1 thread (median):")
        print(f"  {'what':<20}{'enc ms':>9}{'dec ms':>9}{'enc ms/MB':>11}{'dec ms/MB':>11}")
        for p in prows:
            print(
                f"  {p.what:<20}{p.encode_ms:>9.2f}{p.decode_ms:>9.2f}"
                f"{p.encode_ms_per_mb:>11.2f}{p.decode_ms_per_mb:>11.2f}"
            )


if __name__ == "__main__":
    main()
