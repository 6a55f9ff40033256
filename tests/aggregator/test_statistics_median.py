"""A site that poisons only BatchNorm's running statistics, on Anvil + IPFS: the aggregator
takes the statistics' coordinate median (the terms' ``aggregation_rule.statistics``, anchored at
the start model while fewer than three updates are paid), the global
model keeps the honest sites' statistics, and ``audit verify`` replays it bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedtrail.auditor.verify import verify_all
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.terms import MAX_TERMS_BYTES, RoundTerms
from fedtrail.simulation.faults import SiteFault
from fedtrail.storage.codec import decode_model, decode_update
from fedtrail.storage.store import IpfsStore
from tests.fixtures.chain import ChainEnv
from tests.fixtures.federations import small_federation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHIFT = 1e3


@pytest.mark.anvil
def test_a_statistics_poisoner_cannot_move_the_global_statistics(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> None:
    spec = ModelSpec(arch="resnet10", in_channels=1, num_classes=2, image_size=28)
    faults = [SiteFault()] * 3 + [SiteFault(kind="statistics", shift=SHIFT)]
    store = IpfsStore(ipfs_api)
    fed = small_federation(
        anvil, store, tmp_path, spec=spec, faults=faults, parts=30, seed=2, val_every=3
    )
    fed.run_round()
    ledger = fed.ledger
    info = ledger.get_round(1)
    subs = [s for s in ledger.get_submissions(1) if s.weight > 0]
    poisoner = anvil.sites[3].address
    # the warm-up pays the poisoner (its weights are honest): only the statistics rule protects
    assert poisoner in {s.site for s in subs}
    terms_blob = store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
    terms = RoundTerms.from_bytes(terms_blob)
    assert terms.aggregation_rule["statistics"] == "anchored_median"

    start, _ = decode_model(store.get(info.start_cid, info.start_sha256), spec=spec)
    glob, _ = decode_model(store.get(info.global_cid, info.global_sha256), spec=spec)
    deltas = {
        s.site: decode_update(store.get(s.cid, s.sha256), spec=spec, expected_round=1)[0]
        for s in subs
    }
    names = spec.statistic_names()
    assert names and all(n.endswith(("running_mean", "running_var")) for n in names)
    for name in names:
        paid = [deltas[s.site][name].numpy().astype(np.float64) for s in subs]
        # fewer than three paid updates: the start model's statistics (zero deltas) vote too
        paid += [np.zeros_like(paid[0])] * max(0, 3 - len(paid))
        rows = np.stack(paid)
        median = np.median(rows, axis=0).astype(np.float32).astype(np.float64)
        expected = (start[name].numpy().astype(np.float64) + median).astype(np.float32)
        assert np.array_equal(glob[name].numpy(), expected), name
    shifted = [n for n in names if n.endswith("running_mean")]
    assert max(float(glob[n].abs().max()) for n in shifted) < SHIFT / 10
    # averaged with the on-chain weights, the shift would have moved them by its weight share
    share = next(s.weight for s in subs if s.site == poisoner) / 10**18
    assert SHIFT * share > SHIFT / 10

    audits = verify_all(ledger, store)
    failed = [c for a in audits for c in a.checks if not c.passed]
    assert not failed, failed
    checks = {c.name: c for a in audits for c in a.checks}
    assert "statistics: anchored_median" in checks["global.recomputed"].detail
