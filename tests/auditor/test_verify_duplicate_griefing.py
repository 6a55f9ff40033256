"""Session 56: ``duplicates`` and ``log.status`` in a peer round decide from what the chain
says was read while the round was scored, not from what reads at audit time.

The griefing (h-228, session 55): a colluder commits, before its ally, a near-copy of the
ally's update and withholds its blob while the round is scored (every validator scores it 0:
``PEER_REJECTED``; the aggregator reads it as ``malformed``), so the ally's update is weighted;
after the finalize the colluder serves its blob. Read at audit time, the colluder's update
became the original and the ally's a weighted copy: ``duplicates`` and ``log.status`` failed an
honest aggregator's round, in the default peer mode and under ``valuation.public_screen``
alike. A copy of an update the validators did read is still named."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
from eth_account.signers.local import LocalAccount

from fedtrail.chain import advance_time, block_timestamp, dev_account
from fedtrail.errors import FedtrailError
from fedtrail.ledger import commitment
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import address_key, screen_inputs
from fedtrail.protocol.terms import RoundTerms
from fedtrail.storage.cid import sha256_hex
from fedtrail.storage.codec import encode_update
from fedtrail.storage.store import IpfsStore
from fedtrail.valuation.candidates import revealed_candidates
from fedtrail.valuation.combine import Combiner
from tests.auditor import peer_federation
from tests.auditor.peer_federation import PeerFed, new_peer_federation, peer_round, reader_results
from tests.auditor.report.federation import SPEC, put
from tests.auditor.test_verify_public_screen import _checks, _withdraw

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(params=["default", "public_screen"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The default peer mode, and peer rounds under standing with the public screen (the noise
    tests off, the block-noise test too: the hand-made updates are Gaussian noise)."""
    if request.param == "public_screen":
        monkeypatch.setitem(peer_federation.PEER_VALUATION, "standing", True)
        monkeypatch.setitem(peer_federation.PEER_VALUATION, "public_screen", True)
        monkeypatch.setitem(
            peer_federation.PEER_VALUATION,
            "combiner",
            asdict(Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0)),
        )
    yield str(request.param)


def _copying_submit(copier: str, original: str) -> Any:
    """``peer_federation.submit`` in which ``copier`` (committed before ``original``) reveals
    ``original``'s update times (1 + 1e-6): another blob, a copy under *Duplicates*."""

    def submit(pf: PeerFed, round_id: int, *, seed: int, **_: Any) -> dict[str, tuple[str, str]]:
        fed = pf.fed
        gen = torch.Generator().manual_seed(seed)
        deltas = {
            site.address: {
                name: 0.01 * torch.randn(shape, generator=gen)
                for name, (shape, _) in SPEC.tensor_layout().items()
            }
            for site in fed.sites
        }
        deltas[copier] = {k: v * (1 + 1e-6) for k, v in deltas[original].items()}
        reveals: list[tuple[LocalAccount, str, str, int]] = []
        for i, site in enumerate(fed.sites):  # commit order: the sites' order
            blob = encode_update(deltas[site.address], spec=SPEC, round=round_id).blob
            cid, sha = put(fed.store, blob)
            n = 100 + 50 * i
            fed.ledger.commit_update(site, round_id, commitment(site.address, round_id, sha, n))
            reveals.append((site, cid, sha, n))
        info = fed.ledger.get_round(round_id)
        advance_time(fed.ledger.w3, info.commit_deadline - block_timestamp(fed.ledger.w3) + 1)
        for site, cid, sha, n in reveals:
            fed.ledger.reveal_update(site, round_id, cid, sha, n)
        return {}

    return submit


def _griefed_round(
    pf: PeerFed,
    store: IpfsStore,
    ipfs_api: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    held: bool,
    logged: str = "malformed",
) -> tuple[int, str, str]:
    """A peer round in which colluder ``c1`` commits first a near-copy of ally ``c2``'s update.
    ``held``: c1 withholds its blob while the round is scored (every validator scores it 0, the
    aggregator's log reads it ``logged``, honestly ``malformed``) and serves it from the
    finalize on; otherwise the validators read it and weight it, and weight c2's copy too
    (dishonest validators)."""
    ledger = pf.fed.ledger
    c1, c2 = dev_account(5), dev_account(6)
    for account, name in ((c1, "c1"), (c2, "c2")):
        ledger.register_site(pf.fed.coordinator, account.address, name, 10_000)
        pf.fed.sites.append(account)
        pf.validators.append(account)
    monkeypatch.setattr(peer_federation, "submit", _copying_submit(c1.address, c2.address))
    kept: list[tuple[str, bytes]] = []

    def unserve(r: int) -> None:  # after the reveals, before anyone scores
        sub = next(s for s in ledger.get_submissions(r) if s.site == c1.address)
        kept.append((sub.cid, store.get(sub.cid, sub.sha256)))
        _withdraw(ipfs_api, sub.cid)

    def served_again(r: int) -> None:  # valued: nobody could read it while scored
        for cid, blob in kept:
            with pytest.raises(FedtrailError):
                store.get(cid, sha256_hex(blob))
            assert store.put(blob) == cid

    def as_read(doc: dict[str, Any]) -> None:  # how the aggregator's store read c1 then
        for entry in doc["sites"]:
            if entry["site"] == c1.address:
                entry["status"] = logged

    r = peer_round(
        pf,
        seed=21,
        unread=[c1.address] if held else [],
        during=unserve if held else None,
        valued=served_again if held else None,
        edit=as_read if held else None,
    )
    subs = {s.site: s for s in ledger.get_submissions(r)}
    assert subs[c2.address].weight > 0
    if held:
        assert (subs[c1.address].reason, subs[c1.address].weight) == (Reason.PEER_REJECTED, 0)
        for cid, blob in kept:
            assert store.get(cid, sha256_hex(blob)) == blob  # readable at audit time
    else:
        assert subs[c1.address].weight > 0
    return r, c1.address, c2.address


def test_an_update_served_after_the_finalize_makes_no_weighted_copy(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The honest round passes verify and the reader whole (before: ``duplicates`` failed,
    naming the ally, and ``log.status`` failed on both colluders, in verify and the reader)."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    r, _, _ = _griefed_round(pf, store, ipfs_api, monkeypatch, held=True)
    checks = _checks(pf, store, r)
    failed = {name: c.detail for name, c in checks.items() if c.failed}
    assert not failed, failed
    assert checks["duplicates"].detail.startswith("0 later cop"), checks["duplicates"].detail
    results = reader_results(pf, anvil_url, ipfs_api)
    for check in ("duplicates", "log.status"):
        assert results[(r, check)]["result"] == "PASS", results[(r, check)]


def test_the_aggregator_reads_the_copies_over_the_same_originals(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An aggregator whose store gives the colluder's blob while its validators' did not: over
    every update that reads it would log the ally's weighted update ``duplicate`` (verify reads
    it ``ok``: ``log.status`` would fail); over the originals its finalize passes
    (``AggregatorService._read_in_round``, the chain's inputs) the ally's is ``ok``."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    r, colluder, ally = _griefed_round(pf, store, ipfs_api, monkeypatch, held=True)
    ledger = pf.fed.ledger
    info = ledger.get_round(r)
    terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
    read = frozenset(address_key(s) for s in screen_inputs(ledger.peer_outcome(r)))
    assert address_key(colluder) not in read and address_key(ally) in read

    def statuses(originals: frozenset[int] | None) -> dict[str, Reason]:
        pairs = revealed_candidates(ledger, store, r, terms=terms, spec=SPEC, originals=originals)
        return {s.site: c.status for s, c in pairs}

    assert statuses(None)[ally] is Reason.DUPLICATE  # the reading before session 56
    now = statuses(read)
    assert now[ally] is Reason.OK and now[colluder] is Reason.OK


def test_a_weighted_copy_of_an_update_the_validators_read_still_fails(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: the validators read the colluder's update (a positive median) and weight
    the later copy too: ``duplicates`` names it, in verify and the reader."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    r, _, ally = _griefed_round(pf, store, ipfs_api, monkeypatch, held=False)
    checks = _checks(pf, store, r)
    assert not checks["duplicates"].passed
    assert ally[:10] in checks["duplicates"].detail
    row = reader_results(pf, anvil_url, ipfs_api)[(r, "duplicates")]
    assert row["result"] == "FAIL" and "'c2'" in row["detail"], row


def test_a_log_that_calls_an_update_not_read_while_scored_tampered_fails(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Session 56 review: the statuses of the updates not read while the round was scored are
    not the audit's reading alone (the honest ``malformed`` above passes), but a log that calls
    the colluder's ``PEER_REJECTED`` update, whose blob reads, matches its sha256 and decodes
    at audit time, ``tampered`` accuses it falsely: ``log.status`` fails, in verify and the
    reader (before: both passed it, every other check passing too)."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    r, colluder, _ = _griefed_round(pf, store, ipfs_api, monkeypatch, held=True, logged="tampered")
    checks = _checks(pf, store, r)
    failed = {name: c.detail for name, c in checks.items() if c.failed}
    assert set(failed) == {"log.status"}, failed
    assert f"{colluder[:10]} status 'tampered', read as ok" in failed["log.status"]
    row = reader_results(pf, anvil_url, ipfs_api)[(r, "log.status")]
    assert row["result"] == "FAIL" and "'tampered', read as ok" in row["detail"], row
