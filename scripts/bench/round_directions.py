"""How a round's updates point, read back from a demo's store (issue 12, the warm-up's sign flip).

For one round of a finished ``fedtrail demo --workdir DIR`` run: every update of the round's log
(decoded from ``DIR/store``), its cosine to the coordinate-wise median of all of them (the
product's :func:`~fedtrail.valuation.robust.robust_statistics`, what the screens and the log's
``components.cosine`` read), to the median of the others, its norm over the median norm, the
pairwise cosines, and the last layer's bias delta (the others' median: ``torch.quantile`` at 0.5,
the midpoint of the two middle values for an even count) (which class each update pushes toward).

    python scripts/bench/round_directions.py --workdir /tmp/demo --round 1

Exit 1 when the round's log or an update cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from fedtrail.ml.models import ModelSpec
from fedtrail.storage.codec import decode_update
from fedtrail.valuation.robust import robust_statistics

Delta = dict[str, torch.Tensor]


def _logs(blobs: Path) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    """Round logs by round and the first round's model spec, from the store's JSON blobs."""
    logs: dict[int, dict[str, Any]] = {}
    spec = None
    for path in sorted(blobs.iterdir()):
        try:
            doc = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict):
            continue
        if "sites" in doc and "ledger" in doc and isinstance(doc.get("round"), int):
            logs[doc["round"]] = doc
        if "model_spec" in doc and doc.get("round") == 1:
            spec = doc["model_spec"]
    return logs, spec


def _flat(delta: Delta) -> torch.Tensor:
    return torch.cat([v.flatten().double() for v in delta.values()])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True, help="the demo's --workdir")
    ap.add_argument("--round", type=int, default=1)
    args = ap.parse_args(argv)
    blobs = args.workdir / "store" / "blobs"
    logs, spec_json = _logs(blobs)
    if args.round not in logs or spec_json is None:
        print(f"no round {args.round} log or no round-1 terms under {blobs}", file=sys.stderr)
        return 1
    spec = ModelSpec(**spec_json)
    deltas: dict[str, Delta] = {}
    names: dict[str, str] = {}
    for entry in logs[args.round]["sites"]:
        update = entry.get("update")
        if not update:
            continue
        delta, _ = decode_update((blobs / update["cid"]).read_bytes(), spec=spec)
        deltas[entry["site"]] = delta
        names[entry["site"]] = entry.get("name") or entry["site"][:10]
    stats = robust_statistics(deltas, statistics=spec.statistic_names())
    flat = {s: _flat(d) for s, d in deltas.items()}
    order = sorted(deltas, key=lambda s: names[s])
    last_bias = [k for k in next(iter(deltas.values())) if k.endswith("bias")][-1]
    print(f"round {args.round}: {len(order)} updates; last bias tensor {last_bias}")
    print("site          cosine  to others'  norm/median  last bias delta")
    for s in order:
        others = {o: d for o, d in deltas.items() if o != s}
        med = torch.quantile(torch.stack([flat[o] for o in others]), 0.5, dim=0)
        r = stats[s]
        bias = [round(float(x), 4) for x in deltas[s][last_bias].flatten()]
        print(
            f"{names[s]:12s}  {r.cosine:+.3f}  {_cos(flat[s], med):+.3f}      "
            f"{r.norm / r.median_norm:5.2f}x       {bias}"
        )
    print("pairwise cosines:")
    print(" " * 12 + "".join(f"  {names[s][-10:]:>10s}" for s in order))
    for s in order:
        print(f"{names[s]:12s}" + "".join(f"  {_cos(flat[s], flat[o]):+10.2f}" for o in order))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
