#!/usr/bin/env python3
"""Where one validator's peer scoring time goes, part by part (issue 14's time bar).

    .venv/bin/python scripts/bench/peer_replay.py [--sites 10] [--site 6] [--round 2]
        [--repeats 30] [--val-shards dirichlet] [--seed 0] [--threads 1] [--compression topk8]
        [--alpha 1] [--committee N] [--no-public-screen] [--profile N]

Runs the peer-mode federation of ``peer_validators.py``'s timing (``--sites`` sites, alpha
``--alpha``, every site a validator or the first ``--committee`` ones, two rounds; at 100 sites
``peer_validators.py`` times ``--alpha 100 --committee 2``), keeping every validator's
:func:`~fedtrail.valuation.peer_vector` arguments; then replays site ``--site``'s call of round
``--round`` ``--repeats`` times with the product's own functions wrapped in place
(``fedtrail.valuation.round``'s module globals,
:class:`~fedtrail.valuation.utility.CoalitionUtility` and ``Combiner`` methods), and prints the
mean CPU milliseconds per call of each (inclusive: a nested wrapped call counts in both), the total
first; last, what reading the round's blobs costs a node beside the call (:func:`reads`). Round 1
is the warm-up (its harm check's gradient pass at the global model, and no game: a validator plays
none in its warm-up; no free-rider references); later rounds are the steady state (the game's
gradient pass at the full coalition).
``--compression topk8``: every update sent through that codec (``peer_validators.py``'s option),
the blobs of :func:`reads` too. The free-rider screen's stale sparse tests
(``fedtrail.valuation.freeride``'s ``support_copy_of`` and ``kept_largest_of``) are timed too.
``--public-screen`` (the default, as a new peer federation's aggregator since session 57): the
round terms' ``valuation.public_screen`` (the validators skip the free-rider screen, so
``free_riders`` is not in the split); ``--no-public-screen``: every validator screens, the mode
before. ``--profile N``: after the replays, cProfile of one more call, its N
costliest functions by own time (the profiler's overhead included).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import hashlib
import os
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

import torch

import fedtrail.valuation.freeride as freeride_mod
import fedtrail.valuation.peers as peers_mod
import fedtrail.valuation.round as round_mod
from fedtrail.aggregator.service import DEFAULT_PUBLIC_SCREEN
from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import load_bundled
from fedtrail.storage.codec import (
    Compression,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
)
from fedtrail.valuation.combine import Combiner
from fedtrail.valuation.peers import UnfitValidation
from fedtrail.valuation.utility import CoalitionUtility
from scripts.bench import _sim

PARTS = (
    "_prechecked",
    "free_riders",
    "_oversized",
    "_broken",
    "_harmful",
    "robust_statistics",
    "_play",
    "_norm",
)


def capture(
    sites: int,
    seed: int,
    val_shards: _sim.ValShards,
    compression: Compression | None = None,
    *,
    alpha: float = 1.0,
    committee: int | None = None,
    public_screen: bool = DEFAULT_PUBLIC_SCREEN,
) -> list[dict[str, Any]]:
    """Every validator's peer_vector arguments of the timing federation, in call order."""
    calls: list[dict[str, Any]] = []
    original = _sim.peer_vector

    def keep(**kwargs: Any) -> Any:
        calls.append(dict(kwargs))
        return original(**kwargs)

    _sim.peer_vector = keep
    try:
        splits = load_bundled()
        config = _sim.SimConfig(
            sites=sites,
            rounds=2,
            alpha=alpha,
            min_size=min(50, len(splits.train) // (2 * sites)),
            seed=seed,
            valuation_mode="peers",
            validation_shards=val_shards,
            compression=compression,
            validators=None if committee is None else tuple(range(committee)),
            public_screen=public_screen,
        )
        _sim.run_method("valuation", config, splits)
    finally:
        _sim.peer_vector = original
    return calls


def wrap(owner: Any, name: str, label: str, totals: dict[str, float]) -> Callable[..., Any]:
    """Replace ``owner.name`` with a wrapper adding its CPU seconds to ``totals[label]``;
    returns the original (put it back with ``setattr``)."""
    inner: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        c0 = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[label] += time.process_time() - c0

    setattr(owner, name, timed)
    return inner


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--site", type=int, default=6, help="the validator's site index")
    parser.add_argument("--round", type=int, default=2, choices=(1, 2))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--val-shards", choices=("dirichlet", "proportional"), default="dirichlet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compression", default="", help="every update through this codec")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--committee", type=int, help="the first N sites validate (default all)")
    parser.add_argument(
        "--public-screen",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_PUBLIC_SCREEN,
        help="valuation.public_screen (default: the aggregator's, on since session 57); "
        "--no-public-screen: the validators screen, as before",
    )
    parser.add_argument("--profile", type=int, default=0, help="cProfile's N costliest functions")
    args = parser.parse_args(argv)
    try:
        compression = Compression(method=args.compression) if args.compression else None
    except ConfigError as exc:
        parser.error(f"--compression: {exc}")
    torch.set_num_threads(args.threads)
    address = _sim.peer_address(args.site)
    calls = [
        c
        for c in capture(
            args.sites,
            args.seed,
            args.val_shards,
            compression,
            alpha=args.alpha,
            committee=args.committee,
            public_screen=args.public_screen,
        )
        if c["validator"] == address and c["round_id"] == args.round
    ]
    if not calls or len(calls[0]["validation"]) == 0:
        print(f"site {args.site} did not validate round {args.round}", file=sys.stderr)
        return 1
    totals: dict[str, float] = collections.defaultdict(float)
    targets: list[tuple[Any, str, str]] = [(round_mod, name, name.lstrip("_")) for name in PARTS]
    targets += [
        (CoalitionUtility, name, f"CoalitionUtility.{name}")
        for name in ("__init__", "linearised", "__call__")
    ]
    targets += [(Combiner, name, f"Combiner.{name}") for name in ("screen", "settle")]
    targets += [(freeride_mod, name, name) for name in ("support_copy_of", "kept_largest_of")]
    originals = [(owner, name, wrap(owner, name, label, totals)) for owner, name, label in targets]
    load = os.getloadavg()[0]
    total = 0.0
    try:
        for _ in range(args.repeats):
            c0 = time.process_time()
            peers_mod.peer_vector(**calls[0])
            total += time.process_time() - c0
    except UnfitValidation:
        print(f"site {args.site} abstains (one class in its split)", file=sys.stderr)
        return 1
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    n = args.repeats
    images = len(calls[0]["validation"])
    print(
        f"site {args.site}, round {args.round}, {images} validation images, {n} replays, "
        f"load {load:.1f}: {total / n * 1e3:.2f} ms CPU per call"
    )
    for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {label:30s} {seconds / n * 1e3:7.2f} ms")
    print(reads(calls[0], n, compression))
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(peers_mod.peer_vector, **calls[0])
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)
    return 0


def reads(call: dict[str, Any], repeats: int, compression: Compression | None = None) -> str:
    """What a node's reading of the round's blobs costs beside the call (not in it, nor in
    ``peer_validators.py``'s figures): each update encoded as a site sends it, then its sha256
    and :func:`~fedtrail.storage.codec.decode_update` timed (CPU, per blob, mean of
    ``repeats``), and the start model's :func:`~fedtrail.storage.codec.decode_model`. A node
    reads each of them when it scores the round and, before the validator kept them
    (``Decoded``), read the updates and the start model again as the next round's free-rider
    references."""
    spec, round_id = call["spec"], call["round_id"]
    blobs = [
        encode_update(
            c.delta, spec=spec, round=round_id, compression=compression or Compression()
        ).blob
        for c in call["candidates"]
        if c.delta is not None
    ]
    model = encode_model(call["global_state"], spec=spec, round=round_id)
    c0 = time.process_time()
    for _ in range(repeats):
        for blob in blobs:
            hashlib.sha256(blob).digest()
    hashing = (time.process_time() - c0) / repeats
    c0 = time.process_time()
    for _ in range(repeats):
        for blob in blobs:
            decode_update(blob, spec=spec, expected_round=round_id)
    decoding = (time.process_time() - c0) / repeats
    c0 = time.process_time()
    for _ in range(repeats):
        decode_model(model, spec=spec)
    start = (time.process_time() - c0) / repeats
    size = sum(len(b) for b in blobs) / max(len(blobs), 1)
    return (
        f"reading the round's {len(blobs)} updates ({size:,.0f} B each; not in the call): "
        f"sha256 {hashing * 1e3:.2f} ms, decode_update {decoding * 1e3:.2f} ms, the start "
        f"model's decode_model {start * 1e3:.2f} ms (CPU, all of them, mean of {repeats})"
    )


if __name__ == "__main__":
    sys.exit(main())
