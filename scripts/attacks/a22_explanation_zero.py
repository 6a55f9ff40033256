"""A22: a dishonest aggregator zeroes an honest site as EXPLANATION_SHIFT.

``valuation.explanation_check`` is the aggregator's choice in each round's terms (no
``[accept]`` limit bounds it). Here the aggregator runs the production service with
``explanation_check`` on, but its :class:`~fedtrail.valuation.explanation.ExplanationScorer`
flags the target h0 every round whatever its heatmaps show. Four honest IID sites of 150 images.

Before the probe set was public the verdict came from the private split's probes and public
``audit verify`` passed the lie. Now the terms commit the probe blob
(``valuation.explanation_probe``) and verify recomputes every verdict on it
(``reasons.explanation_shift``).

usage: python attacks/a22_explanation_zero.py MODE [rounds]
  lie: the target flagged every round; honest: the check run honestly (control);
  private: the lie under terms that commit no probe set (as terms written before it), which
  verify fails as not checked
Prints each round's weights, then ``audit verify`` (no split given).
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.protocol.codes import Reason
from fedtrail.valuation import explanation

mode = sys.argv[1] if len(sys.argv) > 1 else "lie"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
target: list[str] = []


def _without_probe(real):
    def round_terms(self, round_id):
        terms = real(self, round_id)
        valuation = {k: v for k, v in terms.valuation.items() if k != "explanation_probe"}
        return replace(terms, valuation=valuation)

    return round_terms


def setup(fed, acct):
    target.append(acct["h0"].address)
    if mode == "private":
        # the terms keep the check but not the probe: the service runs it on the split's
        AggregatorService.round_terms = _without_probe(AggregatorService.round_terms)
    if mode not in ("lie", "private"):
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
