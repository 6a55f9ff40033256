"""A38: **aggregator**: each round's explanation heatmaps shown only on images the new global
model classifies correctly.

The round log's ``explanations`` block (the heatmaps of the new global model, for clinicians
and auditors) names its probe set by hash and size only: the images are the aggregator's private
validation split, and ``audit verify`` checked that every heatmap is fetchable and a PNG
(``log.heatmaps``), not which images they show. So the aggregator could pick, round by round,
the images the new model gets right, and every round's document said "8 of 8 probe images
classified correctly" whatever the model did on the fixed probe set. Now ``log.heatmaps``
binds the probe set and the method: a later round's must be the earlier rounds' (public), and
with the split (``--validation``) it must be ``probe_set`` of it (its first images of each
class), fixed by round 1's terms before any global model exists.

Three honest sites, 150 images each, ``integrated_gradients`` heatmaps on 4 images per class.
``pick``: the aggregator's probe each round is the first 4 images per class that the new
model classifies correctly (at the log's calibrated decision); ``honest``: the service as it is.

``caption``: the fixed probe set, but every round's summary says all of it is classified
correctly: without the split that is the aggregator's claim; with it, ``log.heatmaps`` recounts
the global model's calibrated decisions on the probe set and fails the summary.
``drop`` (attack a41): round 2's log carries no explanations block at all (the aggregator
withholds the heatmaps of the round it chooses); a log without the block claimed none and got
no check, now ``log.heatmaps`` fails it when the latest earlier finalized round had heatmaps.

usage: python attacks/a38_probe_cherry_pick.py MODE [rounds] [images]
(MODE pick|caption|honest|drop; default 3 rounds, 30 images a site)
Prints each round's heatmap summary next to the fixed probe's, then ``audit verify`` (public)
and each round's ``log.heatmaps`` with the validation split.
"""

import dataclasses
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, run

import fedtrail.aggregator.service as service_mod
from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.auditor.verify import verify_round
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.explain import probe_set
from fedtrail.ml.metrics import decide, predict_logits
from fedtrail.ml.models import load_federated

mode = sys.argv[1] if len(sys.argv) > 1 else "pick"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
N = int(sys.argv[3]) if len(sys.argv) > 3 else 30
PER_CLASS = 8
SUMMARY = "probe images classified correctly"
fixed_correct: list[str] = []


def _predictions(state, images, bias):
    model = SPEC.build()
    load_federated(model, state)
    z = predict_logits(model, images)
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    return decide(z)


real_explanations = AggregatorService._explanations


def explanations(self, round_id, state, bias=None):
    fixed = probe_set(self.validation, PER_CLASS)
    right = _predictions(state, fixed, bias) == fixed.labels
    fixed_correct.append(f"{int(right.sum())} of {len(fixed)}")
    if mode == "drop" and round_id == 2:
        return None, []  # a41: no explanations block for the chosen round
    if mode == "caption":  # the fixed probe set, and a summary of the aggregator's choosing
        made, pngs = real_explanations(self, round_id, state, bias)
        n = made.probe_images
        return dataclasses.replace(made, summary=f"{n} of {n} {SUMMARY}"), pngs
    if mode != "pick":
        return real_explanations(self, round_id, state, bias)
    val = self.validation
    ok = _predictions(state, val, bias) == val.labels
    picks = []
    for label in sorted(set(int(x) for x in val.labels)):
        picks += [int(i) for i in np.flatnonzero(ok & (val.labels == label))[:PER_CLASS]]
    chosen = val.subset(np.asarray(sorted(picks), dtype=np.int64))
    service_mod.probe_set = lambda _validation, _per_class: chosen
    try:
        return real_explanations(self, round_id, state, bias)
    finally:
        service_mod.probe_set = probe_set


AggregatorService._explanations = explanations

res = run(
    [Site(f"h{i}", N) for i in range(3)],
    rounds=rounds,
    settings=AggregatorSettings(
        explain_method="integrated_gradients",
        probe_per_class=PER_CLASS,
        round_seconds=60,
        reveal_seconds=30,
    ),
)
fed, store = res["fed"], res["store"]
for r in range(1, rounds + 1):
    info = fed.ledger.get_round(r)
    from fedtrail.protocol.roundlog import from_bytes

    block = from_bytes(store.get(info.log_cid, info.log_sha256)).get("explanations")
    if block is None:
        print(f"round {r} ({mode}): no heatmaps; the fixed probe set: {fixed_correct[r - 1]}")
        continue
    print(
        f"round {r} ({mode}): heatmaps say '{block['summary']}' (probe "
        f"{block['probe_sha256'][:12]}); the fixed probe set: {fixed_correct[r - 1]} correct"
    )
for r in range(1, rounds + 1):
    audit = verify_round(fed.ledger, store, r, validation=load_bundled().val)
    heat = next((c for c in audit.checks if c.name == "log.heatmaps"), None)
    if heat is not None:
        print(f"round {r} with --validation: log.heatmaps {heat.status}: {heat.detail[:200]}")
