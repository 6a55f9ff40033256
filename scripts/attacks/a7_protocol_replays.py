"""A7: commit/reveal replays a site might try (all expected to be refused by the contract).

1. copy the victim's commitment (visible on chain in the commit window) and reveal the victim's
   (cid, sha256, samples) after it is revealed;
2. reveal the victim's (cid, sha256, samples) against one's own commitment;
3. reveal in round 2 what was committed for round 1 (commitment of round 1 reused in round 2);
4. reveal with another sample count than committed;
5. reveal after the reveal deadline;
6. commit after the commit deadline;
7. commit twice;
8. claim more samples than the site's cap (committed that way).
"""

import hashlib
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import tempfile
from pathlib import Path

import torch
from harness import SPEC

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.chain import advance_time, connect, funded_accounts, next_block_timestamp
from fedtrail.ledger import commitment
from fedtrail.ml.datasets import load_bundled
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.simulation.federation import SiteSetup, build_federation
from fedtrail.storage.codec import encode_update, zero_state
from fedtrail.storage.store import LocalStore

w3 = connect("embedded")
acc = funded_accounts(w3)
tmp = Path(tempfile.mkdtemp())
store = LocalStore(tmp / "s")
fed = build_federation(
    w3=w3,
    coordinator=acc[0],
    aggregator=acc[1],
    sites=[SiteSetup(account=acc[2 + i], name=f"s{i}", max_samples=100) for i in range(4)],
    store=store,
    folder=tmp,
    validation=load_bundled().val,
    settings=AggregatorSettings(explain_method=None, round_seconds=60, reveal_seconds=30),
)
L = fed.ledger
victim, attacker, other = acc[2], acc[3], acc[4]
g = torch.Generator().manual_seed(0)


def blob(r, seed):
    z = zero_state(SPEC)
    return encode_update(
        {
            k: 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(seed))
            for k, v in z.items()
        },
        spec=SPEC,
        round=r,
    ).blob


def attempt(label, fn):
    try:
        fn()
        print(f"ACCEPTED  {label}")
    except Exception as exc:
        print(f"refused   {label}: {type(exc).__name__}: {str(exc)[:110]}")


def past(deadline):
    now = next_block_timestamp(w3)
    if now <= deadline:
        advance_time(w3, deadline - now + 1 + CLOCK_SLACK)


r = fed.service.open_next()
bv, ba = blob(r, 1), blob(r, 2)
sv, sa = hashlib.sha256(bv).hexdigest(), hashlib.sha256(ba).hexdigest()
cv = commitment(victim.address, r, sv, 50)
L.commit_update(victim, r, cv)
attempt("1. commit a copy of the victim's commitment", lambda: L.commit_update(other, r, cv))
L.commit_update(attacker, r, commitment(attacker.address, r, sa, 50))
attempt(
    "7. commit twice", lambda: L.commit_update(attacker, r, commitment(attacker.address, r, sv, 50))
)
past(L.get_round(r).commit_deadline)
attempt("6. commit after the commit deadline", lambda: L.commit_update(acc[5], r, cv))
cidv = store.put(bv)
L.reveal_update(victim, r, cidv, sv, 50)
attempt(
    "1b. reveal the victim's update against the copied commitment",
    lambda: L.reveal_update(other, r, cidv, sv, 50),
)
attempt(
    "2. reveal the victim's update against one's own commitment",
    lambda: L.reveal_update(attacker, r, cidv, sv, 50),
)
attempt(
    "4. reveal own update with another sample count",
    lambda: L.reveal_update(attacker, r, store.put(ba), sa, 60),
)
past(L.get_round(r).reveal_deadline)
attempt(
    "5. reveal own update after the reveal deadline",
    lambda: L.reveal_update(attacker, r, store.put(ba), sa, 50),
)
fed.service.step()
fed.service.step()
r2 = fed.service.open_next()
b1 = blob(r, 3)  # a round-1 blob
s1 = hashlib.sha256(b1).hexdigest()
L.commit_update(attacker, r2, commitment(attacker.address, r, s1, 50))  # round-1 commitment
b8 = blob(r2, 4)
s8 = hashlib.sha256(b8).hexdigest()
L.commit_update(other, r2, commitment(other.address, r2, s8, 500))
past(L.get_round(r2).commit_deadline)
attempt(
    "3. reveal in round 2 a commitment computed for round 1",
    lambda: L.reveal_update(attacker, r2, store.put(b1), s1, 50),
)
attempt(
    "8. reveal 500 samples with a cap of 100",
    lambda: L.reveal_update(other, r2, store.put(b8), s8, 500),
)
