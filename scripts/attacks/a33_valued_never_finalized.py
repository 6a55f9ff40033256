"""A33: **aggregator**: the last round valued with a lie and never finalized.

The contract lets a round stay ``Valued`` for good: only the next ``openRound`` needs it closed,
and an aggregator round cannot be cancelled once valued. Its weights are on chain (what the
federation pays), but ``audit verify`` replays only finalized rounds: a valued one got one
check, ``phase``, which passed ("nothing to replay"). Now ``phase`` fails for a valued
aggregator round ("valued but not finalized ... not verified"). Here the
production service runs ROUNDS - 1 honest rounds; in the last one it records a valuation that
scores honest h0 0 as ``LOW_QUALITY`` (the others full) and never publishes a log or global model.
Four honest IID sites of 150 images.

usage: python attacks/a33_valued_never_finalized.py [rounds]   (default 2)
Prints the weights of every round (the last one VALUED) and ``audit verify``.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorService
from fedtrail.ledger import Valuation
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import SCORE_SCALE

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
target: list[str] = []
real_value, real_finalize = AggregatorService.value, AggregatorService.finalize


def value(self, round_id, *, info=None, now=None):
    if round_id < rounds:
        return real_value(self, round_id, info=info, now=now)
    subs = self.ledger.get_submissions(round_id)
    self.ledger.record_valuation(
        self.account,
        round_id,
        [
            Valuation(site=s.site, score=0, reason=int(Reason.LOW_QUALITY))
            if s.site == target[0]
            else Valuation(site=s.site, score=SCORE_SCALE, reason=int(Reason.OK))
            for s in subs
        ],
    )
    return []


def finalize(self, round_id, **kwargs):
    return None if round_id == rounds else real_finalize(self, round_id, **kwargs)


def setup(fed, acct):
    target.append(acct["h0"].address)
    AggregatorService.value = value
    AggregatorService.finalize = finalize


res = run([Site(f"h{i}", 150) for i in range(4)], rounds=rounds, setup=setup)
for i, row in enumerate(res["results"], 1):
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
