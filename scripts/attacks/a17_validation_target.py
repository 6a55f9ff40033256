"""A17: the aggregator picks each round's validation split to demote one honest site.

The terms commit the split's sha256 and size at open, before any update exists, and
``terms.validation`` checks only that the log repeats them: nothing binds the split of round
r to round 1's (``terms.task_fixed`` fixes the model spec and the class names, not the split),
no ``[accept]`` limit bounds its size or its class mix, and without the split nothing about it
can be audited. So before opening round r (r >= 2) the aggregator uses what is public, the
target's and the others' round r-1 updates, to choose the pool images where the target's
previous update, applied to the new start model, raises the loss most against the others'
mean update (PER_CLASS images of each class), and commits that subset as round r's split.
Honest sites train as usual (IID shards of 150 images); the target is h0.

Pool: the bundled validation and test splits (738 images, 367 of each class); round 1 uses
the bundled validation split (270 images) in every mode.

usage: python attacks/a17_validation_target.py MODE [rounds] [per_class] [target]
  target: the targeted subset from round 2 on (per_class default 40)
  random: a seeded random subset of the same size each round (control for the size)
  full: the bundled validation split every round (control)
  target (4th argument): the site to demote (default h0)
Prints each round's split (images, sha256 prefix) and h0's reason/score/weight and standing,
then ``audit verify`` (public: no split is given).
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import numpy as np
import torch
import torch.nn.functional as F
from harness import SPEC, Site, run

from fedtrail.ml.datasets import ImageDataset, load_bundled
from fedtrail.ml.models import load_federated
from fedtrail.protocol.roundlog import from_bytes
from fedtrail.storage.codec import decode_model, decode_update

mode = sys.argv[1] if len(sys.argv) > 1 else "target"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
per_class = int(sys.argv[3]) if len(sys.argv) > 3 else 40
TARGET = sys.argv[4] if len(sys.argv) > 4 else "h0"

data = load_bundled()
pool = ImageDataset(
    np.concatenate([data.val.images, data.test.images]),
    np.concatenate([data.val.labels, data.test.labels]),
)
X = torch.from_numpy(np.array(pool.images))
Y = torch.from_numpy(np.array(pool.labels))


def per_image_loss(state):
    model = SPEC.build()
    load_federated(model, state)
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(X), Y, reduction="none")


def choose(fed, store, r):
    if mode == "full" or r == 1:
        return data.val
    if mode == "random":
        rng = np.random.default_rng(r)
        idx = np.concatenate(
            [rng.choice(np.flatnonzero(pool.labels == c), per_class, replace=False) for c in (0, 1)]
        )
        return pool.subset(np.sort(idx))
    prev = fed.ledger.get_round(r - 1)
    start, _ = decode_model(store.get(prev.global_cid, prev.global_sha256), spec=SPEC)
    names = {s.account.address: s.name for s in fed.sites}
    ups = {
        names[s.site]: decode_update(store.get(s.cid, s.sha256), spec=SPEC)[0]
        for s in fed.ledger.get_submissions(r - 1)
    }
    others = [d for nm, d in ups.items() if nm != TARGET]
    mean = {k: sum(d[k] for d in others) / len(others) for k in start}
    lt = per_image_loss({k: start[k] + ups[TARGET][k] for k in start})
    lo = per_image_loss({k: start[k] + mean[k] for k in start})
    gap = (lt - lo).numpy()
    idx = []
    for c in (0, 1):
        cls = np.flatnonzero(pool.labels == c)
        idx.extend(cls[np.argsort(-gap[cls], kind="stable")[:per_class]])
    return pool.subset(np.sort(np.array(idx)))


def setup(fed, acct):
    svc = fed.service
    plain = svc.open_next
    # a dishonest aggregator skips the service's own pre-flight (PaymentSettingsChanged)
    svc._payment_changes = lambda terms: []

    def open_next():
        r = len(splits) + 1  # the harness opens rounds 1, 2, ... in turn
        val = choose(fed, fed.store, r)
        svc.validation = val
        svc._validation_sha256 = None
        splits.append(val)
        print(f"round {r}: validation split {len(val)} images, sha256 {val.content_sha256()[:12]}")
        return plain()

    svc.open_next = open_next


splits = []
res = run(
    [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("h3", 150)],
    rounds=rounds,
    setup=setup,
)
fed, store = res["fed"], res["store"]
target = next(s.account.address for s in fed.sites if s.name == TARGET)
for i, row in enumerate(res["results"], 1):
    info = fed.ledger.get_round(i)
    st = from_bytes(store.get(info.log_cid, info.log_sha256)).get("standing") or {}
    t = row[TARGET]
    print(
        f"round {i}: {TARGET} {t['reason']} score {t['score']:.3f} weight {t['weight']:.3f} "
        f"(FedAvg 0.250); standing {(st.get('after') or {}).get(target)}; weights "
        + ", ".join(f"{nm} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
