"""A site that reveals a CID of invalid UTF-8 (the contract takes any bytes as a string) on
Anvil, end to end: the aggregator values and finalizes the round without it, and ``audit
verify`` passes it. Before, every reader's decoding of the round's ``UpdateSubmitted`` events
failed, so the round could be neither valued nor cancelled, and the federation stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.ledger.records import commitment
from fedtrail.protocol.codes import Phase, Reason
from tests.aggregator.peer_setup import pass_deadline
from tests.auditor.test_verify import federation, on_anvil
from tests.contracts.test_untrusted_event_strings import reveal_raw_cid

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


def test_a_site_that_reveals_a_non_utf8_cid_does_not_stop_the_federation(
    anvil_url: str, tmp_path: Path
) -> None:
    fed = federation(tmp_path, rounds=0, **on_anvil(anvil_url))
    honest, hostile = fed.nodes[:2], fed.sites[2].account
    ledger, sha = fed.ledger, "ab" * 32
    round_id = fed.service.open_next()
    for n in honest:
        n.participate(round_id)
    ledger.commit_update(hostile, round_id, commitment(hostile.address, round_id, sha, 100))
    info = ledger.get_round(round_id)
    pass_deadline(ledger, info.commit_deadline)
    for n in honest:
        n.participate(round_id)
    reveal_raw_cid(ledger.w3, ledger.address, hostile, round_id, b"Qm\xff\xfe", sha, 100)

    assert fed.service.step() is None and ledger.get_round(round_id).phase == Phase.VALUED
    outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    subs = {s.site: s for s in ledger.get_submissions(round_id)}
    bad = subs[hostile.address]
    assert (bad.score, bad.reason, bad.weight) == (0, Reason.MALFORMED, 0)
    assert all(subs[n.account.address].weight > 0 for n in honest)
    audit = verify_round(ledger, fed.store, round_id)
    assert audit.passed, [c for c in audit.checks if c.failed]
