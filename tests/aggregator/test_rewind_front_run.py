"""Attack a144: a chain controller (a coordinator running its own chain node, or a reorg on a
chain without finality) lets the round's reveals be mined, reads the updates they publish,
then rewinds the chain into the commit window (``evm_snapshot`` / ``evm_revert`` on Anvil, as
``tests/node/test_reorg.py`` plays a reorg) and has a colluding site commit a copy of an
honest update *before* the honest commitments, which it then mines again (the same signed
transactions; here sent again with the same keys). The duplicate rule decides by commit
order, so the colluder is the original and is paid, the honest site is the copy (weight 0),
and the chain, the log, every check of ``audit verify`` and the independent reader agree:
the dropped branch leaves no trace. Commit-then-reveal hides an update only while the commit
window cannot be reopened.
README *Trust model* (the chain keeps what it mined): "a reorg deeper than the window, or one
timed at a deadline, is the chain's finality to bound (wait for confirmations: not done)";
this is that gap's price, measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.auditor.verify import verify_all
from fedtrail.chain import next_block_timestamp
from fedtrail.protocol.codes import Phase, Reason
from tests.aggregator.test_attacks import (
    _accounts,
    _commit,
    _federation,
    _honest_blobs,
    _reveal_all,
)
from tests.aggregator.test_peer_rounds import _reader_results
from tests.node.test_reorg import _reorg, _snapshot

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.mark.xfail(
    strict=True,
    reason="a144: a chain controller that rewinds past the reveals into the commit window lets "
    "a colluder commit a copy of a now-public update first; the duplicate rule (commit order) "
    "pays the colluder and zeroes the honest site, and audit verify passes. Suggested fix "
    "(protocol, the chain's finality): sites reveal only once the commit deadline's block is "
    "final (a confirmation depth, or a finalized checkpoint, named in the terms), and a node "
    "whose commitment the chain holds in another block than its recorded transaction's does "
    "not reveal into that round (its update may already be public)",
)
def test_a144_a_rewind_past_the_reveals_lets_a_copy_committed_first_take_the_pay(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    fed = _federation(anvil_url, ipfs_api, tmp_path)
    attacker, honest = _accounts()
    victim = honest[0]
    w3 = fed.ledger.w3
    r = fed.service.open_next()
    blobs = _honest_blobs(fed, r)
    before = _snapshot(w3)  # the commit window open, nothing committed
    for site, blob in zip(honest, blobs, strict=True):
        _commit(fed.ledger, site, r, blob)
    _reveal_all(fed, r, list(zip(honest, blobs, strict=True)))  # the updates are public now
    assert {s.site for s in fed.ledger.get_submissions(r) if s.revealed} == {
        s.address for s in honest
    }
    # the controller rewinds into the commit window: the reveals and commitments are gone
    _reorg(w3, before)
    assert fed.ledger.get_submissions(r) == []
    assert next_block_timestamp(w3) <= fed.ledger.get_round(r).commit_deadline
    _commit(fed.ledger, attacker, r, blobs[0])  # a copy of the victim's, read from its reveal
    for site, blob in zip(honest, blobs, strict=True):  # the honest commitments, mined again
        _commit(fed.ledger, site, r, blob)
    _reveal_all(fed, r, [(attacker, blobs[0]), *zip(honest, blobs, strict=True)])
    assert fed.service.step() is None and fed.ledger.get_round(r).phase == Phase.VALUED
    outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    subs = {s.site: s for s in fed.ledger.get_submissions(r)}
    assert subs[attacker.address].commit_order < subs[victim.address].commit_order
    failed = {
        (a.round, c.name): c.detail
        for a in verify_all(fed.ledger, fed.store)
        for c in a.checks
        if c.failed
    }
    reader = _reader_results(fed, anvil_url, ipfs_api)
    failed |= {k: v["detail"] for k, v in reader.items() if v["result"] == "FAIL"}
    # what an honest outcome needs: the victim paid, or the round failing an audit
    assert (subs[victim.address].weight > 0 and subs[attacker.address].weight == 0) or failed, (
        subs[victim.address].reason,
        Reason(subs[victim.address].reason).name,
        subs[attacker.address].weight,
    )
