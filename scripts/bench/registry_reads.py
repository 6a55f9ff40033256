"""What a65's ``sites.registry`` and a66's rename window cost ``audit verify``: the chain reads
behind them and behind ``sites.names`` (:meth:`~fedtrail.ledger.Ledger.registry_history`: seven
event reads, and a block header per block holding a registry move) timed directly, for one
round (what ``verify_round`` alone reads) and for every round at once (what ``verify_all`` reads,
then shared by its rounds), and one round's ``verify_round`` with and without the a65/a66 part
of it (without: only the registrations, as ``sites.names`` needs), alternated in one process.

A two-round federation of three honest sites of 150 (the attack harness, on Anvil + IPFS):

    OMP_NUM_THREADS=1 scripts/attacks/real.sh scripts/bench/registry_reads.py [--target-ms 25]

Prints the figures; exits 1 when one round's direct reads take more than ``--target-ms``.
Whole-verify timings are noisy on a shared machine: the direct figure is the one judged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "attacks"))
from harness import Site, run

import fedtrail.auditor.verify as verify
from fedtrail.ledger import RegistryHistory


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target-ms", type=float, default=25.0)
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args()
    out = run(
        [Site("a", 150), Site("b", 150), Site("t", 150)], 2, real=True, verify=False, verbose=False
    )
    ledger, store = out["fed"].ledger, out["store"]
    real_history = ledger.registry_history
    times: dict[str, list[float]] = {"with": [], "without": []}

    def names_only(round_id: int | None = None) -> RegistryHistory:
        return RegistryHistory(ledger.registrations(round_id), (), {}, {}, {})

    def use(mode: str) -> None:
        ledger.registry_history = real_history if mode == "with" else names_only

    for i in range(args.repeats):
        for mode in ("with", "without") if i % 2 == 0 else ("without", "with"):
            use(mode)
            start = time.perf_counter()
            audit = verify.verify_round(ledger, store, 2)
            times[mode].append(time.perf_counter() - start)
            if not audit.passed:
                print("verify failed an honest round:", [c for c in audit.checks if c.failed])
                return 1
    use("with")

    def asked(history: RegistryHistory, r: int) -> None:
        history.names_at(r)
        history.names_while_finalizing(r)
        history.participants_at_open(r)
        history.registry_moves(r, ledger.get_round(r).reveal_deadline)

    n = 20
    start = time.perf_counter()
    for _ in range(n):
        asked(ledger.registry_history(2), 2)
    direct = (time.perf_counter() - start) / n * 1000
    rounds = range(1, ledger.current_round() + 1)
    start = time.perf_counter()
    for _ in range(n):
        history = ledger.registry_history()
        for r in rounds:
            asked(history, r)
    whole = (time.perf_counter() - start) / n * 1000
    w, wo = _median(times["with"]), _median(times["without"])
    print(
        f"verify_round(2) median {w:.3f} s with the a65/a66 reads, {wo:.3f} s without "
        f"({w / wo:.2f}x; runs {[round(x, 3) for x in times['with']]} / "
        f"{[round(x, 3) for x in times['without']]})"
    )
    print(f"one round's registry history directly: {direct:.1f} ms (target {args.target_ms:g} ms)")
    print(f"every round's at once ({len(rounds)} rounds, as verify_all): {whole:.1f} ms")
    return 0 if direct <= args.target_ms else 1


if __name__ == "__main__":
    sys.exit(main())
