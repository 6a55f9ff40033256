"""An honest federation that moves from the aggregator's scoring to the peers' and back (round
1's terms allow it), read by ``audit verify`` and by the independent reader: session 62's
reader checks (a134 payment settings fixed from round 1, a139/a140 the round's kind on chain
against its terms) must not fail a round nobody cheated in."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedtrail.auditor.verify import verify_all
from fedtrail.protocol.codes import Phase
from tests.aggregator.peer_setup import pass_deadline, peer_federation
from tests.aggregator.test_peer_rounds import _reader_results

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
]


def test_an_honest_mixed_mode_federation_fails_no_check_of_verify_or_the_reader(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3, valuation_mode="aggregator")
    ledger, service, nodes = fed.ledger, fed.service, fed.nodes
    for r, mode in ((1, "aggregator"), (2, "peers"), (3, "aggregator")):
        service.settings = replace(service.settings, valuation_mode=mode)
        assert service.open_next() == r
        info = ledger.get_round(r)
        for n in nodes:
            n.participate(r)
        pass_deadline(ledger, info.commit_deadline)
        for n in nodes:
            n.participate(r)
        pass_deadline(ledger, info.reveal_deadline)
        peer = ledger.get_peer_round(r)
        if peer is not None:
            for n in nodes:
                n.scorer.score(r)
            pass_deadline(ledger, peer.score_commit_deadline)
            for n in nodes:
                n.scorer.score(r)
        outcome = None
        for _ in range(3):
            outcome = service.step() or outcome
            if ledger.get_round(r).phase == Phase.FINALIZED:
                break
        assert ledger.get_round(r).phase == Phase.FINALIZED, (r, outcome)
    audits = verify_all(ledger, fed.store)
    failed = {(a.round, c.name): c.detail for a in audits for c in a.checks if c.failed}
    assert not failed, failed
    results = _reader_results(fed, anvil_url, ipfs_api)
    bad = {k: v.get("detail") for k, v in results.items() if v["result"] == "FAIL"}
    assert not bad, bad
