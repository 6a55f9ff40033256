#!/usr/bin/env python3
"""Every validator's vector of peer-mode federations, dumped exactly, to compare two trees.

    .venv/bin/python scripts/bench/peer_vectors_dump.py --out vectors.json [--sites 10]
        [--rounds 4] [--seeds 0,1] [--threads 1] [--compression topk8] [--no-public-screen]

Runs ``peer_validators.py``'s federation (``--sites`` sites, alpha 1, every site a validator)
for each seed and each validation-shard mode (``dirichlet``, ``proportional``) and writes, per
validator and round, everything its :func:`~fedtrail.valuation.peer_vector` returned that a
score depends on or reports: the score vector, each site's status, reason, detail, value,
cosine, norm and norm z-score, ``v_empty``/``v_full``, the game, the accumulated values and the
next history's reference labels; then each round's median scores, reasons and weights, and a
sha256 of each round's global model. Floats are written with ``repr`` (exact). Run it in two
trees (e.g. a branch and main) and compare the files byte for byte (``cmp``): equal files mean
every score, reason and global model is unchanged. ``--compression`` (a codec of
``fedtrail.storage.codec``, e.g. ``topk8``): every sent update through it (``peer_validators.py``'s
option), so the free-rider screen's sparse tests run on sparse updates. The peer rounds run
under the public screen by default, as a new peer federation's aggregator offers since session
57 (the validators skip the free-rider screen; each round's ``screened`` marks are written);
``--no-public-screen``: every validator screens, the mode the dump ran before session 58 (README
*Peer scoring time per site* gives both files' sha256). Exit 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

import torch

from fedtrail.aggregator.service import DEFAULT_PUBLIC_SCREEN
from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import load_bundled
from fedtrail.storage.codec import Compression
from scripts.bench import _sim


def _vector(pv: Any) -> dict[str, Any]:
    report = pv.report
    return {
        "scores": list(pv.scores),
        "method": report.method,
        "v_empty": repr(report.v_empty),
        "v_full": repr(report.v_full),
        "accumulated": {k: repr(v) for k, v in sorted((report.accumulated or {}).items())},
        "references": [] if pv.history is None else list(pv.history.references),
        "sites": [
            {
                "site": v.site,
                "status": v.status.name,
                "score": v.score,
                "reason": v.reason.name,
                "detail": v.detail,
                "value": repr(v.value),
                "cosine": repr(v.cosine),
                "norm": repr(v.norm),
                "norm_z": repr(v.norm_z),
            }
            for v in report.sites
        ],
    }


def _digest(state: Any) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(
    sites: int,
    rounds: int,
    seed: int,
    shards: _sim.ValShards,
    compression: Compression | None = None,
    public_screen: bool = DEFAULT_PUBLIC_SCREEN,
) -> dict[str, Any]:
    vectors: list[dict[str, Any]] = []
    original = _sim.peer_vector

    def keep(**kwargs: Any) -> Any:
        pv = original(**kwargs)
        vectors.append(
            {
                "validator": kwargs["validator"],
                "round": kwargs["round_id"],
                "global": _digest(kwargs["global_state"]),
                **_vector(pv),
            }
        )
        return pv

    _sim.peer_vector = keep
    try:
        splits = load_bundled()
        config = _sim.SimConfig(
            sites=sites,
            rounds=rounds,
            alpha=1.0,
            min_size=min(50, len(splits.train) // (2 * sites)),
            seed=seed,
            valuation_mode="peers",
            validation_shards=shards,
            compression=compression,
            public_screen=public_screen,
        )
        res = _sim.run_method("valuation", config, splits)
    finally:
        _sim.peer_vector = original
    return {
        "seed": seed,
        "shards": shards,
        "vectors": vectors,
        "rounds": [
            {
                "scores": list(r.scores),
                "reasons": list(r.reasons),
                "weights": [repr(w) for w in r.weights],
                "votes": r.votes,
                # the public screen's marks (its drops are the scores' FREE_RIDER); absent
                # without it, so --no-public-screen writes the files of before session 58
                **({"screened": r.screened} if public_screen else {}),
            }
            for r in res.rounds
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compression", default="", help="every sent update through this codec")
    parser.add_argument(
        "--public-screen",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_PUBLIC_SCREEN,
        help="the round terms' valuation.public_screen (default: the aggregator's, on since "
        "session 57); --no-public-screen: every validator screens (the files before session 58)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        compression = Compression(method=args.compression) if args.compression else None
    except ConfigError as exc:
        parser.error(f"--compression: {exc}")
    runs = [
        run(args.sites, args.rounds, int(seed), shards, compression, args.public_screen)
        for seed in args.seeds.split(",")
        for shards in ("dirichlet", "proportional")
    ]
    args.out.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    count = sum(len(r["vectors"]) for r in runs)
    print(f"{count} vectors of {len(runs)} federations written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
