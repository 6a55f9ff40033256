"""The README's public rules (``tests/reference/test_public_rules.py``'s implementations of
its text) against a real federation on Anvil + IPFS, as an independent chain reader would
apply them: every round's on-chain weights from the on-chain sample counts and scores, every
site's reputation from its scores, the logs' weight fractions, and every global model from the
start model and the revealed updates (bytes read by the chain's CIDs and checked against its
hashes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.roundlog import MAX_LOG_BYTES, RoundLog
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.faults import SiteFault
from fedtrail.storage.codec import decode_model, decode_update
from fedtrail.storage.store import IpfsStore
from tests.fixtures.chain import ChainEnv
from tests.fixtures.federations import small_federation
from tests.reference.test_public_rules import ref_flat, ref_global, ref_reputation, ref_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROUNDS = 3


@pytest.mark.anvil
def test_an_independent_reader_recomputes_a_federation_from_the_readme(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> None:
    spec = ModelSpec()
    faults = [SiteFault()] * 3 + [
        SiteFault(kind="sign_flip"),
        SiteFault(kind="label_noise", rate=0.4),
    ]
    store = IpfsStore(ipfs_api)
    fed = small_federation(anvil, store, tmp_path, spec=spec, faults=faults, parts=12, seed=4)
    ledger = fed.ledger
    reputation: dict[str, int | None] = {}
    weights_seen = 0
    for r in range(1, ROUNDS + 1):
        fed.run_round()
        info = ledger.get_round(r)
        subs = ledger.get_submissions(r)
        valued = [s for s in subs if s.cid]
        # weights: the contract's rule over the revealed updates, address order
        expected = ref_weights([s.num_samples for s in valued], [s.score for s in valued])
        assert [s.weight for s in valued] == expected, r
        weights_seen += sum(1 for w in expected if 0 < w < 10**18)
        # reputation: the EMA of every valued score
        for s in valued:
            reputation[s.site] = ref_reputation(reputation.get(s.site), s.score)
        # the log's fractions: the correctly rounded quotient
        log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES))
        for entry in log.sites:
            assert entry.weight_fraction == entry.weight / 10**18
        # the global model: start + the weighted sum (two casts), bytes by the chain's hashes
        start, _ = decode_model(store.get(info.start_cid, info.start_sha256), spec=spec)
        glob, _ = decode_model(store.get(info.global_cid, info.global_sha256), spec=spec)
        rows = []
        for s in valued:
            blob = store.get(s.cid, s.sha256)
            assert hashlib.sha256(blob).hexdigest() == s.sha256
            rows.append(ref_flat(decode_update(blob, spec=spec, expected_round=r)[0]))
        ref = ref_global(ref_flat(start).astype(np.float32), rows, [s.weight for s in valued])
        assert np.array_equal(ref_flat(dict(glob)).astype(np.float32), ref), r
        assert all(isinstance(t, torch.Tensor) for t in glob.values())
    # SmallCNN has no running statistics: its terms' rule has no statistics setting, byte for
    # byte the terms every earlier node and auditor reads
    terms_blob = store.get(ledger.get_round(1).terms_cid, ledger.get_round(1).terms_sha256)
    assert "statistics" not in RoundTerms.from_bytes(terms_blob).aggregation_rule
    for site in ledger.get_sites():
        assert site.reputation == reputation[site.address], site.name
    # the federation was not trivial: scores differed, so weights were not sample shares alone
    scores = {s.score for r in range(1, ROUNDS + 1) for s in ledger.get_submissions(r)}
    assert len(scores) > 1 and weights_seen >= ROUNDS * 2
