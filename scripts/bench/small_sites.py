"""How often the free-rider screen zeroes honest sites when every site of a federation is small.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/small_sites.py [--grid 5:20,10:23,...]
        [--seeds 0,1] [--rounds 4] [--threads 1] [--max-zeroed 0.10]

``scripts/bench/honest_screens.py`` puts one small site among 150-image ones; here every site
is small, so the free-rider floor's size allowance (``tiny_size_power``: the floor against the
global model's norm lowered only below the round's *median* claimed count) gives none. Each
``K:N`` of ``--grid`` is a federation of ``K`` honest sites of ``N`` training images each
(``N`` ``all``: each site's whole share of the bundled split, about ``2428 / K``), alpha 100,
one local epoch a round, valued by the benchmarks' simulation (``scripts/bench/_sim.py``,
method ``valuation``: :func:`fedtrail.valuation.value_round` with the aggregator's defaults,
:data:`~fedtrail.valuation.HISTORY_COMBINER`, a history carried across rounds). Round 1 is the
warm-up; its updates are screened too, so every round counts.

Per federation it prints the site-rounds valued, how many were zeroed and by which test: the
floor against the global model's norm (``model``: below ``MIN_UPDATE_TO_MODEL_NORM``, 0.1%),
1% of the round's lower median norm (``median``), 1% of the site's own previous update
(``own``), another FREE_RIDER test (``other``: stale, white or shaped noise) or another reason;
and the range of the model-floor victims' norms against the model's, read from their details.
``--rule before``: valued with ``tiny_size_reference`` 0 (the floor before it, scaled only
below the round's median claim); ``h234``: with ``tiny_size_own`` 0 (session 55's rule: a small
round's floor scaled by the median claim, not each site's own); ``now`` (default): the
product's defaults.
``--rider KIND:FACTOR`` (a :class:`~fedtrail.simulation.faults.SiteFault`, e.g. ``scale:0``, a
zero update, ``random:0.005``, uniform noise at 0.5% of its update's magnitude as scenario (e)
of ``scripts/bench/accuracy.py``, ``scale:0.05``): the last site sends that instead of its
update; its site-rounds are counted apart (``rider``: zeroed of valued, and why) and left out of
the honest share.
Bar (issue 12): at most ``--max-zeroed`` (10%) of honest site-rounds zeroed, per federation;
exit 1 when one misses it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

import torch

from fedtrail.ml.datasets import load_bundled
from fedtrail.simulation.faults import SiteFault
from fedtrail.valuation import HISTORY_COMBINER, Combiner
from scripts.bench import _sim

_MODEL = re.compile(r"is ([0-9.]+)% of the global model's")


def which_test(detail: str) -> str:
    """The free-rider test a FREE_RIDER detail names (the screen's own wording)."""
    if "of the global model's" in detail:
        return "model"
    if "of the median" in detail or detail == "the update is zero":
        return "median"
    if "of its own earlier update" in detail:
        return "own"
    return "other"


def parse_grid(text: str) -> list[tuple[int, int | None]]:
    out: list[tuple[int, int | None]] = []
    for item in text.split(","):
        k, _, n = item.partition(":")
        out.append((int(k), None if n == "all" else int(n)))
    return out


def run(
    sites: int,
    size: int | None,
    seeds: Sequence[int],
    rounds: int,
    splits: object,
    combiner: Combiner,
    rider: SiteFault | None = None,
) -> dict[str, object]:
    tests: Counter[str] = Counter()
    valued = 0
    ratios: list[float] = []
    samples: list[int] = []
    rider_valued, rider_why = 0, Counter[str]()
    for seed in seeds:
        config = _sim.SimConfig(
            sites=sites,
            rounds=rounds,
            alpha=100.0,
            min_size=min(size or 10, 10),
            seed=seed,
            site_size=size,
            combiner=combiner,
            faults=()
            if rider is None
            else (*(SiteFault() for _ in range(sites - 1)), replace(rider, seed=seed * 1000 + 3)),
        )
        res = _sim.run_method("valuation", config, splits)  # type: ignore[arg-type]
        samples += res.site_samples
        last = res.site_names[-1] if rider is not None else None
        for rec in res.rounds:
            for site, reason in zip(rec.submitted, rec.reasons, strict=True):
                detail = rec.why.get(site, "")
                if site == last:
                    rider_valued += 1
                    if reason != "OK":
                        rider_why[which_test(detail) if reason == "FREE_RIDER" else reason] += 1
                    continue
                valued += 1
                if reason == "OK":
                    continue
                if reason == "FREE_RIDER":
                    test = which_test(detail)
                    tests[test] += 1
                    m = _MODEL.search(detail)
                    if test == "model" and m:
                        ratios.append(float(m.group(1)) / 100)
                else:
                    tests[reason] += 1
    return {
        "valued": valued,
        "zeroed": sum(tests.values()),
        "tests": dict(tests),
        "ratios": ratios,
        "samples": (min(samples), max(samples)),
        "rider": f"{sum(rider_why.values())}/{rider_valued} {dict(rider_why)}" if rider else "",
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", default="5:20,5:40,5:60,10:23,10:40,10:60,100:all")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-zeroed", type=float, default=0.10)
    ap.add_argument("--rule", choices=("now", "h234", "before"), default="now")
    ap.add_argument("--rider", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    combiner = HISTORY_COMBINER
    if args.rule == "before":
        combiner = replace(combiner, tiny_size_reference=0.0)
    elif args.rule == "h234":
        combiner = replace(combiner, tiny_size_own=0)
    print(
        f"# rule {args.rule}: tiny_size_reference {combiner.tiny_size_reference:g}, "
        f"tiny_size_own {combiner.tiny_size_own}"
    )
    splits = load_bundled()
    seeds = _sim.parse_seeds(args.seeds)
    print(
        "sites images(min..max) site-rounds zeroed share model/median/own/other/else "
        "model-floor victims' norm/model"
    )
    missed = 0
    t0 = time.monotonic()
    for sites, size in parse_grid(args.grid):
        rider = None
        if args.rider:
            kind, _, factor = args.rider.partition(":")
            rider = SiteFault(kind=kind, factor=float(factor))
        r = run(sites, size, seeds, args.rounds, splits, combiner, rider)
        tests = dict(r["tests"])  # type: ignore[call-overload]
        share = r["zeroed"] / r["valued"] if r["valued"] else 0.0  # type: ignore[operator]
        missed += share > args.max_zeroed
        rest = {k: v for k, v in tests.items() if k not in ("model", "median", "own", "other")}
        ratios = r["ratios"]
        lo, hi = r["samples"]  # type: ignore[misc]
        print(
            f"{sites:4d} {lo:4d}..{hi:<4d} {r['valued']:5d} {r['zeroed']:5d} {share:6.1%} "
            f"{tests.get('model', 0)}/{tests.get('median', 0)}/{tests.get('own', 0)}/"
            f"{tests.get('other', 0)}/{rest or '-'} "
            + (f"{min(ratios):.4%}..{max(ratios):.4%}" if ratios else "-")
            + (f" rider {r['rider']}" if r["rider"] else ""),  # type: ignore[arg-type,type-var]
            flush=True,
        )
    print(f"# {time.monotonic() - t0:.0f} s; bar: at most {args.max_zeroed:.0%} zeroed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
