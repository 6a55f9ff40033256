"""First-order replay of a ``--warm-up-floor`` run with the floor off (issue 12, h-270).

Usage: .venv/bin/python scripts/bench/warm_up_floor_replay.py RUN.json [RUN.json ...]

Reads the JSON that ``scripts/bench/accuracy.py --warm-up-floor F --out RUN.json`` writes and,
for each valuation run, replays its recorded game values with the first closed round as the
default warm-up (its shares not accumulated, every update that passed the screens scored in
full) under the bench's default ``record_floor`` 0.5, through
``valuation_trace.replay``; it prints the faulty sites' mean weight share and
the honest site-rounds scored 0, recorded against replayed. First order: the trajectory (the
updates, the screens' verdicts, the values) is the recorded one, so what the floor changed in
later models is not in it; it separates what the floor's scoring did from what a different
trajectory did.

No bar: a diagnostic.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.bench.valuation_trace import Rule, recorded_share, replay

RECORD_FLOOR = 0.5
"""The bench's default ``record_floor`` (the combiner's)."""
CREDIT_COSINE = -0.7
"""The combiner's ``credit_cosine`` (HISTORY_COMBINER's)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.runs:
        data = json.loads(path.read_text())
        for key, scenario in data["scenarios"].items():
            recorded: list[float] = []
            replayed: list[float] = []
            rec_zeroed = off_zeroed = honest = 0
            for run in scenario["runs"]:
                if run["method"] != "valuation":
                    continue
                off = copy.deepcopy(run)
                closed = [r["round"] for r in off["rounds"] if not r["skipped"]]
                for r in off["rounds"]:
                    if closed and r["round"] == closed[0]:
                        r["shares"] = None
                result = replay(
                    off, Rule("floor off", record_floor=RECORD_FLOOR), credit_cosine=CREDIT_COSINE
                )
                if result is None:
                    continue
                faults = dict(zip(run["site_names"], run["site_faults"], strict=True))
                zeroed = sum(
                    1
                    for r in run["rounds"]
                    for s, score in zip(r["submitted"], r["scores"], strict=True)
                    if faults[s] == "none" and score == 0
                )
                share = recorded_share(run)
                print(
                    f"{path.name} ({key}) seed {run['seed']}: recorded share {share:.4f}, "
                    f"honest zeroed {zeroed}; floor off (replay) share {result.faulty_share:.4f}, "
                    f"honest zeroed {result.honest_zeroed}/{result.honest_total}"
                )
                recorded.append(share)
                replayed.append(result.faulty_share)
                rec_zeroed += zeroed
                off_zeroed += result.honest_zeroed
                honest += result.honest_total
            if recorded:
                print(
                    f"  {path.name} ({key}) mean: recorded {statistics.fmean(recorded):.4f}, "
                    f"honest zeroed {rec_zeroed}/{honest}; floor off (replay) "
                    f"{statistics.fmean(replayed):.4f}, {off_zeroed}/{honest}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
