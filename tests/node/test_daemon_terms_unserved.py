"""A round opened under terms the store does not give (attack a80): the contract pins a round's
terms by their sha256, not by whether anyone serves them, so an aggregator could open a round
under terms it hands only to its allies (publishing them after the round, so every audit reads
them). The node retried the store's ``ContentNotFound`` until the commit window closed and left
no trace on chain but its absence. It now declines on chain (``TERMS_UNUSABLE``) once half the
commit window has passed without the terms, and at once for a CID that serves other bytes; in
either case only after the store failed it on ``MISSES_BEFORE_DECLINE`` polls (the IPFS client
reads a hung daemon as ``ContentNotFound`` and a cut answer as other bytes, and a decline spends
the round)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.errors import ContentNotFound
from fedtrail.protocol.codes import Decline
from fedtrail.simulation.faults import SiteFault
from fedtrail.storage.cid import check_cid
from fedtrail.storage.store import NOT_GIVEN, LocalStore
from node.daemon import MISSES_BEFORE_DECLINE
from tests.aggregator.test_service import _federation, close_commits
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _raw_cid(sha256_hex: str) -> str:
    """The raw-codec CIDv1 (base32) of bytes with this sha256: a name nobody serves here."""
    prefix = bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1, raw, sha2-256, 32 bytes
    body = base64.b32encode(prefix + bytes.fromhex(sha256_hex)).decode().lower().rstrip("=")
    return check_cid("b" + body)


def _after_misses(node: Any, round_id: int, missed: int) -> Any:
    """Polls ``round_id`` until the node's verdict: every poll before the
    ``MISSES_BEFORE_DECLINE``-th miss (``missed`` of them already) raises the store's refusal
    and declares nothing."""
    for _ in range(MISSES_BEFORE_DECLINE - 1 - missed):
        with pytest.raises(NOT_GIVEN):
            node.participate(round_id)
        assert node.ledger.get_submission(round_id, node.address) is None
    return node.participate(round_id)


@pytest.mark.parametrize("served", ["nothing", "other bytes"])
def test_terms_the_store_does_not_give_are_declined_on_chain(
    embedded: ChainEnv, tmp_path: Path, served: str
) -> None:
    """Round 1 is opened under terms whose CID names ``nothing`` the store holds (retried until
    half the commit window has passed, then declined) or ``other bytes`` (declined at once):
    either way the node commits no update and its ``TERMS_UNUSABLE`` decline is on chain."""
    store = LocalStore(tmp_path / "store")
    fed = _federation(
        store,
        list(embedded.sites[:1]),
        [SiteFault()],
        tmp_path,
        w3=embedded.w3,
        coordinator=embedded.coordinator,
    )
    ledger, node = fed.ledger, fed.nodes[0]
    real_open = ledger.open_round

    def open_round(signer: Any, cid: str, sha: str, **kwargs: Any) -> Any:
        blob = store.get(kwargs["terms_cid"], kwargs["terms_sha256"])
        if served == "nothing":
            hidden = _raw_cid(kwargs["terms_sha256"])
        else:
            hidden = store.put(b"not the terms")
        assert hashlib.sha256(blob).hexdigest() == kwargs["terms_sha256"]
        fed.service._kept[hidden] = blob  # the aggregator reads its own terms
        return real_open(signer, cid, sha, **{**kwargs, "terms_cid": hidden})

    ledger.open_round = open_round  # type: ignore[method-assign]
    r = fed.service.open_next()
    info = ledger.get_round(r)
    if served == "nothing":
        with pytest.raises(ContentNotFound):  # early in the window: retried, nothing declared
            node.participate(r)
        assert ledger.get_submission(r, node.address) is None
        middle = info.opened_at + (info.commit_deadline - info.opened_at + 1) // 2
        advance_time(ledger.w3, max(0, middle - next_block_timestamp(ledger.w3)))
        assert next_block_timestamp(ledger.w3) <= info.commit_deadline
    record = _after_misses(node, r, missed=1 if served == "nothing" else 0)
    assert record is not None and record.phase == "skipped", record
    assert "terms" in record.note and "declined on chain (terms unusable)" in record.note
    assert ledger.declines(r) == {node.address: Decline.TERMS_UNUSABLE}


@pytest.mark.parametrize("served", ["nothing", "other bytes"])
def test_a_start_model_the_store_does_not_give_is_declined_on_chain(
    embedded: ChainEnv, tmp_path: Path, served: str
) -> None:
    """Round 1 is finalized under a global-model CID that names ``nothing`` the store holds
    (the raw CIDv1 of its bytes: attack a81) or ``other bytes``, and round 2 opens from it, so
    the last global's CID (a67's fallback) is the same one. The node retries an unserved one
    until half the commit window has passed and declines at once a CID serving other bytes;
    either way it commits no update and its ``START_UNAVAILABLE`` decline is on chain."""
    store = LocalStore(tmp_path / "store")
    fed = _federation(
        store,
        list(embedded.sites[:1]),
        [SiteFault()],
        tmp_path,
        w3=embedded.w3,
        coordinator=embedded.coordinator,
    )
    ledger, node = fed.ledger, fed.nodes[0]
    real_finalize = ledger.finalize_round

    def finalize_round(signer: Any, round_id: int, **kwargs: Any) -> Any:
        blob = store.get(kwargs["global_cid"], kwargs["global_sha256"])
        if served == "nothing":
            hidden = _raw_cid(kwargs["global_sha256"])
        else:
            hidden = store.put(b"not the model")
        fed.service._kept[hidden] = blob  # the aggregator reads its own model
        return real_finalize(signer, round_id, **{**kwargs, "global_cid": hidden})

    ledger.finalize_round = finalize_round  # type: ignore[method-assign]
    r1 = fed.service.open_next()
    node.participate(r1)
    close_commits(ledger, r1)
    node.participate(r1)
    for _ in range(3):
        if fed.service.step() is not None:
            break
    assert ledger.get_round(r1).phase.name == "FINALIZED"
    r2 = fed.service.open_next()
    info = ledger.get_round(r2)
    assert info.start_cid == ledger.get_round(r1).global_cid
    if served == "nothing":
        with pytest.raises(ContentNotFound):  # early in the window: retried, nothing declared
            node.participate(r2)
        assert ledger.get_submission(r2, node.address) is None
        middle = info.opened_at + (info.commit_deadline - info.opened_at + 1) // 2
        advance_time(ledger.w3, max(0, middle - next_block_timestamp(ledger.w3)))
        assert next_block_timestamp(ledger.w3) <= info.commit_deadline
    record = _after_misses(node, r2, missed=1 if served == "nothing" else 0)
    assert record is not None and record.phase == "skipped", record
    assert "start model" in record.note and "(start unavailable)" in record.note
    assert ledger.declines(r2) == {node.address: Decline.START_UNAVAILABLE}


def test_round_one_terms_no_longer_served_are_declined_on_chain(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Round 1 is finalized; then round 1's terms, which bind every later round's payment
    settings, stop being served (gone from the store) and the node has not kept them (a restart
    clears its cache). Round 2's own terms are served: the node retries until half the commit
    window has passed, then declines on chain (``PAYMENT_CHANGED``, as for unusable round-1
    terms) instead of missing the round with no trace."""
    store = LocalStore(tmp_path / "store")
    fed = _federation(
        store,
        list(embedded.sites[:1]),
        [SiteFault()],
        tmp_path,
        w3=embedded.w3,
        coordinator=embedded.coordinator,
    )
    ledger, node = fed.ledger, fed.nodes[0]
    r1 = fed.service.open_next()
    node.participate(r1)
    close_commits(ledger, r1)
    node.participate(r1)
    for _ in range(3):
        if fed.service.step() is not None:
            break
    first = ledger.get_round(r1)
    assert first.phase.name == "FINALIZED"
    r2 = fed.service.open_next()
    (tmp_path / "store" / "blobs" / first.terms_cid).unlink()  # no longer served
    node._terms = {}  # a restarted node keeps no terms in memory
    info = ledger.get_round(r2)
    with pytest.raises(ContentNotFound):  # early in the window: retried, nothing declared
        node.participate(r2)
    assert ledger.get_submission(r2, node.address) is None
    middle = info.opened_at + (info.commit_deadline - info.opened_at + 1) // 2
    advance_time(ledger.w3, max(0, middle - next_block_timestamp(ledger.w3)))
    record = _after_misses(node, r2, missed=1)
    assert record is not None and record.phase == "skipped", record
    assert "round 1's terms" in record.note and "(payment changed)" in record.note
    assert ledger.declines(r2) == {node.address: Decline.PAYMENT_CHANGED}


def test_a_store_that_fails_on_fewer_polls_than_the_limit_costs_no_round(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Past half the commit window, the node's own daemon answers the round's terms with a
    timeout (``ContentNotFound``) and then a cut answer (other bytes) before it recovers: the
    node takes part instead of declining on the first (it declined at once before)."""
    from fedtrail.errors import HashMismatch

    store = LocalStore(tmp_path / "store")
    fed = _federation(
        store,
        list(embedded.sites[:1]),
        [SiteFault()],
        tmp_path,
        w3=embedded.w3,
        coordinator=embedded.coordinator,
    )
    ledger, node = fed.ledger, fed.nodes[0]
    r = fed.service.open_next()
    info = ledger.get_round(r)
    middle = info.opened_at + (info.commit_deadline - info.opened_at + 1) // 2
    advance_time(ledger.w3, max(0, middle - next_block_timestamp(ledger.w3)))
    hiccups: list[Exception] = [ContentNotFound("timed out"), HashMismatch("cut short")]
    real_get = node.store.get

    def get(cid: str, sha256: str, **kwargs: Any) -> bytes:
        if cid == info.terms_cid and hiccups:
            raise hiccups.pop(0)
        return real_get(cid, sha256, **kwargs)

    node.store.get = get
    for _ in range(2):  # two polls' failures: retried, nothing declared
        with pytest.raises(NOT_GIVEN):
            node.participate(r)
    record = node.participate(r)
    assert record is not None and record.phase == "committed", record
    assert ledger.declines(r) == {}


def test_a_decline_whose_record_was_lost_is_read_back_as_a_decline(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """A node that crashed after its decline landed but before state.json recorded it finds,
    on restart, its own decline on chain: it notes the decline (nothing trained, nothing lost)
    instead of "committed, but the committed update is lost locally", and sends nothing more."""
    store = LocalStore(tmp_path / "store")
    fed = _federation(
        store,
        list(embedded.sites[:1]),
        [SiteFault()],
        tmp_path,
        w3=embedded.w3,
        coordinator=embedded.coordinator,
    )
    ledger, node = fed.ledger, fed.nodes[0]
    real_open = ledger.open_round

    def open_round(signer: Any, cid: str, sha: str, **kwargs: Any) -> Any:
        blob = store.get(kwargs["terms_cid"], kwargs["terms_sha256"])
        hidden = store.put(b"not the terms")
        fed.service._kept[hidden] = blob
        return real_open(signer, cid, sha, **{**kwargs, "terms_cid": hidden})

    ledger.open_round = open_round  # type: ignore[method-assign]
    r = fed.service.open_next()
    first = _after_misses(node, r, missed=0)
    assert first is not None and "declined on chain (terms unusable)" in first.note
    del node.state.rounds[r]  # the crash: the transaction landed, the record was not saved
    node._save()
    block = ledger.w3.eth.block_number
    again = node.participate(r)
    assert again is not None and again.phase == "skipped", again
    assert "declined on chain (terms unusable) before" in again.note, again.note
    assert "lost locally" not in again.note
    assert ledger.w3.eth.block_number == block  # no second transaction
    assert ledger.declines(r) == {node.address: Decline.TERMS_UNUSABLE}
