"""``peers.screen`` (round terms ``valuation.public_screen``): the free-rider screen runs once
a round in public, the aggregator drops the weighted updates it marks (``dropScreened``), and
``audit verify`` recomputes it from chain and store. An aggregator that zeroes a rival's update
with the call, or spares an ally's free-ride, fails the check, which names the site; so does
the call in a round whose terms have no public screen."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import requests

from fedtrail.auditor.verify import verify_round
from fedtrail.chain import dev_account
from fedtrail.errors import FedtrailError
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import address_key
from fedtrail.storage.cid import sha256_hex
from fedtrail.storage.store import ContentStore, IpfsStore, LocalStore
from fedtrail.valuation.combine import Combiner
from tests.auditor import peer_federation
from tests.auditor.peer_federation import PeerFed, new_peer_federation, peer_round, reader_results

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
        asdict(Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0)),
    )
    yield


def _hospitals(pf: PeerFed) -> list[str]:
    return sorted((s.address for s in pf.fed.sites), key=address_key)


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

    results = reader_results(pf, anvil_url, ipfs_api)
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
    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[(r, "peers.screen")]["result"] == "FAIL", results.get((r, "peers.screen"))


def _withdraw(ipfs_api: str, cid: str) -> None:
    """Takes ``cid`` out of the test daemon (its site stops serving the blob)."""
    parts = ipfs_api.strip("/").split("/")  # /ip4/HOST/tcp/PORT[/http]
    api = f"http://{parts[1]}:{parts[3]}/api/v0/"
    requests.post(api + "pin/rm", params={"arg": cid}, timeout=30)
    requests.post(api + "block/rm", params={"arg": cid}, timeout=30).raise_for_status()


def _colluded_round(
    pf: PeerFed, store: IpfsStore, ipfs_api: str, *, drop_ally: bool
) -> tuple[int, str]:
    """Session 54's review, MEDIUM 4: a peer round under the public screen where a new site
    (the ally: no previous update to compare with) sends 0.95% of the hospitals' update norm
    and two colluders reveal half-norm updates nobody can read while the round is scored (every
    validator scores them 0: PEER_REJECTED), then serve them once the aggregator screened
    (``drop_ally``: it drops the ally, as the screen of what it read marks it). Returns the
    round and the ally's address; the colluders' updates read at audit time."""
    ledger = pf.fed.ledger
    ally, *colluders = (dev_account(i) for i in (5, 6, 7))
    for account, name in ((ally, "ally"), (colluders[0], "c1"), (colluders[1], "c2")):
        ledger.register_site(pf.fed.coordinator, account.address, name, 10_000)
        pf.fed.sites.append(account)
        pf.validators.append(account)
    late = [c.address for c in colluders]
    held: list[tuple[str, bytes]] = []

    def unserve(r: int) -> None:  # after the reveals, before anyone scores
        subs = {s.site: s for s in ledger.get_submissions(r)}
        held.extend((subs[a].cid, store.get(subs[a].cid, subs[a].sha256)) for a in late)
        for cid, _ in held:
            _withdraw(ipfs_api, cid)

    def screened_then_served(r: int) -> None:
        for cid, blob in held:  # unreadable while the aggregator screens
            with pytest.raises(FedtrailError):
                store.get(cid, sha256_hex(blob))
        if drop_ally:
            every = [s.site for s in ledger.get_submissions(r)]
            ledger.drop_screened(pf.fed.coordinator, r, every, [ally.address])
        for cid, blob in held:  # served from now on
            assert store.put(blob) == cid

    r = peer_round(
        pf,
        seed=11,
        scales={ally.address: 0.01 * 0.0095, **{a: 0.005 for a in late}},
        unread=late,
        during=unserve,
        valued=screened_then_served,
    )
    subs = {s.site: s for s in ledger.get_submissions(r)}
    assert all(subs[a].reason == Reason.PEER_REJECTED for a in late)
    for cid, blob in held:
        assert store.get(cid, sha256_hex(blob)) == blob  # readable at audit time
    return r, ally.address


def test_an_honest_drop_passes_when_colluders_serve_their_updates_after_the_finalize(
    anvil_url: str, ipfs_api: str, tmp_path: Path, public: None
) -> None:
    """(a) Read at audit time, the colluders' half-norm updates lowered the median norm, so the
    honest aggregator's drop of the ally failed ``peers.screen`` in verify and the reader (a
    griefing it could not avoid). The screen's inputs are the chain's (a positive peer median,
    not dropped as withheld): the late updates are no input."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    r, ally = _colluded_round(pf, store, ipfs_api, drop_ally=True)
    checks = _checks(pf, store, r)
    assert checks["peers.screen"].passed, checks["peers.screen"].detail
    assert ally[:10] in checks["peers.screen"].detail
    assert "marks 1 update(s)" in checks["peers.screen"].detail
    row = reader_results(pf, anvil_url, ipfs_api)[(r, "peers.screen")]
    assert row["result"] == "PASS", row


def test_a_spared_ally_fails_when_colluders_serve_their_updates_after_the_finalize(
    anvil_url: str, ipfs_api: str, tmp_path: Path, public: None
) -> None:
    """(b) The same round with the ally spared: read at audit time, the colluders' updates put
    the ally above 1% of the median, and the spare passed verify and the reader."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    r, ally = _colluded_round(pf, store, ipfs_api, drop_ally=False)
    checks = _checks(pf, store, r)
    assert not checks["peers.screen"].passed
    assert "spared" in checks["peers.screen"].detail and ally[:10] in checks["peers.screen"].detail
    assert checks["peers.median"].passed, checks["peers.median"].detail
    row = reader_results(pf, anvil_url, ipfs_api)[(r, "peers.screen")]
    assert row["result"] == "FAIL" and "spared marked ['ally']" in row["detail"], row


def test_a_reference_not_given_fails_the_screen_in_verify_and_the_reader(
    anvil_url: str, ipfs_api: str, tmp_path: Path, public: None
) -> None:
    """Session 54's review, LOW 6: a reference update the store no longer gives leaves the
    screen uncomputable in verify, the reader and the aggregator (whose finalize raises) alike;
    the reader left it out silently and passed."""
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    rider = _hospitals(pf)[0]

    def drop(r: int) -> None:
        every = [s.site for s in ledger.get_submissions(r)]
        ledger.drop_screened(pf.fed.coordinator, r, every, [rider])

    r = peer_round(pf, seed=5, scales={rider: TINY}, valued=drop)
    assert _checks(pf, store, r)["peers.screen"].passed
    _withdraw(ipfs_api, ledger.get_submissions(1)[1].cid)  # a round-1 update: a reference
    check = _checks(pf, store, r)["peers.screen"]
    assert not check.passed and "cannot be recomputed" in check.detail, check.detail
    row = reader_results(pf, anvil_url, ipfs_api)[(r, "peers.screen")]
    assert row["result"] == "FAIL" and "cannot be recomputed" in row["detail"], row
    assert "reference update" in row["detail"], row


def test_a_marked_update_whose_median_rounds_to_weight_0_is_not_a_spared_one(
    anvil_url: str, ipfs_api: str, tmp_path: Path, public: None
) -> None:
    """At the weight rule's rounding edge: the free-rider claims 1 sample and its peers' median
    is 1, beside a site claiming the largest count at the full score, so its exact share is
    below one unit of 1e-18 and the remainder unit goes to the earlier site: a positive median,
    weight 0. The contract cannot drop it (``dropScreened`` of an unweighted update reverts)
    and the finalize does not pay it, so the honest aggregator drops nothing and ``peers.screen``
    passes (the aggregator's rule, ``fedtrail.protocol.peers.screen_drop``, over the weights;
    before, verify required every marked update with a positive median dropped and failed the
    honest round)."""
    from fedtrail.protocol.codes import MAX_SITE_SAMPLES
    from fedtrail.protocol.weights import SCORE_SCALE, onchain_weights

    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    big, rider, honest = _hospitals(pf)
    ledger.set_max_samples(pf.fed.coordinator, big, MAX_SITE_SAMPLES)
    samples = {big: MAX_SITE_SAMPLES, rider: 1, honest: 200}
    want = {big: SCORE_SCALE, rider: 1, honest: 500_000}

    def vectors(sites: list[str]) -> dict[str, tuple[int, ...]]:
        return {
            v.address: tuple(0 if s == v.address else want[s] for s in sites) for v in pf.validators
        }

    edge = onchain_weights(
        [samples[s] for s in (big, rider, honest)], [want[s] for s in (big, rider, honest)]
    )
    assert edge[1] == 0 and edge[0] > 0 and edge[2] > 0  # the edge this test is about

    def cannot_drop(r: int) -> None:
        every = [s.site for s in ledger.get_submissions(r)]
        with pytest.raises(FedtrailError, match="NotWeighted"):
            ledger.drop_screened(pf.fed.coordinator, r, every, [rider])

    r = peer_round(
        pf,
        seed=8,
        scales={rider: TINY},
        samples=samples,
        vectors=vectors,
        valued=cannot_drop,
    )
    subs = {s.site: s for s in ledger.get_submissions(r)}
    assert (subs[rider].score, subs[rider].weight, subs[rider].reason) == (1, 0, Reason.OK)
    checks = _checks(pf, store, r)
    screen = checks["peers.screen"]
    assert screen.passed, screen.detail
    assert "marks 1 update(s)" in screen.detail and rider[:10] in screen.detail
    assert checks["peers.median"].passed, checks["peers.median"].detail
    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[(r, "peers.screen")]["result"] == "PASS", results[(r, "peers.screen")]


def test_a_marked_update_the_screens_drop_re_weights_must_be_dropped_too(
    anvil_url: str, ipfs_api: str, tmp_path: Path, public: None
) -> None:
    """The rounding edge, one step further (h-284): the big free-rider (the largest count, full
    score) is weighted and marked, the small one (1 sample at median 1) is marked at weight 0
    from rounding, the third update is scored 0. Dropping the big one re-derives the weights
    from the scores and gives the small one all of them: an aggregator that stops there pays a
    marked update in full, and verify and the reader passed it (their rule looked only at the
    weights before the drop). Now both fail ``peers.screen`` naming it (the honest aggregator
    cancels such a round: ``tests/aggregator/test_peer_rounds.py``)."""
    from fedtrail.protocol.codes import MAX_SITE_SAMPLES
    from fedtrail.protocol.weights import SCORE_SCALE, onchain_weights

    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    big, rider, other = _hospitals(pf)
    ledger.set_max_samples(pf.fed.coordinator, big, MAX_SITE_SAMPLES)
    samples = {big: MAX_SITE_SAMPLES, rider: 1, other: 200}
    want = {big: SCORE_SCALE, rider: 1, other: 0}

    def vectors(sites: list[str]) -> dict[str, tuple[int, ...]]:
        return {
            v.address: tuple(0 if s == v.address else want[s] for s in sites) for v in pf.validators
        }

    order = (big, rider, other)
    edge = onchain_weights([samples[s] for s in order], [want[s] for s in order])
    assert edge[1] == 0 and edge[0] > 0  # the edge: weight 0 from rounding

    def drop_big(r: int) -> None:
        every = [s.site for s in ledger.get_submissions(r)]
        ledger.drop_screened(pf.fed.coordinator, r, every, [big])

    scales = {big: TINY * 1e-5, rider: TINY * 1e-5}
    r = peer_round(pf, seed=9, scales=scales, samples=samples, vectors=vectors, valued=drop_big)
    subs = {s.site: s for s in ledger.get_submissions(r)}
    assert subs[rider].weight == 10**18 and subs[big].reason == Reason.FREE_RIDER
    screen = _checks(pf, store, r)["peers.screen"]
    assert not screen.passed and rider[:10] in screen.detail, screen.detail
    row = reader_results(pf, anvil_url, ipfs_api)[(r, "peers.screen")]
    assert row["result"] == "FAIL", row


def test_a_cancel_after_valuation_is_checked_by_verify_and_the_reader_alike(
    anvil_url: str, ipfs_api: str, tmp_path: Path, public: None
) -> None:
    """``peers.cancelled`` for a peer round cancelled after its valuation, in verify and the
    independent reader (h-284: the reader had no such check, so an aggregator that cancelled an
    honest round it disliked, every update readable and unmarked, passed the reader): a cancel
    that throws away readable unmarked updates fails both; one whose public screen marks every
    update passes both."""
    from fedtrail.chain import advance_time, block_timestamp

    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger

    def valued_then_cancelled(seed: int, scales: dict[str, float] | None) -> int:
        r = peer_federation.open_peer_round(pf, None)
        peer_federation.submit(pf, r, seed=seed, scales=scales)
        peer_federation.score_round(pf, r, None, None, ())
        peer = ledger.get_peer_round(r)
        assert peer is not None
        assert any(s.weight > 0 for s in ledger.get_submissions(r))
        advance_time(ledger.w3, peer.score_reveal_deadline - block_timestamp(ledger.w3) + 1)
        ledger.cancel_round(pf.fed.coordinator, r)
        return r

    r_censored = valued_then_cancelled(11, None)
    r_marked = valued_then_cancelled(12, dict.fromkeys(_hospitals(pf), TINY * 1e-5))
    censored = _checks(pf, store, r_censored)["peers.cancelled"]
    assert not censored.passed, censored.detail
    marked = _checks(pf, store, r_marked)["peers.cancelled"]
    assert marked.passed, marked.detail
    results = reader_results(pf, anvil_url, ipfs_api)
    row = results.get((r_censored, "peers.cancelled"))
    assert row is not None and row["result"] == "FAIL", row
    row = results.get((r_marked, "peers.cancelled"))
    assert row is not None and row["result"] == "PASS", row


def test_an_unreadable_input_at_weight_0_is_left_out_of_the_screen_in_verify_and_the_reader(
    anvil_url: str, ipfs_api: str, tmp_path: Path, public: None
) -> None:
    """The rounding edge with the small update unreadable (session 61, h-291): the big
    free-rider is weighted and marked, the small one (1 sample at median 1, an honest delta)
    has weight 0 from rounding and does not read, the third is scored 0. The small one is an
    input the contract cannot drop as withheld (``NotWeighted``), so the screen leaves it out,
    as if withheld, in verify and the reader alike: the big one's drop would re-weight the
    unreadable small one, which would then have to be dropped too, leaving no weight, so a
    cancel passes both (before, both failed it: a weighted update reads), and a finalize that
    pays the marked big one fails ``peers.screen`` in both. The same cancel with the small
    update readable (an aggregator that only claims it unreadable) fails both: to them it is
    an input, the screen spares it, and the drop would leave it weighted."""
    from fedtrail.chain import advance_time, block_timestamp
    from fedtrail.protocol.codes import MAX_SITE_SAMPLES
    from fedtrail.protocol.weights import SCORE_SCALE, onchain_weights

    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    big, small, other = _hospitals(pf)
    ledger.set_max_samples(pf.fed.coordinator, big, MAX_SITE_SAMPLES)
    samples = {big: MAX_SITE_SAMPLES, small: 1, other: 200}
    want = {big: SCORE_SCALE, small: 1, other: 0}
    order = (big, small, other)
    assert onchain_weights([samples[s] for s in order], [want[s] for s in order])[1] == 0

    def vectors(sites: list[str]) -> dict[str, tuple[int, ...]]:
        return {
            v.address: tuple(0 if s == v.address else want[s] for s in sites) for v in pf.validators
        }

    scales = {big: TINY * 1e-5}

    def valued_then_cancelled(seed: int, tamper: str | None) -> int:
        r = peer_federation.open_peer_round(pf, None)
        peer_federation.submit(pf, r, seed=seed, tamper=tamper, scales=scales, samples=samples)
        peer_federation.score_round(pf, r, vectors=vectors)
        peer = ledger.get_peer_round(r)
        assert peer is not None
        subs = {s.site: s for s in ledger.get_submissions(r)}
        assert (subs[big].weight, subs[small].weight, subs[small].score) == (10**18, 0, 1)
        advance_time(ledger.w3, peer.score_reveal_deadline - block_timestamp(ledger.w3) + 1)
        ledger.cancel_round(pf.fed.coordinator, r)
        return r

    r_left = valued_then_cancelled(21, small)
    r_claimed = valued_then_cancelled(22, None)
    r_paid = peer_round(pf, seed=23, tamper=small, scales=scales, samples=samples, vectors=vectors)
    left = _checks(pf, store, r_left)["peers.cancelled"]
    assert left.passed and "left out" in left.detail and small[:10] in left.detail, left.detail
    claimed = _checks(pf, store, r_claimed)["peers.cancelled"]
    assert not claimed.passed, claimed.detail
    paid = _checks(pf, store, r_paid)["peers.screen"]
    assert not paid.passed and big[:10] in paid.detail, paid.detail
    results = reader_results(pf, anvil_url, ipfs_api)
    row = results.get((r_left, "peers.cancelled"))
    assert row is not None and row["result"] == "PASS", row
    row = results.get((r_claimed, "peers.cancelled"))
    assert row is not None and row["result"] == "FAIL", row
    row = results.get((r_paid, "peers.screen"))
    assert row is not None and row["result"] == "FAIL", row
