"""A22: a dishonest aggregator zeroes an honest site as EXPLANATION_SHIFT, unseen by public verify.

``valuation.explanation_check`` is the aggregator's choice in each round's terms (no
``[accept]`` limit bounds it), and an ``EXPLANATION_SHIFT`` verdict comes from the validation
split's probe images: public ``audit verify`` checks only that the terms ran the check
(``reasons.screen``: no site is EXPLANATION_SHIFT without it), so the verdict itself is the
aggregator's claim, as the overflow ``OUTLIER_NORM`` is (README, *Still trusted*). Here the
aggregator runs the production service with ``explanation_check`` on, but its
:class:`~fedtrail.valuation.explanation.ExplanationScorer` flags the target h0 every round
whatever its heatmaps show. Four honest IID sites of 150 images.

usage: python attacks/a22_explanation_zero.py MODE [rounds]
  lie: the target flagged every round; honest: the check run honestly (control)
Prints each round's weights, then ``audit verify`` (no split given).
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.protocol.codes import Reason
from fedtrail.valuation import explanation

mode = sys.argv[1] if len(sys.argv) > 1 else "lie"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
target: list[str] = []


def setup(fed, acct):
    target.append(acct["h0"].address)
    if mode != "lie":
        return

    def flag(self, ctx):
        return [
            replace(c, status=Reason.EXPLANATION_SHIFT, detail="attribution moved to the corners")
            if c.site == target[0]
            else c
            for c in ctx.candidates
        ]

    explanation.ExplanationScorer.flag = flag


res = run(
    [Site(f"h{i}", 150) for i in range(4)],
    rounds=rounds,
    setup=setup,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, explanation_check=True
    ),
)
for i, row in enumerate(res["results"], 1):
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
