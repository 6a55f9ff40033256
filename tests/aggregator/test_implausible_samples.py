"""A site that inflates its sample count within its on-chain cap, end to end on Anvil + IPFS:
the aggregator scores it 0 with IMPLAUSIBLE_SAMPLES (no weight), and `audit verify` re-derives
that verdict and passes. The coordinator raised the site's cap with `set_max_samples`, as it
would for a site it believes large; the round's median sample count still gives it away."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.chain import advance_time, dev_account, next_block_timestamp
from fedtrail.ledger import commitment
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from tests.aggregator.test_attacks import SAMPLES, _accounts, _federation, _honest_blobs

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
    pytest.mark.usefixtures("one_torch_thread"),
]


def test_an_inflated_sample_count_gets_no_weight_and_verify_passes(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    fed = _federation(anvil_url, ipfs_api, tmp_path)
    inflator, honest = _accounts()
    claimed = 50 * SAMPLES
    fed.ledger.set_max_samples(dev_account(0), inflator.address, claimed)
    fed.ledger.remove_site(dev_account(0), honest[2].address)  # three sites take part
    r = fed.service.open_next()
    blobs = _honest_blobs(fed, r)  # three distinct useful updates; the inflator sends its own
    sent = [(honest[0], blobs[0], SAMPLES), (honest[1], blobs[1], SAMPLES)]
    sent.append((inflator, blobs[2], claimed))
    for site, blob, n in sent:
        sha = hashlib.sha256(blob).hexdigest()
        fed.ledger.commit_update(site, r, commitment(site.address, r, sha, n))
    deadline = fed.ledger.get_round(r).commit_deadline
    advance_time(fed.ledger.w3, deadline - next_block_timestamp(fed.ledger.w3) + 1 + CLOCK_SLACK)
    for site, blob, n in sent:
        fed.ledger.reveal_update(site, r, fed.store.put(blob), hashlib.sha256(blob).hexdigest(), n)
    assert fed.service.step() is None and fed.ledger.get_round(r).phase == Phase.VALUED
    outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    subs = {s.site: s for s in fed.ledger.get_submissions(r)}
    flagged = subs[inflator.address]
    assert flagged.num_samples == claimed
    assert (flagged.score, flagged.weight, flagged.reason) == (0, 0, Reason.IMPLAUSIBLE_SAMPLES)
    assert any(subs[s.address].weight > 0 for s in honest[:2])
    audit = verify_round(fed.ledger, fed.store, r)
    assert audit.passed, [c for c in audit.checks if not c.passed]
