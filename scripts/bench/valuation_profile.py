#!/usr/bin/env python3
"""Where a later round's valuation of many sites spends its time, part by part (issue 18).

    .venv/bin/python scripts/bench/valuation_profile.py [--sites 100] [--threads 1]
        [--large-game budget_shapley] [--bar 5] [--clock cpu] [--repeats 1] [--first-round]
        [--stale-rounds 3] [--against TREE]

``--stale-rounds K``: free-rider references from K earlier rounds (default: the preset's
``stale_rounds``, 3). ``--first-round``: the warm-up round instead (an empty
:class:`~fedtrail.valuation.History`: no free-rider references, and the warm-up harm check that
plays each update alone).

One round valued as the aggregator service values a round after the first with a standing
(:func:`fedtrail.valuation.value_round` with metric ``balanced_loss``,
:data:`~fedtrail.valuation.HISTORY_COMBINER`, a :class:`~fedtrail.valuation.History` whose
free-rider references are every site's updates and the global deltas of earlier rounds, the
large game ``aggregator run`` plays by default, ``budget_shapley`` since session 61, unless
``--large-game`` names another or ``none``). The sites and references are
the ones of ``valuation_bench.py --compare`` (five real one-epoch SmallCNN updates and seeded
noisy variations of them; each site's previous update and the global delta from
``valuation_bench.earlier_references``: near, not stale).

The product's own functions are wrapped in place (``fedtrail.valuation.round``'s module globals
and ``Combiner`` methods), each timed exclusively (time inside a nested timed call counts for the
inner part only) in both wall seconds and the process's CPU seconds (all threads):

- free_riders: :func:`fedtrail.valuation.freeride.free_riders` (norms, stale-copy checks);
- game: the game (``_play``: coalition evaluations, slopes, Shapley);
- utility setup: ``CoalitionUtility(...)`` (the coalition utility's construction);
- prechecks: ``_prechecked`` (layout, duplicates, samples), ``_oversized``, ``_broken``
  (finiteness bounds), ``_harmful`` (warm-up only);
- strip statistics: ``without_statistics``; model norm: ``_norm``;
- robust statistics: ``robust_statistics``; screen / settle: ``Combiner.screen`` / ``settle``;
- other: the rest of ``value_round``.

``--against TREE``: A/B of the free-rider screen inside the whole valuation: the rounds alternate
between this tree's :func:`~fedtrail.valuation.freeride.free_riders` and ``TREE``'s (that
checkout's ``fedtrail/valuation/freeride.py`` on this tree's other modules, put in
``fedtrail.valuation.round``'s place), ``--repeats`` rounds each, in this one process; each
side's total per round is printed (the split table counts both), and it exits 1 when the two
sides' reports differ.

Prints the split, the load average before and after, and exits 1 when the round's total on
``--clock`` exceeds ``--bar`` seconds (issue 18: valuation of 100 sites <= 5 s per round).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fedtrail.valuation.round as round_mod  # noqa: E402
from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.models import ModelSpec, federated_state, initial_model  # noqa: E402
from fedtrail.protocol.codes import Reason  # noqa: E402
from fedtrail.valuation import HISTORY_COMBINER, Candidate, History, value_round  # noqa: E402
from fedtrail.valuation.combine import Combiner  # noqa: E402
from scripts.bench.valuation_bench import (  # noqa: E402
    _synthetic_sites,
    earlier_references,
    real_updates,
)

PARTS = (
    "free_riders",
    "game",
    "utility setup",
    "prechecks",
    "strip statistics",
    "model norm",
    "robust statistics",
    "screen",
    "settle",
    "other",
)
VALUATION_BAR = 5.0


class Clock:
    """Exclusive wall and CPU seconds per part (nested timed calls count for the inner one)."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(PARTS, 0.0)
        self.cpu = dict.fromkeys(PARTS, 0.0)
        self.calls = dict.fromkeys(PARTS, 0)
        self._stack: list[list[float]] = []

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            # start wall, start cpu, nested wall, nested cpu
            frame = [time.perf_counter(), time.process_time(), 0.0, 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                wall = time.perf_counter() - frame[0]
                cpu = time.process_time() - frame[1]
                self.wall[part] += wall - frame[2]
                self.cpu[part] += cpu - frame[3]
                self.calls[part] += 1
                if self._stack:
                    self._stack[-1][2] += wall
                    self._stack[-1][3] += cpu

        return timed


def _instrument(clock: Clock) -> None:
    for name, part in (
        ("free_riders", "free_riders"),
        ("_play", "game"),
        ("CoalitionUtility", "utility setup"),
        ("_prechecked", "prechecks"),
        ("_oversized", "prechecks"),
        ("_broken", "prechecks"),
        ("_harmful", "prechecks"),
        ("without_statistics", "strip statistics"),
        ("_norm", "model norm"),
        ("robust_statistics", "robust statistics"),
    ):
        setattr(round_mod, name, clock.wrap(part, getattr(round_mod, name)))
    Combiner.screen = clock.wrap("screen", Combiner.screen)  # type: ignore[method-assign]
    Combiner.settle = clock.wrap("settle", Combiner.settle)  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    parser.add_argument(
        "--large-game",
        default=AggregatorSettings.large_game or "none",
        help="the aggregator's default (budget_shapley), linear_shapley, or 'none' (Monte-Carlo)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="rounds valued (same inputs)")
    parser.add_argument("--bar", type=float, default=VALUATION_BAR)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument(
        "--stale-rounds",
        type=int,
        default=HISTORY_COMBINER.stale_rounds,
        help="earlier rounds whose updates and global delta are free-rider references "
        "(default: the preset's stale_rounds, as a round past them has)",
    )
    parser.add_argument(
        "--first-round",
        action="store_true",
        help="value the warm-up round instead (an empty standing: no free-rider references, "
        "the warm-up harm check)",
    )
    parser.add_argument("--against", default="", help="another tree's free-rider screen (A/B)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    large_game = None if args.large_game == "none" else args.large_game
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()}"
    )
    splits = load_bundled()
    spec = ModelSpec()
    global_state = federated_state(initial_model(spec, seed=0))
    real = real_updates(splits, spec, global_state)
    n = args.sites
    sites = _synthetic_sites(real, n)
    cands = [Candidate(f"site{i:02d}", ns, d) for i, (ns, d) in enumerate(sites)]
    refs = earlier_references(sites, args.stale_rounds)
    history = History(accumulated={c.site: 0.0 for c in cands}, valued_rounds=1, references=refs)
    if args.first_round:
        refs, history = {}, History()

    clock = Clock()
    _instrument(clock)
    top = clock.wrap("other", value_round)
    walls, cpus = [], []
    report = None
    sides: dict[str, Callable[..., Any]] = {"this tree": round_mod.free_riders}
    if args.against:
        from scripts.bench.freeride_cost import _load

        sides[args.against] = clock.wrap("free_riders", _load(args.against).free_riders)
    side_cpu = dict.fromkeys(sides, 0.0)
    side_wall = dict.fromkeys(sides, 0.0)
    reports: dict[str, Any] = {}
    for r in range(args.repeats * len(sides)):
        side = list(sides)[r % len(sides)]
        round_mod.free_riders = sides[side]  # type: ignore[attr-defined]
        w, c = time.perf_counter(), time.process_time()
        report = reports[side] = top(
            global_state=global_state,
            spec=spec,
            candidates=cands,
            validation=splits.val,
            method="shapley",
            metric="balanced_loss",
            seed=0,
            combiner=HISTORY_COMBINER,
            history=history,
            large_game=large_game,
        )
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        side_wall[side] += walls[-1]
        side_cpu[side] += cpus[-1]
    assert report is not None
    if args.against:
        for side in sides:
            print(
                f"{side}: {side_cpu[side] / args.repeats:.2f} CPU-s, "
                f"{side_wall[side] / args.repeats:.2f} wall s per round ({args.repeats} rounds)"
            )
        same = reports["this tree"] == reports[args.against]
        print(f"the two sides' reports are {'the same' if same else 'DIFFERENT'}")
        if not same:
            return 1
    riders = sum(1 for v in report.sites if v.reason is Reason.FREE_RIDER)
    print(
        f"\n{n} sites, {len(refs)} free-rider references, game {report.method}, "
        f"{report.evaluations} evaluations, {riders} free-riders, {len(walls)} round(s)"
    )
    print("| part | calls | CPU s | wall s | share of CPU |")
    print("|---|---:|---:|---:|---:|")
    total_cpu = sum(cpus)
    for part in PARTS:
        share = clock.cpu[part] / total_cpu if total_cpu else 0.0
        print(
            f"| {part} | {clock.calls[part]} | {clock.cpu[part]:.2f} | {clock.wall[part]:.2f} "
            f"| {share:.0%} |"
        )
    print(f"| total | {len(walls)} | {total_cpu:.2f} | {sum(walls):.2f} | 100% |")
    mine = side_cpu["this tree"] if args.clock == "cpu" else side_wall["this tree"]
    per_round = mine / args.repeats  # this tree's rounds
    print(f"load average after: {os.getloadavg()}")
    ok = per_round <= args.bar
    print(
        f"bar: valuation of {n} sites <= {args.bar} s per round ({args.clock}): "
        f"{per_round:.2f} s, {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
