"""Peer rounds and the declared privacy spend (on Anvil + IPFS): the aggregator is a pure
combiner there and cannot zero an update, but every validator reads the round through the same
``revealed_candidates`` as the aggregator, so an update whose declared spend its blob
contradicts is scored 0 by every honest validator and the median rejects it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_all
from fedtrail.ledger import Ledger
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.valuation import default_combiner
from tests.aggregator.peer_setup import pass_deadline, peer_federation

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
]


@pytest.mark.parametrize("check", [1, 0], ids=["dp_spend_check", "terms-before-it"])
def test_honest_validators_reject_a_spend_declared_for_a_plain_update(
    anvil_url: str, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check: int
) -> None:
    """Site 2 declares 5 micro-epsilon for an update without DP parameters (``NO DP
    PARAMETERS``): the three other validators score it 0, the median is 0 (PEER_REJECTED), the
    aggregator's log reads it ``malformed`` with the check named, and the round verifies. Under
    terms without the check (the sites consenting to them) the same update is weighted."""
    combiner = replace(default_combiner(False), dp_spend_check=check)
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=4, combiner=combiner)
    ledger, service, store = fed.ledger, fed.service, fed.store
    liar = fed.nodes[2].address
    reveal = Ledger.reveal_update

    def declares(self: Ledger, signer: Any, *args: Any, **kwargs: Any) -> Any:
        if signer.address == liar:
            kwargs["epsilon_micro"] = 5
        return reveal(self, signer, *args, **kwargs)

    monkeypatch.setattr(Ledger, "reveal_update", declares)
    r = service.open_next()
    info = ledger.get_round(r)
    peer = ledger.get_peer_round(r)
    assert peer is not None
    for n in fed.nodes[:3]:
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in fed.nodes[:3]:
        n.participate(r)
    assert [s.epsilon_micro for s in ledger.privacy_spends(r)] == [5]
    pass_deadline(ledger, info.reveal_deadline)
    for n in fed.nodes:
        n.scorer.score(r)
    pass_deadline(ledger, peer.score_commit_deadline)
    for n in fed.nodes:
        n.scorer.score(r)
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED

    subs = {s.site: s for s in ledger.get_submissions(r)}
    if not check:
        assert subs[liar].weight > 0 and subs[liar].reason == Reason.OK
        return
    assert (subs[liar].score, subs[liar].weight, subs[liar].reason) == (0, 0, Reason.PEER_REJECTED)
    assert all(s.weight > 0 for a, s in subs.items() if a != liar)
    for vote in ledger.peer_votes(r):
        if vote.validator != liar:  # each honest validator scored it 0
            order = sorted(subs, key=lambda a: int(a, 16))
            assert vote.scores[order.index(liar)] == 0
    final = ledger.get_round(r)
    entry = RoundLog.from_bytes(store.get(final.log_cid, final.log_sha256)).site(liar)
    assert entry is not None and entry.status == "malformed"
    audits = verify_all(ledger, store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if c.failed]
