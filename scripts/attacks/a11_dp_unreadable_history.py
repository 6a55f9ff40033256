"""A11: escape ``dp_spend_check`` for good by poisoning one's own composed-accounting history.

The check (``fedtrail.storage.privacy_spend.check_spend``) recomputes a ``"composed"`` update's
spend over every earlier ``PrivacySpent`` event of the site, reading each one's DP parameters
from its blob; when an earlier blob carries none it raises, the verdict is UNREADABLE, and
UNREADABLE is not binding (the update is valued and paid like a correct one). So a DP site under
a budget of 1 epsilon sacrifices round 1: it reveals a plain update declaring 1 micro-epsilon
(scored 0 as ``NO DP PARAMETERS``, but the contract records the spend). From round 2 on, every
update it sends names the composed rule and declares 1 micro-epsilon for 4.7 epsilon of DP
training, and was paid a full share (0.250 in rounds 2 and 3, 3 micro-epsilon on chain against
a budget of 1 epsilon); its budget never bound. ``garbage`` does the same with an undecodable
blob in round 1. Fixed: such a history is ``EARLIER SPEND UNBACKED``, which binds (the blob was
read and hash-checked, so every holder finds the same): dp is MALFORMED every round, and
``audit verify`` fails only ``privacy.spend`` (the site's own declarations). ``withhold``: a
round-1 DP blob declaring 1 that the site never publishes (round 1 MALFORMED, not retrievable)
was UNREADABLE in rounds 2 and 3 (a store's state, not binding) and paid 0.250 in each. Fixed:
a missing earlier blob whose round scored it 0 on chain as unusable is ``EARLIER SPEND
UNAVAILABLE``, which binds (the verdict is the chain's, the same for every reader): MALFORMED
every round, ``audit verify`` fails only ``privacy.spend``. Still open: the same blob withheld
in a round that is cancelled unvalued (no verdict on chain; see README, *Differential privacy*).

usage: python attacks/a11_dp_unreadable_history.py [poison|garbage|withhold|control] [rounds]
  poison: round 1 a plain reveal with a declared spend, then composed updates declaring 1
  garbage: round 1 an undecodable blob with a declared spend, then the same composed updates
  withhold: round 1 a DP blob declaring 1 that the site never publishes, then the same
  control: composed updates declaring 1 from round 1 (no poisoned history: DIFFERS, zeroed)
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.privacy import declared_micro
from fedtrail.protocol.privacy import COMPOSED, DpParams
from fedtrail.storage.codec import encode_update

mode = sys.argv[1] if len(sys.argv) > 1 else "poison"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
PARAMS = DpParams(
    noise_multiplier=1.0,
    max_grad_norm=1.0,
    sample_rate=32 / 150,
    steps=5,
    delta=1e-5,
    accounting=COMPOSED,
)


def dp_site(ctx):
    if mode == "poison" and ctx.round == 1:
        return ctx.now["dp"], 150, 1  # plain update, declared spend: NO DP PARAMETERS
    if mode == "withhold" and ctx.round == 1:  # a DP blob, declared 1, never published
        return encode_update(ctx.now["dp"], spec=SPEC, round=1, dp=PARAMS).blob, 150, 1
    if mode == "garbage" and ctx.round == 1:
        return b"not an update", 150, 1  # undecodable blob, declared spend
    blob = encode_update(ctx.now["dp"], spec=SPEC, round=ctx.round, dp=PARAMS).blob
    return blob, 150, 1


def budget(fed, acct):
    fed.ledger.set_privacy_budget(fed.coordinator, acct["dp"].address, 1_000_000)  # 1 epsilon
    print("one round's epsilon from the blob's DP parameters:", declared_micro(PARAMS, [], 0) / 1e6)


res = run(
    [
        Site("h0", 150),
        Site("h1", 150),
        Site("h2", 150),
        Site("dp", 150, strategy=dp_site, withhold=(1,) if mode == "withhold" else ()),
    ],
    rounds=rounds,
    setup=budget,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, dp_delta=1e-5
    ),
)
for i, row in enumerate(res["results"], 1):
    print(f"round {i}: dp {row['dp']['reason']} weight {row['dp']['weight']:.3f} (FedAvg 0.250)")
print(
    "on-chain spend of dp:",
    res["fed"].ledger.privacy(next(s.account.address for s in res["fed"].sites if s.name == "dp")),
)
