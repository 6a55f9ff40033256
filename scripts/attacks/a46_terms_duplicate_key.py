"""a46 (**aggregator**): round terms whose JSON repeats a key, so that two readers of the same
on-chain terms hash would read two different rounds.

JSON parsers disagree on a repeated key (Python's and most keep the last value, others the
first or refuse). The round log refuses one (``roundlog._unique_keys``); the terms parser
takes ``safejson.loads`` without that hook, so the question is whether anything else stops
terms whose ``valuation`` object says ``"boost_clip": 0.9`` first and ``0.0`` last (a fedtrail
node and ``audit verify`` would read 0.0, off, within the default ``[accept]``; an auditor whose
parser keeps the first value, 0.9, outside it). The aggregator here bypasses its own service
and opens round 1 on chain with such a blob. Exit 1 when the terms parser (the node's and
``audit verify``'s) reads it or a production SiteNode commits an update under it; exit 0 when
both refuse it (``control``: the canonical blob, exit 0 when it is read and taken).

Two sites through production SiteNodes, 150 images each, the embedded chain, a LocalStore.
Run: .venv/bin/python scripts/attacks/a46_terms_duplicate_key.py [dup|control]
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.auditor.verify import verify_all  # noqa: E402
from fedtrail.chain import connect, funded_accounts  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.models import initial_model  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.node.config import NodeConfig  # noqa: E402
from fedtrail.protocol.terms import InvalidTerms, RoundTerms  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.codec import encode_model  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "dup"
    data = load_bundled()
    perm = np.random.default_rng(0).permutation(len(data.train.labels))
    w3 = connect("embedded")
    acc = funded_accounts(w3)
    setups = [
        SiteSetup(
            account=acc[2 + i],
            name=nm,
            train=data.train.subset(perm[150 * i : 150 * (i + 1)]),
            val=data.val,
            config=NodeConfig(training=TrainConfig(epochs=1, seed=i), poll_interval=0.01),
        )
        for i, nm in enumerate(["a", "b"])
    ]
    tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a46-"))
    store = LocalStore(tmp / "store")
    fed = build_federation(
        sites=setups,
        store=store,
        folder=tmp,
        validation=data.val,
        w3=w3,
        coordinator=acc[0],
        aggregator=acc[1],
        settings=AggregatorSettings(explain_method=None, round_seconds=60, reveal_seconds=60),
    )
    terms = fed.service.round_terms(1)
    blob = terms.to_bytes()
    if mode == "dup":
        assert blob.count(b'"combiner":{"boost_clip":0.0,') == 1  # sorted keys: boost_clip first
        blob = blob.replace(b'"combiner":{', b'"combiner":{"boost_clip":0.9,', 1)
        print(f"terms repeat boost_clip: {blob.count(b'boost_clip')} times")
    parsed = True
    try:
        read = RoundTerms.from_bytes(blob)
        print(f"RoundTerms.from_bytes reads boost_clip {read.valuation['combiner']['boost_clip']}")
    except InvalidTerms as exc:
        parsed = False
        print(f"RoundTerms.from_bytes refuses: {exc}")
    spec = fed.service.spec
    seed = fed.service.initial_seed()
    start = encode_model(initial_model(spec, seed).state_dict(), spec=spec, round=0)
    r, _ = fed.ledger.open_round(
        acc[1],
        store.put(start),
        hashlib.sha256(start).hexdigest(),
        terms_cid=store.put(blob),
        terms_sha256=hashlib.sha256(blob).hexdigest(),
        commit_seconds=terms.commit_seconds,
        reveal_seconds=terms.reveal_seconds,
    )
    took = False
    for node in fed.nodes:
        record = node.participate(r)
        phase = None if record is None else record.phase
        print(f"node {node.config.name}: {phase}: {'' if record is None else record.note[:160]}")
        took = took or phase == "committed"
    audit = verify_all(fed.ledger, store)[0]
    failed = [(c.name, c.detail[:160]) for c in audit.checks if c.failed]
    print("audit verify round 1 (open):", "PASS" if audit.passed else "FAIL", failed)
    if mode == "control":
        return 0 if took and parsed else 1
    hole = took or parsed
    print("HOLE OPEN: ambiguous terms parsed or taken" if hole else "defence holds")
    return 1 if hole else 0


if __name__ == "__main__":
    sys.exit(main())
