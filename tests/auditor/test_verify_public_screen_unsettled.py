"""``peers.screen`` in a peer round that is never finalized: left valued, or cancelled after
its valuation. ``dropScreened`` has no deadline and zeroes its sites' pay and reputation at
once, so a drop there is checked as in a finalized round (README *Peer rounds*): every update
dropped as screened must be one the public screen marks, and only under terms with
``public_screen`` and ``standing``; the spared part waits for the finalize. Session 54's
adversarial review found verify passing each of these rounds (no ``peers.screen`` at all);
verify and the independent reader now fail them, naming the check and the site."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from fedtrail.auditor.verify import verify_round
from fedtrail.chain import advance_time, block_timestamp
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.storage.store import IpfsStore
from tests.auditor.peer_federation import PeerFed, new_peer_federation, peer_round, reader_results
from tests.auditor.test_verify_public_screen import (  # noqa: F401 (public: a fixture)
    TINY,
    _hospitals,
    public,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _LeftValued(Exception):
    """Raised once the round is valued: the aggregator never finalizes it."""


def _left_valued(
    pf: PeerFed,
    seed: int,
    valued: Callable[[int], None],
    scales: dict[str, float] | None = None,
    phase: Phase = Phase.VALUED,
) -> int:
    """A peer round run to its valuation, ``valued`` (the aggregator's drops) run, and then
    never finalized: left valued for good, or in ``phase`` (what ``valued`` left it in)."""
    seen: list[int] = []

    def run(r: int) -> None:
        seen.append(r)
        valued(r)
        raise _LeftValued

    with pytest.raises(_LeftValued):
        peer_round(pf, seed=seed, valued=run, scales=scales)
    assert pf.fed.ledger.get_round(seen[0]).phase == phase
    return seen[0]


def _drop(pf: PeerFed, r: int, *sites: str) -> None:
    ledger = pf.fed.ledger
    every = [s.site for s in ledger.get_submissions(r)]
    ledger.drop_screened(pf.fed.coordinator, r, every, list(sites))


def _withdraw(ipfs_api: str, cid: str) -> None:
    """The blob's site stops serving it: unpinned and removed from the only node."""
    host, port = re.fullmatch(r"/ip4/([^/]+)/tcp/(\d+)/http", ipfs_api).groups()  # type: ignore[union-attr]
    api = f"http://{host}:{port}/api/v0/"
    requests.post(api + "pin/rm", params={"arg": cid}, timeout=30)
    requests.post(api + "block/rm", params={"arg": cid}, timeout=30).raise_for_status()


def _screen(pf: PeerFed, store: IpfsStore, r: int) -> tuple[bool, str]:
    audit = verify_round(pf.fed.ledger, store, r)
    checks = {c.name: c for c in audit.checks}
    assert "peers.screen" in checks, [c.name for c in audit.checks]
    return checks["peers.screen"].passed, checks["peers.screen"].detail


@pytest.mark.usefixtures("public")
def test_an_honest_drop_in_a_round_left_valued_passes(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """The free-rider the screen marks, dropped, and the round never finalized: the drop is
    re-checked now, and passes in verify and the reader."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    rider = _hospitals(pf)[0]
    r = _left_valued(pf, 5, lambda r: _drop(pf, r, rider), scales={rider: TINY})
    subs = {s.site: s for s in pf.fed.ledger.get_submissions(r)}
    assert (subs[rider].reason, subs[rider].weight) == (Reason.FREE_RIDER, 0)
    audit = verify_round(pf.fed.ledger, store, r)
    assert audit.passed, [(c.name, c.detail) for c in audit.checks if not c.passed]
    detail = {c.name: c.detail for c in audit.checks}["peers.screen"]
    assert "marks 1 update(s)" in detail and rider[:10] in detail
    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[(r, "peers.screen")]["result"] == "PASS", results[(r, "peers.screen")]


@pytest.mark.usefixtures("public")
def test_a_rival_dropped_in_a_round_left_valued_fails(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """Repro s54-rev test_valued_drop: an honest update zeroed with dropScreened, and the
    round never finalized (the next round cannot open, so it is the federation's last)."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    rival = _hospitals(pf)[1]
    r = _left_valued(pf, 5, lambda r: _drop(pf, r, rival))
    passed, detail = _screen(pf, store, r)
    assert not passed and "zeroed" in detail and rival[:10] in detail, detail
    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[(r, "peers.screen")]["result"] == "FAIL", results[(r, "peers.screen")]


def test_a_drop_without_the_option_fails_in_a_round_left_valued(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """Repro s54-rev test_valued_noopt: terms without ``public_screen``, a drop all the same."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    rival = _hospitals(pf)[1]
    r = _left_valued(pf, 5, lambda r: _drop(pf, r, rival))
    passed, detail = _screen(pf, store, r)
    assert not passed and "no public screen" in detail and rival[:10] in detail, detail
    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[(r, "peers.screen")]["result"] == "FAIL", results[(r, "peers.screen")]


@pytest.mark.usefixtures("public")
def test_honest_sites_dropped_then_the_round_cancelled_fails(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """Repro s54-rev test_cancel_drop: two honest updates dropped as screened, the ally left
    weighted withholds its blob, and the aggregator cancels. ``peers.cancelled`` passes (every
    weighted update is unreadable now), so only ``peers.screen`` can catch the drop, whose
    reputation loss the cancel keeps."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    h0, h1, ally = _hospitals(pf)

    def drop_and_cancel(r: int) -> None:
        _drop(pf, r, h0, h1)
        _withdraw(ipfs_api, {s.site: s for s in ledger.get_submissions(r)}[ally].cid)
        peer = ledger.get_peer_round(r)
        assert peer is not None
        deadline = peer.score_reveal_deadline
        advance_time(ledger.w3, deadline - block_timestamp(ledger.w3) + 1)
        ledger.cancel_round(pf.fed.coordinator, r)

    r = _left_valued(pf, 5, drop_and_cancel, phase=Phase.CANCELLED)
    subs = {s.site: s for s in ledger.get_submissions(r)}
    assert [subs[h].reason for h in (h0, h1)] == [Reason.FREE_RIDER] * 2
    audit = verify_round(ledger, store, r)
    checks = {c.name: c for c in audit.checks}
    assert checks["peers.cancelled"].passed, checks["peers.cancelled"].detail
    assert not audit.passed
    detail = checks["peers.screen"].detail
    assert not checks["peers.screen"].passed and h0[:10] in detail and h1[:10] in detail, detail
    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[(r, "peers.screen")]["result"] == "FAIL", results[(r, "peers.screen")]


@pytest.mark.usefixtures("public")
def test_a_dropped_update_that_no_longer_reads_fails_as_unchecked(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """A drop that cannot be re-checked does not pass: the free-rider's blob withdrawn after
    an honest drop, in a round left valued, leaves no update for the screen to mark."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    rider = _hospitals(pf)[0]

    def drop_and_withdraw(r: int) -> None:
        _drop(pf, r, rider)
        _withdraw(ipfs_api, {s.site: s for s in ledger.get_submissions(r)}[rider].cid)

    r = _left_valued(pf, 5, drop_and_withdraw, scales={rider: TINY})
    passed, detail = _screen(pf, store, r)
    assert not passed and "does not read now" in detail and rider[:10] in detail, detail
    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[(r, "peers.screen")]["result"] == "FAIL", results[(r, "peers.screen")]


@pytest.mark.usefixtures("public")
def test_a_drop_whose_inputs_are_withdrawn_before_a_cancel_fails_unchecked(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """The free-rider the screen marks dropped, then every weighted site withholds its blob and
    the aggregator cancels: the screen's inputs (the updates with a positive median) no longer
    read, so no one can re-check the drop, and an unchecked drop fails rather than passes
    (an honest aggregator pins the inputs before it screens)."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    rider, h1, h2 = _hospitals(pf)

    def drop_and_cancel(r: int) -> None:
        _drop(pf, r, rider)
        subs = {s.site: s for s in ledger.get_submissions(r)}
        for site in (h1, h2):
            _withdraw(ipfs_api, subs[site].cid)
        peer = ledger.get_peer_round(r)
        assert peer is not None
        advance_time(ledger.w3, peer.score_reveal_deadline - block_timestamp(ledger.w3) + 1)
        ledger.cancel_round(pf.fed.coordinator, r)

    r = _left_valued(pf, 5, drop_and_cancel, scales={rider: TINY}, phase=Phase.CANCELLED)
    audit = verify_round(ledger, store, r)
    failed = {c.name: c.detail for c in audit.checks if not c.passed}
    assert set(failed) == {"peers.screen"}, failed
    assert "cannot be recomputed" in failed["peers.screen"], failed
    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[(r, "peers.screen")]["result"] == "FAIL", results[(r, "peers.screen")]
