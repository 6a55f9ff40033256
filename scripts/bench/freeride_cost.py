"""Cost of the free-rider screen's noise tests per round (issue 12): the product's
:func:`fedtrail.valuation.freeride.free_riders` on synthetic SmallCNN-sized updates (each
tensor Gaussian with a random scale per row: structured enough to pass every test, so every
test runs on every update) against ``stale_rounds`` rounds of references (each site's update and
a global delta per round), timed in one process with the white test alone (``white_z`` 1000)
and with the shaped test too (``shaped_z`` 1000), alternating, ``--repeats`` times.

    python scripts/bench/freeride_cost.py --sites 10,100 --repeats 2
    python scripts/bench/freeride_cost.py --sites 10,100 --repeats 3 --against ../main

Prints seconds per round and their ratio; no target (a measurement: the whole valuation's time
is ``scripts/bench/valuation_profile.py``'s). ``--against TREE``: also loads ``TREE``'s
``fedtrail/valuation/freeride.py`` (another checkout, e.g. main's, on this tree's other
modules) and times it against this tree's, both screens on, calls alternating in one process,
after checking that both give the same free-riders and reasons on these updates (exit 1 when
they differ). ``--sparse F``: the stale screen's sparse test (``stale_support_cosine``, a91)
instead: every update and reference sent through ``topk8`` at fraction ``F`` (the product's
codec; F 1 keeps them dense, where the test compares nothing), timed with the test off (1) and
at the default, alternating in one process, after checking that neither flags an update.

    python scripts/bench/freeride_cost.py --sites 10 --repeats 5 --sparse 0.05

``--kept F``: the same for the kept-entries test (``stale_support_overlap``, a93), off (1)
against the default, with ``stale_support_cosine`` at its default in both.

    python scripts/bench/freeride_cost.py --sites 10,100 --repeats 3 --kept 0.05

``--span``: the span test (``span_residual``, h-264) off (0) against the measured 0.01, the
white and shaped tests on in both, alternating in one process, wall and CPU time, after
checking that it flags no update (the synthetic updates are no mixtures).

    python scripts/bench/freeride_cost.py --sites 10,100 --repeats 3 --span
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch

from fedtrail.ml.models import ModelSpec, federated_state
from fedtrail.storage.codec import Compression, decode_update, encode_update
from fedtrail.valuation import Combiner
from fedtrail.valuation.combine import SPAN_RESIDUAL
from fedtrail.valuation.freeride import free_riders

Delta = dict[str, torch.Tensor]


def _update(state: Delta, gen: torch.Generator) -> Delta:
    out: Delta = {}
    for k, v in state.items():
        if v.dim() == 0:
            out[k] = torch.randn((), generator=gen).to(v.dtype)
            continue
        scale = torch.rand(v.shape[0], *([1] * (v.dim() - 1)), generator=gen)
        out[k] = (torch.randn(v.shape, generator=gen) * scale).to(v.dtype)
    return out


def _load(tree: str) -> ModuleType:
    path = Path(tree) / "fedtrail" / "valuation" / "freeride.py"
    spec = importlib.util.spec_from_file_location("freeride_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", default="10,100", help="site counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--against", default="", help="another tree whose screen to time")
    parser.add_argument("--sparse", type=float, default=0.0, help="time the sparse stale test")
    parser.add_argument("--kept", type=float, default=0.0, help="time the kept-entries test")
    parser.add_argument("--span", action="store_true", help="time the span test")
    args = parser.parse_args(argv)
    other = _load(args.against) if args.against else None
    torch.set_num_threads(1)
    comb = Combiner()
    state = federated_state(ModelSpec().build())
    print(f"SmallCNN: {sum(v.numel() for v in state.values()):,} values per update")
    for n in (int(x) for x in args.sites.split(",") if x):
        gen = torch.Generator().manual_seed(n)
        deltas = {f"s{i:03d}": _update(state, gen) for i in range(n)}
        refs = {
            f"s{i:03d}'s update of round {r}": _update(state, gen)
            for r in range(comb.stale_rounds)
            for i in range(n)
        }
        refs.update({f"global delta of round {r}": _update(state, gen) for r in range(3)})
        if args.span:
            if _span_cost(n, deltas, refs, args.repeats, comb):
                return 1
            continue
        if args.sparse > 0 or args.kept > 0:
            key = "stale_support_cosine" if args.sparse > 0 else "stale_support_overlap"
            f = args.sparse if args.sparse > 0 else args.kept
            if _sparse_cost(n, deltas, refs, f, args.repeats, comb, key):
                return 1
            continue
        if other is not None:
            screens: dict[str, Callable[..., dict[str, str]]] = {
                "this tree": free_riders,
                args.against: other.free_riders,
            }
            kw = {
                "min_norm_ratio": comb.free_rider_norm,
                "stale_cosine": comb.stale_cosine,
                "stale_distance": comb.stale_distance,
                "white_z": comb.white_noise_z,
                "shaped_z": comb.shaped_noise_z,
            }
            got = [fn(deltas, refs, **kw) for fn in screens.values()]
            if got[0] != got[1]:
                print(f"{n} sites: the two screens differ: {got[0]} against {got[1]}")
                return 1
            spent: dict[str, list[float]] = {name: [] for name in screens}
            for _ in range(args.repeats):
                for name, fn in screens.items():
                    started = time.perf_counter()
                    fn(deltas, refs, **kw)
                    spent[name].append(time.perf_counter() - started)
            mine, theirs = (min(v) for v in spent.values())
            print(
                f"{n} sites, {len(refs)} references, both tests: this tree {mine:.3f} s, "
                f"{args.against} {theirs:.3f} s per round (x{mine / theirs:.2f}; fastest of "
                f"{args.repeats}, alternating; same {len(got[0])} free-riders and reasons)"
            )
            continue
        times: dict[float, list[float]] = {0.0: [], comb.shaped_noise_z: []}
        for _ in range(args.repeats):
            for shaped in times:
                started = time.perf_counter()
                free_riders(
                    deltas,
                    refs,
                    min_norm_ratio=comb.free_rider_norm,
                    stale_cosine=comb.stale_cosine,
                    stale_distance=comb.stale_distance,
                    white_z=comb.white_noise_z,
                    shaped_z=shaped,
                )
                times[shaped].append(time.perf_counter() - started)
        white, both = (min(v) for v in times.values())
        print(
            f"{n} sites, {len(refs)} references: white test {white:.3f} s, white + shaped "
            f"{both:.3f} s per round (x{both / white:.2f}; fastest of {args.repeats})"
        )
    return 0


def _span_cost(
    n: int, deltas: dict[str, Delta], refs: dict[str, Delta], repeats: int, comb: Combiner
) -> int:
    """The span test's cost: off against on (:data:`SPAN_RESIDUAL`), alternating."""
    kw = {
        "min_norm_ratio": comb.free_rider_norm,
        "stale_cosine": comb.stale_cosine,
        "stale_distance": comb.stale_distance,
        "white_z": comb.white_noise_z,
        "shaped_z": comb.shaped_noise_z,
    }
    settings = {"off": 0.0, "on": SPAN_RESIDUAL}  # the measured value (the terms' default: off)
    got = {k: free_riders(deltas, refs, span_residual=v, **kw) for k, v in settings.items()}
    if got["on"] != got["off"]:
        print(f"{n} sites: the span test flags honest updates: {got['on']}")
        return 1
    wall: dict[str, list[float]] = {k: [] for k in settings}
    cpu: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(repeats):
        for k, v in settings.items():
            started, cpu0 = time.perf_counter(), time.process_time()
            free_riders(deltas, refs, span_residual=v, **kw)
            wall[k].append(time.perf_counter() - started)
            cpu[k].append(time.process_time() - cpu0)
    off, on = min(wall["off"]), min(wall["on"])
    c_off, c_on = min(cpu["off"]), min(cpu["on"])
    print(
        f"{n} sites, {len(refs)} references: span test off {off:.3f} s, on {on:.3f} s per round "
        f"(+{on - off:.3f} s wall, x{on / off:.2f}); CPU {c_off:.3f} -> {c_on:.3f} s "
        f"(+{c_on - c_off:.3f} s); fastest of {repeats}, alternating; same "
        f"{len(got['on'])} free-riders"
    )
    return 0


def _sparse_cost(
    n: int,
    deltas: dict[str, Delta],
    refs: dict[str, Delta],
    f: float,
    repeats: int,
    comb: Combiner,
    key: str = "stale_support_cosine",
) -> int:
    """The cost of the stale screen's test ``key`` (``--sparse``: ``stale_support_cosine``;
    ``--kept``: ``stale_support_overlap``): off against on, alternating."""
    spec = ModelSpec()
    method = Compression(method="topk8", fraction=f)

    def sent(d: Delta) -> Delta:
        blob = encode_update(d, spec=spec, round=1, compression=method).blob
        return dict(decode_update(blob, spec=spec, expected_round=1)[0])

    deltas = {k: sent(v) for k, v in deltas.items()}
    refs = {k: sent(v) for k, v in refs.items()}
    kw = {
        "min_norm_ratio": comb.free_rider_norm,
        "stale_cosine": comb.stale_cosine,
        "stale_distance": comb.stale_distance,
        "white_z": comb.white_noise_z,
        "shaped_z": comb.shaped_noise_z,
    }
    if key == "stale_support_overlap":
        kw["stale_support_cosine"] = comb.stale_support_cosine
    settings = {"off": 1.0, "on": getattr(comb, key)}
    got = {k: free_riders(deltas, refs, **{key: v}, **kw) for k, v in settings.items()}
    if got["on"] != got["off"]:
        print(f"{n} sites: {key} flags honest updates: {got['on']}")
        return 1
    spent: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(repeats):
        for k, v in settings.items():
            started = time.perf_counter()
            free_riders(deltas, refs, **{key: v}, **kw)
            spent[k].append(time.perf_counter() - started)
    off, on = min(spent["off"]), min(spent["on"])
    print(
        f"{n} sites, {len(refs)} references, topk8 f={f:g}: {key} off {off:.3f} s, "
        f"on {on:.3f} s per round (x{on / off:.2f}, +{on - off:.3f} s; fastest of {repeats}, "
        f"alternating; same {len(got['on'])} free-riders)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
