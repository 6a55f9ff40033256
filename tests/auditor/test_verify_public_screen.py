"""``peers.screen`` (round terms ``valuation.public_screen``): the free-rider screen runs once
a round in public, the aggregator drops the weighted updates it marks (``dropScreened``), and
``audit verify`` recomputes it from chain and store. An aggregator that zeroes a rival's update
with the call, or spares an ally's free-ride, fails the check, which names the site; so does
the call in a round whose terms have no public screen."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import address_key
from fedtrail.storage.store import ContentStore, IpfsStore, LocalStore
from fedtrail.valuation.combine import Combiner
from tests.auditor import peer_federation
from tests.auditor.peer_federation import PeerFed, new_peer_federation, peer_round

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = 1e-7
"""The free-rider's entries: ~1e-5 of the hospitals' update norm, far below the screen's floor
(``MIN_UPDATE_TO_MODEL_NORM`` of the global model, ``free_rider_norm`` of the median update)."""


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Peer rounds under terms with standing and the public screen (the noise tests off: the
    hand-made updates are Gaussian noise)."""
    monkeypatch.setitem(peer_federation.PEER_VALUATION, "standing", True)
    monkeypatch.setitem(peer_federation.PEER_VALUATION, "public_screen", True)
    monkeypatch.setitem(
        peer_federation.PEER_VALUATION,
        "combiner",
        asdict(Combiner(white_noise_z=0.0, shaped_noise_z=0.0)),
    )
    yield


def _hospitals(pf: PeerFed) -> list[str]:
    return sorted((s.address for s in pf.fed.sites), key=address_key)


READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"


def _reader_results(pf: PeerFed, rpc_url: str, ipfs_api: str) -> dict[tuple[int, str], Any]:
    """scripts/independent/reader.py (written from README) over the whole ledger."""
    spec = importlib.util.spec_from_file_location("independent_reader_screen", READER)
    assert spec is not None and spec.loader is not None
    reader: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    reader.RESULTS.clear()
    argv = ["--rpc-url", rpc_url, "--contract", pf.fed.ledger.address, "--ipfs", "ipfs:" + ipfs_api]
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(argv)
    return {(x["round"], x["check"]): x for x in reader.RESULTS}


def _checks(pf: PeerFed, store: ContentStore, r: int) -> dict[str, Any]:
    return {c.name: c for c in verify_round(pf.fed.ledger, store, r).checks}


def test_the_public_screen_is_recomputed_and_a_rigged_drop_is_named(
    anvil_url: str, ipfs_api: str, tmp_path: Path, public: None
) -> None:
    """Verify and the independent reader agree round by round: an honest drop passes, a spared
    ally and a zeroed rival fail ``peers.screen``, each named."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    rider, honest, ally = _hospitals(pf)[0], _hospitals(pf)[1], _hospitals(pf)[2]

    def drop(*sites: str) -> Any:
        def run(r: int) -> None:
            every = [s.site for s in ledger.get_submissions(r)]
            ledger.drop_screened(pf.fed.coordinator, r, every, list(sites))

        return run

    # an honest aggregator: it drops the free-rider the screen marks, and only it
    r_honest = r = peer_round(pf, seed=5, scales={rider: TINY}, valued=drop(rider))
    subs = {s.site: s for s in ledger.get_submissions(r)}
    assert (subs[rider].reason, subs[rider].weight) == (Reason.FREE_RIDER, 0)
    assert subs[honest].weight > 0 and subs[ally].weight > 0
    audit = verify_round(ledger, store, r)
    assert audit.passed, [(c.name, c.detail) for c in audit.checks if not c.passed]
    checks = {c.name: c for c in audit.checks}
    assert rider[:10] in checks["peers.screen"].detail
    assert "marks 1 update(s)" in checks["peers.screen"].detail
    assert checks["peers.median"].passed, checks["peers.median"].detail

    # it spares its ally's free-ride: the round finalizes with the ally weighted
    r_spared = r = peer_round(pf, seed=6, scales={ally: TINY})
    assert {s.site: s for s in ledger.get_submissions(r)}[ally].weight > 0
    checks = _checks(pf, store, r)
    assert not checks["peers.screen"].passed
    assert "spared" in checks["peers.screen"].detail and ally[:10] in checks["peers.screen"].detail

    # it zeroes a rival's honest update with the call, beside the real free-rider
    r_rival = r = peer_round(pf, seed=7, scales={rider: TINY}, valued=drop(rider, honest))
    checks = _checks(pf, store, r)
    assert not checks["peers.screen"].passed
    detail = checks["peers.screen"].detail
    assert "zeroed" in detail and honest[:10] in detail and rider[:10] not in detail
    assert "spared" not in detail
    assert checks["peers.median"].passed, checks["peers.median"].detail  # the drop is on chain

    results = _reader_results(pf, anvil_url, ipfs_api)
    assert results[(r_honest, "peers.screen")]["result"] == "PASS"
    assert results[(r_spared, "peers.screen")]["result"] == "FAIL"
    assert results[(r_rival, "peers.screen")]["result"] == "FAIL"
    for r in (r_honest, r_spared, r_rival):
        for check in ("peers.median", "reputation"):
            assert results[(r, check)]["result"] == "PASS", results[(r, check)]


def test_a_screen_drop_without_the_terms_option_fails(anvil_url: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    victim = _hospitals(pf)[1]

    def drop(r: int) -> None:
        every = [s.site for s in ledger.get_submissions(r)]
        ledger.drop_screened(pf.fed.coordinator, r, every, [victim])

    r = peer_round(pf, seed=5, valued=drop)
    checks = _checks(pf, store, r)
    assert not checks["peers.screen"].passed
    assert victim[:10] in checks["peers.screen"].detail
    assert "no public screen" in checks["peers.screen"].detail


def test_a_screen_drop_under_the_key_without_standing_fails_in_verify_and_the_reader(
    anvil_url: str, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The public screen needs ``standing`` too (README *Peer rounds*): terms that carry the key
    without it have no screen, so any ``dropScreened`` there fails. The reader looked at the key
    alone, ran no screen (its rule needs standing) and left the drop unchecked: a rival zeroed
    passed it while verify failed."""
    monkeypatch.setitem(peer_federation.PEER_VALUATION, "public_screen", True)
    monkeypatch.setitem(peer_federation.PEER_VALUATION, "standing", False)
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    victim = _hospitals(pf)[1]

    def drop(r: int) -> None:
        every = [s.site for s in ledger.get_submissions(r)]
        ledger.drop_screened(pf.fed.coordinator, r, every, [victim])

    r = peer_round(pf, seed=5, valued=drop)
    checks = _checks(pf, store, r)
    assert not checks["peers.screen"].passed and victim[:10] in checks["peers.screen"].detail
    results = _reader_results(pf, anvil_url, ipfs_api)
    assert results[(r, "peers.screen")]["result"] == "FAIL", results.get((r, "peers.screen"))
