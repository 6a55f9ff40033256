"""An experiment (issue 12 (j)): what a leave-one-out harm rule would read in the warm-up round.

The warm-up pays every update that passes the screens its sample share, so its aggregate is the
grand coalition's model of the passers, ``global + FedAvg(P)``. For each warm-up round this
records, on the game's own utility (:class:`~fedtrail.valuation.utility.CoalitionUtility`, the
same validation split, metric and global model as :func:`fedtrail.valuation.value_round`):

* ``u0``: the global model's utility, ``u_all``: ``v(P)``;
* per passer, ``harm``: ``(v(P minus it) - v(P)) / |u0|``, how much better the round's model
  would be without it, as a fraction of the global model's utility (the unit of
  ``WARM_UP_MAX_HARM``); ``alone``: ``(u0 - v({it})) / |u0|``, what the harm check reads;
* ``greedy``: the passers removed one at a time, each time the one whose removal helps the
  rest most, with that ``harm`` in the set left, until none helps (``harm <= 0``) or one is left:
  a rule "remove the most harmful while its harm is above T" removes the longest prefix of
  this sequence whose harms are all above T (the sequence does not depend on T).

Without ``--rule`` nothing it computes reaches a score. ``--rule worse:M`` or ``--rule loo:T``
(an experiment, README's *A leave-one-out harm rule for the warm-up*) scores 0 the prefix of the
greedy sequence the rule removes (see ``_rule``); ``--carry S`` also starts their records at -S
in round 2. Usage (accuracy.py's arguments after ``--``)::

    python scripts/bench/warmup_loo.py --out loo.json -- --scenarios j,a,b --alpha 3 \\
        --seeds 0,1 --rounds 1 --threads 1 --methods valuation --out acc.json
    python scripts/bench/warmup_loo.py --report loo-a1.json loo-a3.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

from fedtrail.protocol.codes import Reason
from fedtrail.valuation.base import ValuationContext
from fedtrail.valuation.combine import RoundValuation
from fedtrail.valuation.utility import CoalitionUtility
from scripts.bench import _sim, accuracy

_records: list[dict[str, Any]] = []
_rule: tuple[str, float] | None = None
"""An experiment's rule, when set: ("worse", M) removes the greedy sequence's passers while the
set left's model is below the global model's utility by more than M of |u0| (M 0: any worse);
("loo", T) removes them while the harm is above T (fractions of |u0|). The removed score 0."""
_carry: float = 0.0
"""With a rule: the removed sites' records start the next round at ``-carry`` (0: the warm-up's
verdict is not carried; their records stay as the warm-up leaves them)."""


def _removed(rec: dict[str, Any]) -> list[str]:
    if _rule is None:
        return []
    kind, t = _rule
    out = []
    cur = rec["u_all"]
    for g in rec["greedy"]:
        if kind == "worse" and cur >= rec["u0"] - t * abs(rec["u0"]):
            break
        if kind == "loo" and g["harm"] <= t:
            break
        out.append(g["site"])
        cur += g["harm"] * abs(rec["u0"])
    return out


def probe(
    run: int, round_id: int, kwargs: Mapping[str, Any], report: RoundValuation
) -> RoundValuation | None:
    if round_id != 1 or kwargs.get("validation") is None:
        return None
    valued = {v.site: v for v in report.sites if v.value is not None}
    players = [c for c in kwargs["candidates"] if c.site in valued and c.delta is not None]
    if len(players) < 2:
        return None
    ctx = ValuationContext(
        global_state=kwargs["global_state"],
        spec=kwargs["spec"],
        candidates=list(players),
        validation=kwargs["validation"],
        metric=kwargs["metric"],
        seed=kwargs["seed"],
    )
    utility = CoalitionUtility(ctx, players)
    cache: dict[frozenset[str], float] = {}

    def u(s: frozenset[str]) -> float:
        if s not in cache:
            cache[s] = utility(s)
        return cache[s]

    u0 = u(frozenset())
    scale = abs(u0)
    everyone = frozenset(c.site for c in players)
    u_all = u(everyone)
    sites = []
    for c in players:
        v = valued[c.site]
        sites.append(
            {
                "site": c.site,
                "samples": c.num_samples,
                "norm_ratio": (v.norm / v.median_norm) if v.norm and v.median_norm else None,
                "cosine": v.cosine,
                "value": v.value,
                "harm": (u(everyone - {c.site}) - u_all) / scale,
                "alone": (u0 - u(frozenset({c.site}))) / scale,
            }
        )
    greedy = []
    left = set(everyone)
    while len(left) > 1:
        cur = u(frozenset(left))
        harms = {s: (u(frozenset(left - {s})) - cur) / scale for s in sorted(left)}
        worst = max(harms, key=lambda s: harms[s])
        if harms[worst] <= 0:
            break
        greedy.append({"site": worst, "harm": harms[worst]})
        left.discard(worst)
    rec: dict[str, Any] = {
        "run": run,
        "u0": u0,
        "u_all": u_all,
        "sites": sites,
        "greedy": greedy,
        "evaluations": len(cache),
    }
    removed = _removed(rec)
    rec["removed"] = removed
    _records.append(rec)
    if not removed:
        return None
    accumulated = report.accumulated
    if _carry > 0 and accumulated is not None:
        accumulated = {
            **accumulated,
            **{site: min(accumulated.get(site, 0.0), -_carry) for site in removed},
        }
    return replace(
        report,
        accumulated=accumulated,
        sites=[
            replace(v, score=0, reason=Reason.LOW_GAIN, detail="warm-up LOO experiment")
            if v.site in removed
            else v
            for v in report.sites
        ],
    )


def _faulty(scenario: str, seed: int) -> set[str]:
    faults = accuracy.SCENARIOS[scenario].faults(seed)
    return {f"site-{i:02d}" for i, f in enumerate(faults) if f.kind != "none"}


def _labelled(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each record with its scenario, seed, alpha and faulty sites (runs in the bench's order:
    scenario, then seed; one valuation method)."""
    out = []
    keys = list(doc["scenarios"])
    seeds = doc["seeds"]
    for rec in doc["records"]:
        scenario = keys[rec["run"] // len(seeds)]
        seed = seeds[rec["run"] % len(seeds)]
        out.append({**rec, "scenario": scenario, "seed": seed, "alpha": doc["alpha"]})
    return out


def report(paths: Sequence[Path]) -> int:
    rows = []
    for p in paths:
        rows.extend(_labelled(json.loads(p.read_text(encoding="utf-8"))))
    print("per run: scenario alpha seed | harm (LOO, % of |u0|) per passer; * faulty | greedy")
    honest_loo: list[float] = []
    bad_loo: dict[str, list[float]] = {}
    honest_crit: list[float] = []  # the T below which greedy removes an honest site
    bad_crit: dict[str, list[float]] = {}  # the T below which greedy removes every faulty site
    for r in rows:
        faulty = _faulty(r["scenario"], r["seed"])
        kind = {"j": "x-10", "c": "c-faulty", "b": "noisy"}.get(r["scenario"], "faulty")
        cells = []
        for s in r["sites"]:
            mark = "*" if s["site"] in faulty else ""
            cells.append(f"{s['site'][-2:]}{mark} {100 * s['harm']:+.2f}")
            if s["site"] in faulty:
                bad_loo.setdefault(kind, []).append(s["harm"])
            else:
                honest_loo.append(s["harm"])
        prefix_min = float("inf")
        seq = []
        found_faulty = 0
        honest_at = None
        faulty_at = None
        passers_faulty = faulty & {s["site"] for s in r["sites"]}
        for g in r["greedy"]:
            prefix_min = min(prefix_min, g["harm"])
            mark = "*" if g["site"] in faulty else ""
            seq.append(f"{g['site'][-2:]}{mark} {100 * g['harm']:+.2f}")
            if g["site"] in faulty:
                found_faulty += 1
                if found_faulty == len(passers_faulty):
                    faulty_at = prefix_min
            elif honest_at is None:
                honest_at = prefix_min
        honest_crit.append(0.0 if honest_at is None else honest_at)
        if passers_faulty:
            bad_crit.setdefault(kind, []).append(0.0 if faulty_at is None else faulty_at)
        print(
            f"({r['scenario']}) a{r['alpha']:g} s{r['seed']} u0 {r['u0']:.4f} "
            f"v(P) {r['u_all']:.4f} | {', '.join(cells)} | greedy: {', '.join(seq) or '-'}"
        )

    def rng(v: list[float]) -> str:
        return f"{100 * min(v):+.2f} .. {100 * max(v):+.2f} (n {len(v)})" if v else "-"

    print()
    print(f"LOO harm at the full passer set, % of |u0|: honest {rng(honest_loo)}")
    for k, v in bad_loo.items():
        print(f"  {k}: {rng(v)}")
    print(
        "greedy rule: honest sites removed for T below (per run, 0 = none): max "
        f"{100 * max(honest_crit):.2f}%"
    )
    for k, v in bad_crit.items():
        print(f"  every {k} passer removed for T below (per run, 0 = not all): {rng(v)}")
    return 0


def main(argv: Sequence[str]) -> int:
    if "--report" in argv[:1]:
        return report([Path(a) for a in argv[1:]])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--rule",
        help="an experiment: worse:M or loo:T (see _rule); the removed passers score 0 in round 1",
    )
    parser.add_argument(
        "--carry",
        type=float,
        default=0.0,
        help="with --rule: the removed sites' records start round 2 at -CARRY (default 0: off)",
    )
    parser.add_argument("bench", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    global _rule, _carry
    _carry = args.carry
    if args.rule:
        kind, t = args.rule.split(":")
        if kind not in ("worse", "loo"):
            parser.error(f"--rule: worse:M or loo:T, got {args.rule}")
        _rule = (kind, float(t))
    bench = [a for a in args.bench if a != "--"]
    if "--out" not in bench:
        parser.error("accuracy.py needs its own --out (its JSON names the runs' order)")
    _sim.tap_value_round(probe)
    rc = accuracy.main(bench)
    acc = json.loads(Path(bench[bench.index("--out") + 1]).read_text(encoding="utf-8"))
    doc = {
        "argv": bench,
        "scenarios": list(acc["scenarios"]),
        "seeds": acc["settings"]["seeds"],
        "alpha": acc["settings"]["alpha"],
        "rule": args.rule,
        "carry": args.carry,
        "records": _records,
    }
    args.out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(f"warm-up LOO records: {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
