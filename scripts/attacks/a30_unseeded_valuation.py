"""A30: **aggregator**: terms whose valuation names no seed re-choose the Monte-Carlo seed.

Since stop 40 every later round must keep round 1's valuation seed offset (``valuation.seed``
minus the round; ``terms.task_fixed``), so the aggregator cannot re-draw the Monte-Carlo
Shapley permutations per round. But terms whose ``valuation`` omits ``seed`` (valid: terms
written before it had one) are valued with the base ``seed`` plus the round
(``RoundLog.valuation_seed``), and the base seed was free per round. Here the production service
runs ``mc_shapley`` under terms without ``valuation.seed`` and a base seed of ``1000 * round``
from round 2 on (its own preflight skipped, as a dishonest aggregator would). The seed is
committed at open, before any update exists, so only an aggregator that can predict the
updates (colluding sites) could grind it; low severity, but it is the re-chosen seed the offset
rule was meant to stop. Four honest sites of 150 images.

usage: python attacks/a30_unseeded_valuation.py [rounds]
Prints each round's weights and ``audit verify``: before the fix it passed; now round 2 on
fails ``terms.task_fixed`` ("valuation seed minus round 0 -> 2000").
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorService, AggregatorSettings

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
real_terms = AggregatorService.round_terms
real_open = AggregatorService.open_next


def round_terms(self, round_id):
    terms = real_terms(self, round_id)
    valuation = {k: v for k, v in terms.valuation.items() if k != "seed"}
    return replace(terms, valuation=valuation)


def open_next(self, **kwargs):
    nxt = self.ledger.current_round() + 1
    if nxt > 1:  # round 1's seed also builds the initial model: keep it
        self.settings = replace(self.settings, seed=1000 * nxt)
    return real_open(self, **kwargs)


def setup(fed, acct):
    AggregatorService.round_terms = round_terms
    AggregatorService.open_next = open_next
    AggregatorService._payment_changes = lambda self, terms: []  # a dishonest aggregator's


res = run(
    [Site(f"h{i}", 150) for i in range(4)],
    rounds=rounds,
    setup=setup,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, valuation="mc_shapley"
    ),
)
for i, row in enumerate(res["results"], 1):
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
