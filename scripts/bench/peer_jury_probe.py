"""Experiment (issue 14): one site's jury in a peer-mode run, juror by juror, beside the
aggregator's valuation of the same site.

Usage: .venv/bin/python scripts/bench/peer_jury_probe.py [--scenario a] [--seed 0] [--alpha 1]
       [--rounds 4] [--site 3] [--threads 1]

Runs the scenario's federation twice with ``scripts/bench/_sim.py`` (the product's
:func:`fedtrail.valuation.value_round` and :func:`fedtrail.valuation.peer_vector`, as
``accuracy.py`` runs them): in aggregator mode, printing per round the aggregator's game value
of ``--site``'s update and its score; in peer mode, printing per round and validator its val
shard's class counts, the value its game (the terms' validator game, ``linear_shapley`` by
default) gave the site, its accumulated value and its score, and beside them what exact
Shapley (``method="shapley"``, no validator game) would have given on the same shard with the
same history that round (computed for the print only: the run goes on with the default vote).
Then the peer scores (the high medians) and the test AUC. The figures of docs/results.md
*Peer scoring vs aggregator scoring* (session 63's per-juror table of (a) alpha 1 seed 0).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch

from fedtrail.ml.datasets import load_bundled
from fedtrail.valuation import PeerVector, RoundValuation, value_round
from scripts.bench import _sim, accuracy


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:+.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", default="a", choices=tuple(accuracy.SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--site", type=int, default=3, help="the site whose jury is printed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sc = accuracy.SCENARIOS[args.scenario]
    if not 0 <= args.site < sc.sites:
        parser.error(f"--site must be in 0..{sc.sites - 1}")
    splits = load_bundled()
    config = _sim.SimConfig(
        sites=sc.sites,
        rounds=args.rounds,
        alpha=args.alpha,
        seed=args.seed,
        faults=sc.faults(args.seed),
        stale=sc.stale,
        combiner=accuracy.COMBINERS["history"],
    )
    names = {_sim.peer_address(i): f"site-{i:02d}" for i in range(sc.sites)}
    target = _sim.peer_address(args.site)
    print(
        f"({args.scenario}) alpha {args.alpha:g} seed {args.seed}, {args.rounds} rounds: "
        f"site-{args.site:02d}'s valuation (values are the round's game values; acc: the "
        "accumulated value after the round; score: 0..1)"
    )

    def on_round(
        run: int, round_id: int, kwargs: Mapping[str, Any], report: RoundValuation
    ) -> None:
        del run, kwargs
        for s in report.sites:
            if s.site in (target, f"site-{args.site:02d}"):
                acc = (report.accumulated or {}).get(s.site)
                print(
                    f"  round {round_id} aggregator: value {_value(s.value)} "
                    f"acc {_value(acc)} score {s.score / 1e6:.3f} {s.reason.name}"
                )

    _sim.tap_value_round(on_round)
    agg = _sim.run_method("valuation", replace(config, valuation_mode="aggregator"), splits)
    print(f"  aggregator mode: test AUC {agg.test['auc']:.4f}")

    original = _sim.peer_vector

    def probed(**kwargs: Any) -> PeerVector:
        pv = original(**kwargs)
        own = kwargs["validator"]
        if own == target:
            return pv
        labels = np.asarray(kwargs["validation"].labels)
        counts = tuple(int(c) for c in np.bincount(labels, minlength=2))
        exact = value_round(
            global_state=kwargs["global_state"],
            spec=kwargs["spec"],
            candidates=[c for c in kwargs["candidates"] if c.site != own],
            validation=kwargs["validation"],
            method="shapley",
            metric=kwargs["metric"],
            seed=kwargs["seed"],
            combiner=kwargs["combiner"],
            history=kwargs["history"],
            warm_up_game=False,
            public_screen=kwargs["public_screen"],
        )
        mine = {s.site: s for s in pv.report.sites}.get(target)
        theirs = {s.site: s for s in exact.sites}.get(target)
        if mine is not None and theirs is not None:
            print(
                f"  round {kwargs['round_id']} juror {names[own]} {counts}: {pv.report.method} "
                f"value {_value(mine.value)} acc "
                f"{_value((pv.report.accumulated or {}).get(target))} score "
                f"{mine.score / 1e6:.3f} | exact Shapley value {_value(theirs.value)} acc "
                f"{_value((exact.accumulated or {}).get(target))} score {theirs.score / 1e6:.3f}"
            )
        return pv

    _sim.peer_vector = probed
    peers = _sim.run_method("valuation", replace(config, valuation_mode="peers"), splits)
    for r in peers.rounds:
        abstained = ", ".join(r.abstained) or "none"
        print(
            f"  round {r.round} peer scores {[round(s / 1e6, 3) for s in r.scores]} "
            f"(abstained: {abstained})"
        )
    print(f"  peer mode: test AUC {peers.test['auc']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
