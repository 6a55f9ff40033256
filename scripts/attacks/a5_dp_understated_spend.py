"""A5: a DP site under a privacy budget of 1 epsilon declares 1 micro-epsilon at reveal
(revealPrivateUpdate) while the DP parameters in its own hash-pinned blob give 4.74 epsilon a
round. The declared spend is not part of the commitment, and the contract charges only what is
declared, so its budget never binds.

Defended (terms with dp_spend_check 1, the default): the aggregator recomputes the spend from
the blob before valuation (fedtrail.storage.privacy_spend.check_spend) and scores the update 0 as
MALFORMED, the log naming the check (privacy spend DIFFERS); `audit verify` replays it and still
fails privacy.spend for the site's own declaration. `unbound` runs the same attack under terms
without the check (dp_spend_check 0, as every round before it, and dp_noise_check 0, since the
site's DP blobs carry plain updates): the update is valued and paid
like any other, and only privacy.spend (and terms.limits, since sites refuse such terms unless
they widen [accept.loosest]) flags it afterwards. `honest` declares the true spend:
the contract refuses the reveal over the budget.

usage: python attacks/a5_dp_understated_spend.py [understate|unbound|honest] [rounds]
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.privacy import declared_micro
from fedtrail.protocol.privacy import DpParams
from fedtrail.storage.codec import encode_update
from fedtrail.valuation import default_combiner

mode = sys.argv[1] if len(sys.argv) > 1 else "understate"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
PARAMS = DpParams(
    noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=32 / 150, steps=5, delta=1e-5
)
history = []


def dp_site(ctx):
    blob = encode_update(ctx.now["dp"], spec=SPEC, round=ctx.round, dp=PARAMS).blob
    true = declared_micro(PARAMS, [], 0)  # summed rule: this update's own epsilon
    history.append(true)
    return blob, 150, (true if mode == "honest" else 1)


def budget(fed, acct):
    fed.ledger.set_privacy_budget(fed.coordinator, acct["dp"].address, 1_000_000)  # 1 epsilon
    print(
        "true epsilon per round from the blob's DP parameters:",
        declared_micro(PARAMS, [], 0) / 1e6,
        "; budget 1.0",
    )


res = run(
    [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("dp", 150, strategy=dp_site)],
    rounds=rounds,
    setup=budget,
    settings=AggregatorSettings(
        explain_method=None,
        round_seconds=60,
        reveal_seconds=30,
        dp_delta=1e-5,
        # unbound: terms as before the rule (the aggregator does not check declared spends, nor
        # the noise: this site's DP blobs carry a plain update, which dp_noise_check zeroes too)
        combiner=replace(default_combiner(True), dp_spend_check=0, dp_noise_check=0)
        if mode == "unbound"
        else None,
    ),
)
print(
    "on-chain spend of dp:",
    res["fed"].ledger.privacy(next(s.account.address for s in res["fed"].sites if s.name == "dp")),
)
