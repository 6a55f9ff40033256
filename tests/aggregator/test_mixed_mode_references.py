"""A federation that moves from the aggregator's scoring to the peers' and back (round 1's terms
allow it: *Payment settings, fixed from round 1*), on Anvil + IPFS. In the peer round one site
reveals an update it never publishes: the validators cannot read it and the contract rejects it
(PEER_REJECTED). The next aggregator round with standing values its sites against the free-rider
references of the rounds before: an update the chain already marked unusable is none of them
(the round could not use its bytes), so that round is valued, not stopped by a blob no reader
has, and ``audit verify`` agrees with it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.valuation.chained import reference_labels, reference_submissions
from tests.aggregator.peer_setup import pass_deadline, peer_federation
from tests.aggregator.test_dp_withhold_peers import _Unpublished

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
]


def test_an_aggregator_round_after_a_peer_round_skips_the_updates_it_rejected(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    fed = peer_federation(
        tmp_path, anvil_url, ipfs_api, sites=4, standing=True, valuation_mode="aggregator"
    )
    ledger, service, nodes = fed.ledger, fed.service, fed.nodes
    withholder = nodes[3].address
    withheld: set[str] = set()
    unpublished = _Unpublished(fed.store, withheld)
    for n in nodes[:3]:  # every reader but the withholder's own node
        n.store = n.scorer.store = unpublished  # type: ignore[assignment]
    service.store = unpublished  # type: ignore[assignment]

    for r, mode in ((1, "aggregator"), (2, "peers"), (3, "aggregator")):
        service.settings = replace(service.settings, valuation_mode=mode)
        assert service.open_next() == r
        info = ledger.get_round(r)
        for n in nodes:
            n.participate(r)
        pass_deadline(ledger, info.commit_deadline)
        for n in nodes:
            n.participate(r)
        if r == 2:
            sub = ledger.get_submission(r, withholder)
            assert sub is not None and sub.revealed
            withheld.add(sub.cid)  # revealed, never published
            peer = ledger.get_peer_round(r)
            assert peer is not None
            pass_deadline(ledger, info.reveal_deadline)
            for n in nodes:
                n.scorer.score(r)
            pass_deadline(ledger, peer.score_commit_deadline)
            for n in nodes:
                n.scorer.score(r)
        else:
            pass_deadline(ledger, info.reveal_deadline)
        assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
        outcome = service.step()
        assert outcome is not None and outcome.phase == Phase.FINALIZED, r

    rejected = {s.site: s.reason for s in ledger.get_submissions(2)}
    assert rejected[withholder] == Reason.PEER_REJECTED
    assert withholder not in {s.site for s in reference_submissions(ledger, 2)}
    # three readable updates + the global delta
    assert len(reference_labels(ledger, unpublished, 3, 1)) == 4
    audit = verify_round(ledger, unpublished, 3)  # type: ignore[arg-type]
    failed = {c.name: c.detail for c in audit.checks if c.applicable and not c.passed}
    assert not failed, failed
