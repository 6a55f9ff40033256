"""Peer rounds from the aggregator's side (issue 14) on Anvil + IPFS: the service opens a peer
round under terms that name the mode, quorum and score windows, never values it itself, has the
contract record the medians of the sites' revealed score vectors, aggregates with the chain's
weights and logs the votes; a round whose quorum is not met is cancelled after the score
deadline; a quorum no round could meet is refused before a round opens."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.cli import cli
from fedtrail.errors import ConfigError, ContentNotFound, FedtrailError, StoreError
from fedtrail.node.scoring import PeerScorer
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.peers import GateUndecided, address_key
from fedtrail.protocol.roundlog import RoundLog, ValuationSettings
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.faults import SiteFault
from tests.aggregator.peer_setup import pass_deadline, peer_federation

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
]


def _invoke_in_process(args: list[str]) -> Result:
    """Runs the CLI in this process, then undoes what a daemon command sets up for its own
    process (log handlers on the ``fedtrail`` logger, SIGTERM/SIGINT handlers)."""
    logger = logging.getLogger("fedtrail")
    handlers, level = list(logger.handlers), logger.level
    signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return CliRunner().invoke(cli, args)
    finally:
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(level)
        for number, previous in signals.items():
            signal.signal(number, previous)


def test_peer_round_end_to_end_scores_are_the_medians_of_the_chain_votes(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    # sites 0 and 1 honest, 2 sign-flipped; 3 sends no update but validates
    fed = peer_federation(
        tmp_path,
        anvil_url,
        ipfs_api,
        sites=4,
        faults=[SiteFault(), SiteFault(), SiteFault(kind="sign_flip"), SiteFault()],
    )
    ledger, service, store = fed.ledger, fed.service, fed.store
    trainers, validators = fed.nodes[:3], fed.nodes
    r = service.open_next()
    info = ledger.get_round(r)
    peer = ledger.get_peer_round(r)
    terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
    valuation = ValuationSettings.from_json(terms.valuation)
    assert peer is not None and valuation.mode == "peers"
    assert valuation.quorum == peer.quorum == 3  # a majority of 4 active sites
    assert valuation.validator_game == "linear_shapley"  # the aggregator's default
    assert terms.score_commit_seconds == terms.score_reveal_seconds == terms.reveal_seconds
    assert peer.score_commit_deadline == info.reveal_deadline + terms.score_commit_seconds
    for n in trainers:
        n.participate(r)  # train, commit
    pass_deadline(ledger, info.commit_deadline)
    for n in trainers:
        assert n.participate(r).phase == "revealed"  # type: ignore[union-attr]
    # every update is in, but a peer round waits for the sites' votes, never values itself
    assert service.step() is None
    assert ledger.get_round(r).phase == Phase.OPEN
    assert [n.scorer.score(r) for n in validators] == [None] * 4  # reveal window still open
    pass_deadline(ledger, info.reveal_deadline)
    assert [n.scorer.score(r).phase for n in validators] == ["committed"] * 4  # type: ignore[union-attr]
    assert not service.ready_to_combine(r) and service.step() is None
    pass_deadline(ledger, peer.score_commit_deadline)
    assert [n.scorer.score(r).phase for n in validators] == ["revealed"] * 4  # type: ignore[union-attr]
    assert service.ready_to_combine(r)  # every site active at open voted: no need to wait
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED

    subs = ledger.get_submissions(r)
    votes = ledger.peer_votes(r)
    sites = [s.site for s in subs]
    assert sites == sorted(sites, key=address_key)
    assert sorted(sites) == sorted(n.address for n in trainers)
    assert {v.validator for v in votes} == {n.address for n in validators}
    for n in validators:  # each vector on chain is the one the node scored and recorded
        (vote,) = [v for v in votes if v.validator == n.address]
        assert list(vote.scores) == n.scorer.state.rounds[r].scores
        assert len(vote.scores) == 3
        assert n.scorer.state.rounds[r].game == valuation.validator_game  # the terms' game
    expected = ledger.peer_outcome(r)
    assert expected.sites == tuple(sites)
    assert [s.score for s in subs] == list(expected.scores)
    assert [Reason(s.reason) for s in subs] == list(expected.reasons)
    assert sum(s.weight for s in subs) == 10**18
    # the aggregator scored nothing itself
    assert not (service.folder / f"valuation-{r}.json").exists()

    final = ledger.get_round(r)
    record = RoundLog.from_bytes(store.get(final.log_cid, final.log_sha256))
    assert record.peer_votes == tuple(votes)
    assert record.standing is None
    assert record.settings.valuation.mode == "peers"
    for entry, sub, count in zip(record.sites, subs, expected.peer_counts, strict=True):
        assert entry.components == {"peer_median": sub.score, "peer_count": count}
        assert count == 3  # the other three validators, never the site itself
        assert f"median of the {count} other validator" in (entry.explanation or "")

    flipper = fed.nodes[2].address
    by_site = {s.site: s.score for s in subs}
    honest = [by_site[n.address] for n in fed.nodes[:2]]
    assert by_site[flipper] < min(honest), by_site
    # an auditor with no validation split finds the round consistent with chain and IPFS
    audits = verify_all(ledger, store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if c.failed]
    # the next round opens from the global model the chain's weights made
    service.step()
    assert ledger.get_round(r + 1).start_sha256 == final.global_sha256


def test_quorum_not_met_cancels_after_the_score_deadline(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3, peer_quorum=3)
    ledger, service = fed.ledger, fed.service
    r = service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None and peer.quorum == 3
    for n in fed.nodes[:2]:
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in fed.nodes[:2]:
        n.participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    fed.nodes[0].scorer.score(r)  # one validator of the three votes
    # another holds no validation split (an image-folder site): it abstains, with the reason
    blind = PeerScorer(
        ledger=ledger,
        store=fed.store,
        account=fed.nodes[1].account,
        spec=fed.nodes[1].config.model,
        folder=tmp_path / "blind",
        val=None,
    )
    abstained = blind.score(r)
    assert abstained is not None and abstained.phase == "skipped"
    assert "no validation split" in abstained.note and blind.done(r)
    pass_deadline(ledger, peer.score_commit_deadline)
    fed.nodes[0].scorer.score(r)
    assert service.step() is None  # the score reveal window is still open: others may vote
    with pytest.raises(FedtrailError, match="is a peer round"):
        service.value(r)  # the aggregator never values a peer round on its own split
    assert ledger.get_round(r).phase == Phase.OPEN
    pass_deadline(ledger, peer.score_reveal_deadline)
    with caplog.at_level(logging.WARNING, logger="fedtrail.aggregator"):
        outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.CANCELLED
    assert ledger.get_round(r).phase == Phase.CANCELLED
    assert "quorum not met: 1 score vector(s) revealed, quorum 3" in caplog.text


def test_a_round_the_reputation_gate_cannot_decide_is_cancelled_after_the_score_deadline(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the rule raises GateUndecided (the contract's revert: exactly half of the voters
    pass the reputation gate, or a majority below the quorum) the service posts no valuation
    and cancels the round once the score reveal deadline passed, with the reason logged. The
    chain's standing here passes everyone, so the refusal is injected into the ledger's rule;
    the contract's own refusal is tested in tests/contracts/test_peer_valuation_probes.py."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, _, peer = _scored_peer_round(fed)

    def undecided(*args: Any, **kwargs: Any) -> Any:
        raise GateUndecided(passed=1, votes=2, quorum=2)

    monkeypatch.setattr(ledger, "peer_outcome", undecided)
    assert service.step() is None  # every validator revealed, but the round is not valued
    assert ledger.get_round(r).phase == Phase.OPEN
    pass_deadline(ledger, peer.score_reveal_deadline)
    with caplog.at_level(logging.WARNING, logger="fedtrail.aggregator"):
        outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.CANCELLED
    assert ledger.get_round(r).phase == Phase.CANCELLED
    assert "1 of 2 revealed validator(s) pass the reputation gate (exactly half)" in caplog.text


def test_a_quorum_above_the_active_sites_is_refused_before_opening(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=2, peer_quorum=3)
    with pytest.raises(ConfigError, match="peer quorum 3 is above the 2 active site"):
        fed.service.open_next()
    assert fed.ledger.current_round() == 0
    # the same refusal through `aggregator run --valuation-mode peers --peer-quorum 3`
    result = _invoke_in_process(
        [
            "aggregator",
            "run",
            "--rpc-url",
            anvil_url,
            "--contract",
            fed.ledger.address,
            "--dev-account",
            "0",
            "--store",
            f"ipfs:{ipfs_api}",
            "--valuation-mode",
            "peers",
            "--peer-quorum",
            "3",
            "--threads",
            "1",
            "--folder",
            str(tmp_path / "cli"),
        ],
    )
    assert result.exit_code != 0
    assert "peer quorum 3 is above the 2 active site" in result.output
    assert fed.ledger.current_round() == 0
    with pytest.raises(ConfigError, match="valuation_mode"):
        AggregatorSettings(valuation_mode="committee")
    with pytest.raises(ConfigError, match="peer_quorum"):
        AggregatorSettings(valuation_mode="peers", peer_quorum=0)


class Crash(FedtrailError):
    """Stands for the aggregator's process dying at a step (raised by the step hook)."""


def _crash_at_valued(name: str) -> None:
    if name == "valued":
        raise Crash(name)


def test_a_crash_after_the_peer_valuation_resumes_to_finalize_once(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """The service dies right after recordPeerValuation is mined (its step hook): a fresh
    service over the same folder finalizes the round from the chain's weights and votes."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger = fed.ledger
    r = fed.service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    for n in fed.nodes[:2]:
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in fed.nodes[:2]:
        n.participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    for n in fed.nodes:
        n.scorer.score(r)
    pass_deadline(ledger, peer.score_commit_deadline)
    for n in fed.nodes:
        n.scorer.score(r)
    old = fed.service
    dying = AggregatorService(
        ledger=ledger,
        store=fed.store,
        account=old.account,
        validation=old.validation,
        settings=old.settings,
        folder=old.folder,
        at_step=_crash_at_valued,
    )
    with pytest.raises(Crash):
        dying.step()
    assert ledger.get_round(r).phase == Phase.VALUED
    fresh = AggregatorService(
        ledger=ledger,
        store=fed.store,
        account=old.account,
        validation=old.validation,
        settings=old.settings,
        folder=old.folder,
    )
    outcome = fresh.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    final = ledger.get_round(r)
    record = RoundLog.from_bytes(fed.store.get(final.log_cid, final.log_sha256))
    assert record.peer_votes == tuple(ledger.peer_votes(r))
    assert len(record.peer_votes) == 3
    assert [e.score for e in record.sites] == [s.score for s in ledger.get_submissions(r)]


class _Withholding:
    """The store as seen once sites withhold their blobs: these CIDs are no longer retrievable."""

    def __init__(self, store: Any, *cids: str) -> None:
        self._store, self._cids = store, set(cids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get(self, cid: str, sha256: str, **kwargs: Any) -> bytes:
        if cid in self._cids:
            raise ContentNotFound(f"{cid} is not retrievable (withheld)")
        return bytes(self._store.get(cid, sha256, **kwargs))


def _scored_peer_round(fed: Any) -> tuple[int, Any, Any]:
    """Opens a peer round in which every node submits, scores and reveals; returns the round,
    its info and its peer info (nothing valued yet)."""
    ledger, service = fed.ledger, fed.service
    r = service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    for n in fed.nodes:
        n.scorer.score(r)
    pass_deadline(ledger, peer.score_commit_deadline)
    for n in fed.nodes:
        n.scorer.score(r)
    return r, info, peer


def test_a_weighted_update_withheld_after_the_valuation_is_dropped_and_the_round_finalizes(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A site's update is scored and weighted by its peers, but its blob never reaches the
    aggregator (served to the validators only, or withdrawn before the aggregator fetched it):
    no global model with it can be built. The service retries until the score reveal deadline,
    then drops it (``dropWithheld``: reason WITHHELD, weight 0, the other weights re-derived
    from their medians) and finalizes. Before, it cancelled the valued round: the withholding
    site threw away every other site's round at no cost to itself, and could do it every
    round. ``audit verify`` passes the drop only while the update is unreadable."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, _, peer = _scored_peer_round(fed)
    gone = max(ledger.get_submissions(r), key=lambda s: s.num_samples)
    honest_store = service.store
    service.store = _Withholding(honest_store, gone.cid)  # type: ignore[assignment]
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    valued = {s.site: s for s in ledger.get_submissions(r)}
    assert valued[gone.site].weight > 0
    assert sum(1 for s in valued.values() if s.weight > 0) >= 2
    # every validator revealed, so the round was valued before the score reveal deadline
    with caplog.at_level(logging.WARNING, logger="fedtrail.aggregator"):
        assert service.step() is None
    assert ledger.get_round(r).phase == Phase.VALUED
    assert "cannot be read back" in caplog.text and gone.site[:10] in caplog.text
    pass_deadline(ledger, peer.score_reveal_deadline)
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    after = {s.site: s for s in ledger.get_submissions(r)}
    assert (after[gone.site].score, after[gone.site].reason, after[gone.site].weight) == (
        0,
        Reason.WITHHELD,
        0,
    )
    assert ledger.peer_dropped(r) == [gone.site]
    kept = {site: s for site, s in after.items() if site != gone.site}
    assert all(s.score == valued[site].score for site, s in kept.items())  # medians stand
    assert sum(s.weight for s in after.values()) == 10**18
    # the weight went to the others in proportion to samples x score
    products = {site: s.num_samples * s.score for site, s in kept.items()}
    total = sum(products.values())
    for site, s in kept.items():
        assert abs(s.weight - products[site] * 10**18 // total) <= 1
    record = RoundLog.from_bytes(
        honest_store.get(ledger.get_round(r).log_cid, ledger.get_round(r).log_sha256)
    )
    entry = record.site(gone.site)
    assert entry is not None and entry.reason == Reason.WITHHELD and entry.weight == 0

    (audit,) = [a for a in verify_all(ledger, service.store) if a.round == r]
    assert audit.passed, [c for c in audit.checks if not c.passed]
    check = next(c for c in audit.checks if c.name == "peers.withheld")
    assert check.passed and gone.site[:10] in check.detail, check.detail
    # with the blob readable, the same drop is one the aggregator did not need
    (audit,) = [a for a in verify_all(ledger, honest_store) if a.round == r]
    failed = {c.name: c.detail for c in audit.checks if not c.passed}
    assert "peers.withheld" in failed, failed
    assert "read(s) and decode(s) now" in failed["peers.withheld"]
    # peers.withheld alone names it: an update not read while the round was scored may be
    # logged malformed whatever reads now (session 56, README *Log status*)
    assert "log.status" not in failed, failed

    service.store = honest_store  # type: ignore[assignment]
    service.step()
    final = ledger.get_round(r)
    assert ledger.get_round(r + 1).start_sha256 == final.global_sha256


def test_a_round_whose_every_weighted_update_is_withheld_is_cancelled_not_the_federation(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """When no weighted update of a valued peer round can be read back, there is nothing to
    re-weight: the service cancels the round after the score reveal deadline (before the
    valued-round cancel, it refused to aggregate forever and the federation stopped); audit
    verify passes that cancellation only while the weighted updates are unreadable, and the
    next round opens from the last finalized model."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, info, peer = _scored_peer_round(fed)
    subs = ledger.get_submissions(r)
    honest_store = service.store
    service.store = _Withholding(honest_store, *(s.cid for s in subs))  # type: ignore[assignment]
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    weighted = [s for s in ledger.get_submissions(r) if s.weight > 0]
    assert weighted
    pass_deadline(ledger, peer.score_reveal_deadline)
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.CANCELLED
    assert ledger.get_round(r).phase == Phase.CANCELLED
    assert ledger.peer_dropped(r) == []
    after = {s.site: s for s in ledger.get_submissions(r)}
    assert all(after[s.site].weight == s.weight for s in weighted)  # the valuation stays

    (audit,) = [a for a in verify_all(ledger, service.store) if a.round == r]
    check = next(c for c in audit.checks if c.name == "peers.cancelled")
    assert check.passed and weighted[0].site[:10] in check.detail, check.detail
    # with the blobs readable again, the same cancellation is one the aggregator did not need
    (audit,) = [a for a in verify_all(ledger, honest_store) if a.round == r]
    check = next(c for c in audit.checks if c.name == "peers.cancelled")
    assert not check.passed and "could have finalized" in check.detail

    service.store = honest_store  # type: ignore[assignment]
    service.step()
    assert ledger.get_round(r + 1).start_sha256 == info.start_sha256


def test_a_weighted_update_withdrawn_once_scored_does_not_stop_the_round(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """A site serves its blob while the validators fetch it and withdraws it once its peers
    weighted it, every round: before, the aggregator first read the updates at finalize,
    found the weighted one gone, and cancelled the valued round after the score reveal
    deadline: one site could cancel every round at no cost (its score and reputation stayed
    as valued). The aggregator now fetches and pins every revealed update when the scoring
    window opens, as the validators do: the round finalizes and verifies."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, _, _ = _scored_peer_round(fed)
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    gone = max(ledger.get_submissions(r), key=lambda s: s.weight)
    assert gone.weight > 0
    honest_store = service.store
    service.store = _Withholding(honest_store, gone.cid)  # type: ignore[assignment]
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    assert ledger.get_round(r).phase == Phase.FINALIZED
    service.store = honest_store  # type: ignore[assignment]
    (audit,) = [a for a in verify_all(ledger, honest_store) if a.round == r]
    assert audit.passed, [c for c in audit.checks if not c.passed]


class _FailsOnce(_Withholding):
    """The store with a transient failure: the first read of each of these CIDs times out
    (the store reports a timeout as ContentNotFound), every later one answers."""

    def get(self, cid: str, sha256: str, **kwargs: Any) -> bytes:
        if cid in self._cids:
            self._cids.discard(cid)
            raise ContentNotFound(f"{cid} not available within 10s (transient)")
        return bytes(self._store.get(cid, sha256, **kwargs))


def test_a_transient_failure_of_the_scoring_window_fetch_is_retried_before_a_drop(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """The aggregator's scoring-window fetch of a weighted update fails once (a store timeout)
    and the round is valued after the score reveal deadline, as it is whenever a validator
    does not reveal: the service must read the update again before it drops it. Before, the
    failure cached at the scoring window was the answer at finalize, with no retry at all: a
    readable update was dropped (reason WITHHELD), its site lost its weight, and the honest
    aggregator failed ``audit verify`` (``peers.withheld``: the update reads)."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, _, peer = _scored_peer_round(fed)
    flaky = max(ledger.get_submissions(r), key=lambda s: s.num_samples)
    pass_deadline(ledger, peer.score_reveal_deadline)
    honest_store = service.store
    service.store = _FailsOnce(honest_store, flaky.cid)  # type: ignore[assignment]
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    assert {s.site: s for s in ledger.get_submissions(r)}[flaky.site].weight > 0
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    assert ledger.peer_dropped(r) == []
    after = {s.site: s for s in ledger.get_submissions(r)}[flaky.site]
    assert after.reason == Reason.OK and after.weight > 0
    service.store = honest_store  # type: ignore[assignment]
    (audit,) = [a for a in verify_all(ledger, honest_store) if a.round == r]
    assert audit.passed, [c for c in audit.checks if not c.passed]


class _Pins(_Withholding):
    """The store, recording each CID pinned (and withholding ``cids`` like its parent)."""

    def __init__(self, store: Any, *cids: str) -> None:
        super().__init__(store, *cids)
        self.pins: list[str] = []

    def pin(self, cid: str) -> None:
        self._store.pin(cid)
        self.pins.append(cid)


def _fresh(fed: Any, store: Any, **kwargs: Any) -> AggregatorService:
    """A new service process over the old one's folder (a restart), on ``store``."""
    old = fed.service
    return AggregatorService(
        ledger=fed.ledger,
        store=store,
        account=old.account,
        validation=old.validation,
        settings=old.settings,
        folder=old.folder,
        **kwargs,
    )


def test_an_aggregator_restarted_after_the_peer_valuation_pins_what_it_aggregates(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """The aggregator was down through the scoring window (anyone may record the valuation):
    the process that finalizes never ran the scoring window's fetch-and-pin. It must pin the
    weighted updates it aggregates, or a site that withdraws its blob after the round leaves
    a finalized round auditors cannot re-aggregate. Before, nothing pinned them."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger = fed.ledger
    r, _, peer = _scored_peer_round(fed)
    pass_deadline(ledger, peer.score_reveal_deadline)
    subs = ledger.get_submissions(r)
    votes = ledger.peer_votes(r)
    outcome = ledger.peer_outcome(r, sites=[s.site for s in subs], votes=votes)
    ledger.record_peer_valuation(
        fed.nodes[0].account, r, [s.site for s in subs], votes, outcome.withheld
    )
    store = _Pins(fed.store)
    done = _fresh(fed, store).step()
    assert done is not None and done.phase == Phase.FINALIZED
    weighted = {s.cid for s in ledger.get_submissions(r) if s.weight > 0}
    assert weighted and weighted <= set(store.pins), (weighted, store.pins)


def test_an_aggregator_restarted_between_the_drop_and_the_finalize_finalizes_without_it(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """dropWithheld is mined, then the process dies before finalizeRound: a fresh process
    finalizes the round from the chain's re-derived weights (no second drop, no cancel), and
    the round verifies while the dropped update stays unreadable."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, _, peer = _scored_peer_round(fed)
    gone = max(ledger.get_submissions(r), key=lambda s: s.num_samples)
    withholding = _Withholding(fed.store, gone.cid)
    service.store = withholding  # type: ignore[assignment]
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    pass_deadline(ledger, peer.score_reveal_deadline)

    def die(blobs: Any) -> Any:
        raise Crash("put_many")

    withholding.put_many = die  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        service.step()
    assert ledger.peer_dropped(r) == [gone.site] and ledger.get_round(r).phase == Phase.VALUED
    done = _fresh(fed, _Withholding(fed.store, gone.cid)).step()
    assert done is not None and done.phase == Phase.FINALIZED
    assert ledger.peer_dropped(r) == [gone.site]
    (audit,) = [a for a in verify_all(ledger, _Withholding(fed.store, gone.cid)) if a.round == r]  # type: ignore[arg-type]
    assert audit.passed, [c for c in audit.checks if not c.passed]


def test_a_readable_update_dropped_in_a_round_then_cancelled_fails_peers_withheld(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """The aggregator drops a readable update (``dropWithheld``: the site is named WITHHELD on
    chain), then cancels the valued round because the updates left cannot be read. The cancel
    itself passes ``peers.cancelled`` (the weighted updates left are unreadable), so the drop
    must be checked there too: before, a cancelled round never ran ``peers.withheld`` and an
    honest site could be marked WITHHELD with a passing audit."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, _, peer = _scored_peer_round(fed)
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    subs = ledger.get_submissions(r)
    weighted = [s for s in subs if s.weight > 0]
    assert len(weighted) >= 2
    honest, *left = weighted
    pass_deadline(ledger, peer.score_reveal_deadline)
    ledger.drop_withheld(service.account, r, [s.site for s in subs], [honest.site])
    ledger.cancel_round(service.account, r)
    # the updates still weighted are withheld from the auditor; the dropped one reads
    store = _Withholding(fed.store, *(s.cid for s in left))
    (audit,) = [a for a in verify_all(ledger, store) if a.round == r]  # type: ignore[arg-type]
    checks = {c.name: c for c in audit.checks}
    assert checks["peers.cancelled"].passed, checks["peers.cancelled"].detail
    assert "peers.withheld" in checks, sorted(checks)
    assert not checks["peers.withheld"].passed
    assert honest.site[:10] in checks["peers.withheld"].detail
    # withheld from the auditor too, the same drop passes
    store = _Withholding(fed.store, *(s.cid for s in weighted))
    (audit,) = [a for a in verify_all(ledger, store) if a.round == r]  # type: ignore[arg-type]
    assert audit.passed, [c for c in audit.checks if not c.passed]


class _PinFailsOnce(_Pins):
    """The store whose first pin of each of ``flaky`` fails (a daemon timeout); ``cids`` are
    withheld once :attr:`withdrawn` is set."""

    def __init__(self, store: Any, flaky: str, *cids: str) -> None:
        super().__init__(store)
        self.flaky, self.later, self.withdrawn = {flaky}, set(cids), False

    def pin(self, cid: str) -> None:
        if cid in self.flaky:
            self.flaky.discard(cid)
            raise StoreError(f"IPFS API timed out during pin/add of {cid}")
        super().pin(cid)

    def get(self, cid: str, sha256: str, **kwargs: Any) -> bytes:
        if self.withdrawn and cid in self.later:
            raise ContentNotFound(f"{cid} is not retrievable (withdrawn)")
        return bytes(self._store.get(cid, sha256, **kwargs))


def test_a_pin_that_failed_in_the_scoring_window_is_retried_before_the_finalize(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """The scoring window's pin of a weighted update fails once (a store timeout) and its
    site then withdraws the blob: the aggregator still aggregates it (read before), so it must
    pin it before it finalizes, or the finalized round may rest on an update nobody keeps.
    Before, a failed pin was logged and never tried again."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, _, _ = _scored_peer_round(fed)
    target = max(ledger.get_submissions(r), key=lambda s: s.num_samples)
    store = _PinFailsOnce(fed.store, target.cid, target.cid)
    service.store = store  # type: ignore[assignment]
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    assert target.cid not in store.pins
    store.withdrawn = True
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    assert {s.site: s for s in ledger.get_submissions(r)}[target.site].weight > 0
    assert target.cid in store.pins


def test_a_valued_round_cancelled_while_a_weighted_update_still_reads_fails_peers_cancelled(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """Attack: one site withholds its blob once scored and the aggregator cancels the valued
    round instead of dropping that update (``dropWithheld``) and finalizing with the others:
    the honest sites lose the round and the withholder keeps the reputation credit the drop
    would have taken back. The contract allows the cancel; the service only cancels when no
    weighted update is left readable, so ``audit verify`` must hold the aggregator to that.
    Before, ``peers.cancelled`` passed as soon as *one* weighted update was unreadable."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, _, peer = _scored_peer_round(fed)
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    weighted = [s for s in ledger.get_submissions(r) if s.weight > 0]
    assert len(weighted) >= 2
    gone, *readable = weighted
    pass_deadline(ledger, peer.score_reveal_deadline)
    ledger.cancel_round(service.account, r)
    store = _Withholding(fed.store, gone.cid)
    (audit,) = [a for a in verify_all(ledger, store) if a.round == r]  # type: ignore[arg-type]
    check = next(c for c in audit.checks if c.name == "peers.cancelled")
    assert not check.passed, check.detail
    assert all(s.site[:10] in check.detail for s in readable), check.detail
    assert "dropWithheld" in check.detail, check.detail


def _rounding_edge_round(
    fed: Any,
    seed: int,
    scale: float = 0.001,
    small_scale: float | None = None,
    third_scale: float | None = None,
) -> tuple[int, Any, list[tuple[Any, str]]]:
    """Opens a peer round in which, by hand, the first two sites by address send random
    updates (entries ``scale`` x a standard normal, ``small_scale`` for the second when given):
    the first claims the largest count and its peers score it full, the second claims 1 sample
    and its peers score it 1; every site validates. With ``third_scale`` the third site sends
    one too (200 samples, scored 0.5). Returns the round, its peer record and each submitter's
    (account, CID) in address order, the big one first (nothing valued yet)."""
    import hashlib
    import secrets

    import torch

    from fedtrail.chain import dev_account
    from fedtrail.ledger import commitment
    from fedtrail.ledger.records import score_commitment
    from fedtrail.protocol.codes import MAX_SITE_SAMPLES
    from fedtrail.protocol.weights import SCORE_SCALE
    from fedtrail.storage.codec import encode_update

    ledger, service, store = fed.ledger, fed.service, fed.store
    accounts = sorted((dev_account(2 + i) for i in range(3)), key=lambda a: address_key(a.address))
    big, small = accounts[0], accounts[1]  # the remainder unit goes to the earlier address
    ledger.set_max_samples(fed.coordinator, big.address, MAX_SITE_SAMPLES)
    r = service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    gen = torch.Generator().manual_seed(seed)
    reveals = []
    senders = [(big, MAX_SITE_SAMPLES, scale), (small, 1, small_scale or scale)]
    if third_scale is not None:
        senders.append((accounts[2], 200, third_scale))
    for site, n, k in senders:
        delta = {
            name: (k * torch.randn(shape, generator=gen)).to(getattr(torch, dtype))
            for name, (shape, dtype) in service.spec.tensor_layout().items()
        }
        blob = encode_update(delta, spec=service.spec, round=r).blob
        cid, sha = store.put(blob), hashlib.sha256(blob).hexdigest()
        ledger.commit_update(site, r, commitment(site.address, r, sha, n))
        reveals.append((site, cid, sha, n))
    pass_deadline(ledger, info.commit_deadline)
    for site, cid, sha, n in reveals:
        ledger.reveal_update(site, r, cid, sha, n)
    pass_deadline(ledger, info.reveal_deadline)
    want = {big.address: SCORE_SCALE, small.address: 1, accounts[2].address: SCORE_SCALE // 2}
    sites = [site.address for site, _, _ in senders]
    salts = {v.address: secrets.token_bytes(32) for v in accounts}
    vectors = {v.address: [0 if s == v.address else want[s] for s in sites] for v in accounts}
    for v in accounts:
        ledger.commit_scores(
            v, r, score_commitment(v.address, r, vectors[v.address], salts[v.address])
        )
    pass_deadline(ledger, peer.score_commit_deadline)
    for v in accounts:
        ledger.reveal_scores(v, r, vectors[v.address], salts[v.address])
    return r, peer, [(site, cid) for site, cid, _, _ in reveals]


def test_an_update_left_at_weight_0_from_rounding_keeps_the_round_when_the_weighted_one_is_withheld(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The weight rule's rounding edge: the only weighted update claims the largest count at
    the full score, the other claims 1 sample at median 1, so its exact share is below one unit
    of 1e-18 and the remainder unit goes to the earlier site (weight 0, a positive score). The
    weighted one is withheld once scored: ``dropWithheld`` re-derives the weights from the
    scores, so the other gets them all, and the service drops and finalizes with it (before, it
    counted what was left by weight and cancelled the round, throwing that site's round away);
    ``audit verify`` passes the drop, and fails such a cancel (``peers.cancelled``)."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r, peer, [(big, gone), (small, _)] = _rounding_edge_round(fed, seed=11)
    honest_store = service.store
    service.store = _Withholding(honest_store, gone)  # type: ignore[assignment]
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    valued = {s.site: s for s in ledger.get_submissions(r)}
    assert (valued[big.address].weight, valued[small.address].weight) == (10**18, 0)
    assert valued[small.address].score == 1  # weight 0 from rounding, not from its score
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    pass_deadline(ledger, peer.score_reveal_deadline)
    with caplog.at_level(logging.WARNING, logger="fedtrail.aggregator"):
        outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED, caplog.text
    assert ledger.peer_dropped(r) == [big.address]
    after = {s.site: s for s in ledger.get_submissions(r)}
    assert (after[small.address].score, after[small.address].weight) == (1, 10**18)
    (audit,) = [a for a in verify_all(ledger, service.store) if a.round == r]
    assert audit.passed, [c for c in audit.checks if not c.passed]

    # the same round cancelled instead (what the service did before): verify names the update
    # left with a positive score, which the drop would have paid
    r2, peer2, [(_, gone2), (small2, _)] = _rounding_edge_round(fed, seed=12)
    service.store = _Withholding(honest_store, gone2)  # type: ignore[assignment]
    assert service.step() is None and ledger.get_round(r2).phase == Phase.VALUED
    pass_deadline(ledger, peer2.score_reveal_deadline)
    ledger.cancel_round(service.account, r2)
    (audit,) = [a for a in verify_all(ledger, service.store) if a.round == r2]
    failed = {c.name: c.detail for c in audit.checks if not c.passed}
    assert "peers.cancelled" in failed and small2.address[:10] in failed["peers.cancelled"], failed
    service.store = honest_store  # type: ignore[assignment]


def test_a_marked_update_at_weight_0_from_rounding_is_not_paid_once_the_screen_drops_the_other(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rounding edge under the public screen, both updates free-rides (entries ~1e-12): the
    big one is weighted and marked, the small one (1 sample at median 1) is marked at weight 0
    from rounding. Dropping the big one as screened re-derives the weights from the scores, so
    the small one gets them all: the service dropped the big one and finalized a model paying
    the marked small one in full, and ``audit verify`` passed it (the drop rule looked only at
    the weights before the drop). Every update with a positive score is marked, so the round
    can only be cancelled (h-284), and verify passes that cancel."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3, standing=True, public_screen=True)
    ledger, service = fed.ledger, fed.service
    r, peer, [(big, _), (small, _)] = _rounding_edge_round(fed, seed=13, scale=1e-12)
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    valued = {s.site: s for s in ledger.get_submissions(r)}
    assert (valued[big.address].weight, valued[small.address].weight) == (10**18, 0)
    assert valued[small.address].score == 1
    with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
        first = service.step()  # waits for the score reveal deadline to cancel
    assert first is None, (first, caplog.text)
    pass_deadline(ledger, peer.score_reveal_deadline)
    with caplog.at_level(logging.WARNING, logger="fedtrail.aggregator"):
        outcome = service.step()
    after = {s.site: s for s in ledger.get_submissions(r)}
    assert outcome is not None and outcome.phase == Phase.CANCELLED, (
        outcome,
        {a[:10]: (s.score, s.weight, s.reason) for a, s in after.items()},
        caplog.text,
    )
    (audit,) = [a for a in verify_all(ledger, service.store) if a.round == r]
    assert audit.passed, [c for c in audit.checks if not c.passed]


def test_an_unreadable_screen_input_at_weight_0_does_not_let_a_marked_update_be_paid(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rounding edge under the public screen: the big update (weighted) is a free-ride the
    screen marks, the small one (1 sample at median 1, weight 0 from rounding) is withheld once
    scored. The small one is a screen input (a positive median), so the screen cannot run; the
    service only waits for, or drops, unreadable *weighted* updates, so it finalized at once,
    paying the marked big update in full, and ``audit verify`` fails that round
    (``peers.screen``: cannot be recomputed). dropWithheld cannot take the small one (the
    contract's NotWeighted), and a cancel fails ``peers.cancelled`` (a weighted update reads):
    whatever the honest service does, verify failed the round. Now (session 61, h-291; README
    *Peer rounds*) an input that does not read and carries no weight is left out of the screen,
    as if withheld, by the service, verify and the reader alike: the screen marks the big one,
    whose drop would re-weight the unreadable small one (which would then have to be dropped
    as withheld, leaving no weight), so the service cancels the round once its score reveals
    close, and verify passes that cancel."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3, standing=True, public_screen=True)
    ledger, service = fed.ledger, fed.service
    r, peer, [(big, _), (small, gone)] = _rounding_edge_round(fed, seed=14, scale=1e-12)
    honest_store = service.store
    service.store = _Withholding(honest_store, gone)  # type: ignore[assignment]
    try:
        outcome = service.step()
        valued = {s.site: s for s in ledger.get_submissions(r)}
        assert (valued[big.address].weight, valued[small.address].weight) == (10**18, 0)
        for _ in range(3):
            if outcome is not None and outcome.phase != Phase.VALUED:
                break
            pass_deadline(ledger, peer.score_reveal_deadline)
            with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
                outcome = service.step()
        (audit,) = [a for a in verify_all(ledger, service.store) if a.round == r]
        failed = [(c.name, c.detail[:160]) for c in audit.checks if c.failed]
        assert audit.passed, (outcome and outcome.phase, failed)
        assert outcome is not None and outcome.phase == Phase.CANCELLED, (outcome, caplog.text)
        assert "leaves out" in caplog.text and small.address[:10] in caplog.text, caplog.text
        cancelled = {c.name: c.detail for c in audit.checks}["peers.cancelled"]
        assert "left out" in cancelled and small.address[:10] in cancelled, cancelled
    finally:
        service.store = honest_store  # type: ignore[assignment]


def test_an_aggregator_that_calls_a_readable_weight_0_input_unreadable_fails_verify(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The attacker's side of the rule above: the aggregator claims the small update (weight
    0 from rounding, an honest delta) unreadable, which leaves it out of the screen; the
    screen then marks the big free-rider alone and the aggregator cancels, throwing away the
    round the small site would have been paid in full once the big one was dropped. The
    auditor reads the small update itself: to it the update is an input, the screen marks the
    big one only, its drop leaves the small one weighted, and ``peers.cancelled`` fails. The
    leaving-out is each reader's own reading, never the aggregator's word."""
    from fedtrail.valuation.combine import Combiner

    # the noise tests off: the hand-made small update is Gaussian noise, which they mark
    quiet = Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0)
    fed = peer_federation(
        tmp_path,
        anvil_url,
        ipfs_api,
        sites=3,
        standing=True,
        public_screen=True,
        combiner=quiet,
    )
    ledger, service = fed.ledger, fed.service
    r, peer, [(big, _), (small, claimed)] = _rounding_edge_round(
        fed, seed=15, scale=1e-12, small_scale=0.01
    )
    honest_store = service.store
    service.store = _Withholding(honest_store, claimed)  # type: ignore[assignment]
    try:
        outcome = service.step()
        valued = {s.site: s for s in ledger.get_submissions(r)}
        assert (valued[big.address].weight, valued[small.address].weight) == (10**18, 0)
        for _ in range(3):
            if outcome is not None and outcome.phase != Phase.VALUED:
                break
            pass_deadline(ledger, peer.score_reveal_deadline)
            outcome = service.step()
        assert outcome is not None and outcome.phase == Phase.CANCELLED, outcome
        # with the aggregator's own (lying) reading, the cancel would pass
        (lied,) = [a for a in verify_all(ledger, service.store) if a.round == r]
        assert lied.passed, [(c.name, c.detail[:160]) for c in lied.checks if c.failed]
    finally:
        service.store = honest_store  # type: ignore[assignment]
    (audit,) = [a for a in verify_all(ledger, honest_store) if a.round == r]
    failed = {c.name: c.detail for c in audit.checks if c.failed}
    assert "peers.cancelled" in failed, [
        (c.name, c.detail) for c in audit.checks if "peers" in c.name
    ]
    assert "spares" in failed["peers.cancelled"] or "marks 1" in failed["peers.cancelled"], failed


def test_an_unreadable_weight_0_input_the_screens_drop_re_weights_is_dropped_as_withheld(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rule's other branch (session 61, h-291): beside the big free-rider and the small
    unreadable update at weight 0, a third site sends an honest weighted update. The screen
    leaves the small one out and marks the big one; its drop re-weights the small one above 0,
    and the service then drops it as withheld (it cannot be read) and finalizes with the third:
    ``audit verify`` passes (``peers.screen`` on the chain's inputs, ``peers.withheld`` on the
    small one, unreadable), and nothing is paid to an update the screen marks or nobody read."""
    from fedtrail.valuation.combine import Combiner

    quiet = Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0)
    fed = peer_federation(
        tmp_path,
        anvil_url,
        ipfs_api,
        sites=3,
        standing=True,
        public_screen=True,
        combiner=quiet,
    )
    ledger, service = fed.ledger, fed.service
    r, peer, [(big, _), (small, gone), (third, _)] = _rounding_edge_round(
        fed, seed=16, scale=1e-12, third_scale=0.01
    )
    honest_store = service.store
    service.store = _Withholding(honest_store, gone)  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
            outcome = service.step()
            valued = {s.site: s for s in ledger.get_submissions(r)}
            assert valued[small.address].weight == 0 and valued[small.address].score == 1
            assert valued[big.address].weight > 0 and valued[third.address].weight > 0
            for _ in range(4):
                if outcome is not None and outcome.phase != Phase.VALUED:
                    break
                pass_deadline(ledger, peer.score_reveal_deadline)
                outcome = service.step()
        assert outcome is not None and outcome.phase == Phase.FINALIZED, (outcome, caplog.text)
        after = {s.site: s for s in ledger.get_submissions(r)}
        assert after[big.address].reason == Reason.FREE_RIDER and after[big.address].weight == 0
        assert after[small.address].reason == Reason.WITHHELD and after[small.address].weight == 0
        assert after[third.address].weight == 10**18
        (audit,) = [a for a in verify_all(ledger, service.store) if a.round == r]
        assert audit.passed, [(c.name, c.detail[:200]) for c in audit.checks if c.failed]
    finally:
        service.store = honest_store  # type: ignore[assignment]


def _reader_results(fed: Any, anvil_url: str, ipfs_api: str, *withheld: str) -> dict[Any, Any]:
    """scripts/independent/reader.py over the ledger, each result keyed by (round, check),
    with the CIDs ``withheld`` not given by its store (their sites withhold them)."""
    import contextlib
    import importlib.util
    import io

    from tests.auditor.peer_federation import READER

    spec = importlib.util.spec_from_file_location("independent_reader_peer_rounds", READER)
    assert spec is not None and spec.loader is not None
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    cat = reader.Ipfs.cat

    def withholding(self: Any, cid: str) -> bytes:
        if cid in withheld:
            raise reader.NotGiven("missing", f"{cid}: withheld")
        return bytes(cat(self, cid))

    reader.Ipfs.cat = withholding
    reader.RESULTS.clear()
    argv = ["--rpc-url", anvil_url, "--contract", fed.ledger.address, "--ipfs", "ipfs:" + ipfs_api]
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(argv)
    return {(x["round"], x["check"]): x for x in reader.RESULTS}


def _hand_round(fed: Any, plan: list[tuple[int, int, float]]) -> tuple[int, Any, list[Any]]:
    """Opens a peer round in which, by hand, the sites in address order send what ``plan``
    says, one (claimed samples, peer median, entries' scale) each: random updates of entries
    ``scale`` x a standard normal; every site validates and scores each other's update its
    median. Returns the round, its peer record and the submitters in address order (nothing
    valued yet)."""
    import hashlib
    import secrets

    import torch

    from fedtrail.chain import dev_account
    from fedtrail.ledger import commitment
    from fedtrail.ledger.records import score_commitment
    from fedtrail.protocol.codes import MAX_SITE_SAMPLES
    from fedtrail.storage.codec import encode_update

    ledger, service, store = fed.ledger, fed.service, fed.store
    accounts = sorted(
        (dev_account(2 + i) for i in range(len(fed.nodes))), key=lambda a: address_key(a.address)
    )
    senders = list(zip(accounts, plan, strict=False))
    for site, (n, _, _) in senders:
        if n > 10_000:
            ledger.set_max_samples(fed.coordinator, site.address, MAX_SITE_SAMPLES)
    r = service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    gen = torch.Generator().manual_seed(r)
    reveals = []
    for site, (n, _, scale) in senders:
        delta = {
            name: (scale * torch.randn(shape, generator=gen)).to(getattr(torch, dtype))
            for name, (shape, dtype) in service.spec.tensor_layout().items()
        }
        blob = encode_update(delta, spec=service.spec, round=r).blob
        cid, sha = store.put(blob), hashlib.sha256(blob).hexdigest()
        ledger.commit_update(site, r, commitment(site.address, r, sha, n))
        reveals.append((site, cid, sha, n))
    pass_deadline(ledger, info.commit_deadline)
    for site, cid, sha, n in reveals:
        ledger.reveal_update(site, r, cid, sha, n)
    pass_deadline(ledger, info.reveal_deadline)
    want = {site.address: m for site, (_, m, _) in senders}
    sites = [site.address for site, _ in senders]
    salts = {v.address: secrets.token_bytes(32) for v in accounts}
    vectors = {v.address: [0 if s == v.address else want[s] for s in sites] for v in accounts}
    for v in accounts:
        ledger.commit_scores(
            v, r, score_commitment(v.address, r, vectors[v.address], salts[v.address])
        )
    pass_deadline(ledger, peer.score_commit_deadline)
    for v in accounts:
        ledger.reveal_scores(v, r, vectors[v.address], salts[v.address])
    return r, peer, [site for site, _ in senders]


def test_an_input_left_out_does_not_move_a_rounding_unit_the_chain_keeps(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack on the h-291 rule (h-297): two honest weighted updates (claims ~3e12 at median
    0.333667), a free-ride the screen marks (1 sample at median 2e-6) and an update nobody can
    read (1 sample at median 1e-6), both at weight 0 from rounding (the remainder units go to
    the two weighted ones). The unreadable one is left out of the screen; the marked one
    cannot be dropped (NotWeighted) and is paid nothing, so the honest service finalizes with
    the two. The rule counted the left-out one at 0 from the start: its product left the total
    the contract divides by, the marked one's exact share reached one unit, and the rule asked
    for a drop the chain cannot make: ``audit verify`` and the independent reader failed
    ``peers.screen`` on the honest round (a site at weight 0 needs only to withhold its blob).
    The left-out update keeps its share of the total, as on the chain, until a drop re-weights
    it."""
    from fedtrail.protocol.weights import SCORE_SCALE
    from fedtrail.valuation.combine import Combiner

    quiet = Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0)
    fed = peer_federation(
        tmp_path,
        anvil_url,
        ipfs_api,
        sites=4,
        standing=True,
        public_screen=True,
        combiner=quiet,
    )
    ledger, service = fed.ledger, fed.service
    n = 2_997_000_002_997  # 2n x 333667 = 2e18 - 2: without the unreadable one, exact halves
    r, peer, [b0, b1, rider, gone] = _hand_round(
        fed, [(n, 333_667, 0.01), (n, 333_667, 0.01), (1, 2, 1e-12), (1, 1, 0.01)]
    )
    withheld = next(s.cid for s in ledger.get_submissions(r) if s.site == gone.address)
    store = _Withholding(fed.store, withheld)  # its site withholds it once scored
    service.store = store  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
        outcome = service.step()
        valued = {s.site: s for s in ledger.get_submissions(r)}
        assert [valued[a.address].weight for a in (rider, gone)] == [0, 0]
        assert [valued[a.address].score for a in (rider, gone)] == [2, 1]
        for _ in range(3):
            if outcome is not None and outcome.phase != Phase.VALUED:
                break
            pass_deadline(ledger, peer.score_reveal_deadline)
            outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED, (outcome, caplog.text)
    assert "leaves out" in caplog.text and gone.address[:10] in caplog.text, caplog.text
    after = {s.site: s for s in ledger.get_submissions(r)}
    assert after[b0.address].weight + after[b1.address].weight == 10**18
    assert after[rider.address].weight == 0 and after[rider.address].score == 2
    assert SCORE_SCALE > after[b0.address].score > 0
    (audit,) = [a for a in verify_all(ledger, store) if a.round == r]  # type: ignore[arg-type]
    checks = {c.name: c for c in audit.checks}
    screen = checks["peers.screen"]
    assert screen.passed and "left out" in screen.detail, screen.detail
    assert rider.address[:10] in screen.detail, screen.detail  # marked, yet not weighted
    assert not [c.name for c in audit.checks if c.failed and c.name.startswith("peers.")]
    results = _reader_results(fed, anvil_url, ipfs_api, withheld)
    row = results.get((r, "peers.screen"))
    assert row is not None and row["result"] == "PASS", row
    assert not [k for k, x in results.items() if x["result"] == "FAIL" and "peers" in k[1]]


def _left_out_and_finalized(
    fed: Any, caplog: pytest.LogCaptureFixture
) -> tuple[int, Any, _Withholding]:
    """The rounding edge with every update honest (nothing marked) and the small one (1
    sample at median 1, weight 0 from rounding) withheld from everyone once scored (the
    service, the nodes, the auditor's store): the service leaves it out of the screen and
    finalizes. Returns the round, the small site and the withholding store."""
    ledger, service = fed.ledger, fed.service
    r, peer, [_, (small, gone), _] = _rounding_edge_round(
        fed, seed=17, scale=0.01, third_scale=0.01
    )
    store = _Withholding(fed.store, gone)
    service.store = store  # type: ignore[assignment]
    for node in fed.nodes:
        node.store = node.scorer.store = store
    with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
        outcome = service.step()
        for _ in range(3):
            if outcome is not None and outcome.phase != Phase.VALUED:
                break
            pass_deadline(ledger, peer.score_reveal_deadline)
            outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED, (outcome, caplog.text)
    after = {s.site: s for s in ledger.get_submissions(r)}
    assert (after[small.address].weight, after[small.address].reason) == (0, Reason.OK)
    assert "leaves out" in caplog.text and small.address[:10] in caplog.text, caplog.text
    return r, small, store


def _quiet_screen_federation(tmp_path: Path, anvil_url: str, ipfs_api: str) -> Any:
    from fedtrail.valuation.combine import Combiner

    quiet = Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0)
    return peer_federation(
        tmp_path,
        anvil_url,
        ipfs_api,
        sites=3,
        standing=True,
        public_screen=True,
        combiner=quiet,
    )


def test_a_round_that_left_an_input_out_passes_verify(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack on the h-291 rule (h-297), its honest finalize branch, which no h-291 test ran
    to verify (the tests end in a cancel or a drop as withheld): the service leaves the
    withheld small update out and finalizes with the two honest ones, but the update keeps
    reason OK, and ``update.<site>`` failed it unreadable. Now (h-300) the check passes an
    update this audit's own screen leaves out, and verify passes the round."""
    fed = _quiet_screen_federation(tmp_path, anvil_url, ipfs_api)
    r, _, store = _left_out_and_finalized(fed, caplog)
    (audit,) = [a for a in verify_all(fed.ledger, store) if a.round == r]  # type: ignore[arg-type]
    failed = [(c.name, c.detail[:200]) for c in audit.checks if c.failed]
    assert not failed, failed


def test_under_terms_without_a_reference_rule_a_left_out_input_still_fails_update_site(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Absent is the old rule (terms written before session 62): the round that left the
    withheld small update out keeps the verdict it had, ``update.<site>`` failing it unread,
    in ``audit verify`` and the independent reader alike. Passing it there (h-300 as merged)
    flipped old ledgers' verdicts and let an input withheld after the finalize launder a
    near copy of it (h-307); the pass is the terms' ``valuation.references`` "weighted" rule."""
    from fedtrail.valuation.combine import Combiner

    quiet = Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0)
    fed = peer_federation(
        tmp_path,
        anvil_url,
        ipfs_api,
        sites=3,
        standing=True,
        public_screen=True,
        combiner=quiet,
        references=None,
    )
    r, small, store = _left_out_and_finalized(fed, caplog)
    assert _references_rule(fed, r) is None
    (audit,) = [a for a in verify_all(fed.ledger, store) if a.round == r]  # type: ignore[arg-type]
    name = f"update.{small.address[:10]}"
    (row,) = [c for c in audit.checks if c.name == name]
    assert row.failed and "left out" not in row.detail, row.detail
    gone = next(s.cid for s in fed.ledger.get_submissions(r) if s.site == small.address)
    results = _reader_results(fed, anvil_url, ipfs_api, gone)
    rows = [x for (q, n), x in results.items() if q == r and n.startswith("update.")]
    assert [x["result"] for x in rows if x["result"] == "FAIL"] == ["FAIL"], rows
    assert not [x for x in rows if "left out" in x["detail"]], rows


def test_the_round_after_one_that_left_an_input_out_finalizes(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack on the h-291 rule (h-297), liveness: after the round above, a round in which
    every site is honest must finalize; its public screen reads the previous round's
    references, the withheld update among them until h-300 (raised ContentNotFound at every
    finalize); under the terms' ``valuation.references`` "weighted" it is none."""
    fed = _quiet_screen_federation(tmp_path, anvil_url, ipfs_api)
    _left_out_and_finalized(fed, caplog)
    ledger, service = fed.ledger, fed.service
    r2, _, peer2 = _scored_peer_round(fed)
    outcome = service.step()
    for _ in range(3):
        if outcome is not None and outcome.phase != Phase.VALUED:
            break
        pass_deadline(ledger, peer2.score_reveal_deadline)
        outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED, (outcome, r2)


def _finalize(fed: Any, r: int, peer: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Steps the service until round ``r`` is finalized (past its score reveal deadline when
    it waits), and asserts it is."""
    ledger, service = fed.ledger, fed.service
    with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
        outcome = service.step()
        for _ in range(3):
            if outcome is not None and outcome.phase != Phase.VALUED:
                break
            pass_deadline(ledger, peer.score_reveal_deadline)
            outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED, (outcome, caplog.text)


def _references_rule(fed: Any, r: int) -> str | None:
    info = fed.ledger.get_round(r)
    terms = RoundTerms.from_bytes(fed.store.get(info.terms_cid, info.terms_sha256))
    return ValuationSettings.from_json(terms.valuation).references


def test_the_rounds_around_an_input_left_out_pass_verify_and_the_independent_reader(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """h-300: under terms naming ``valuation.references`` "weighted" (written with the public
    screen since session 62), the round that left the withheld small update out (reason OK,
    weight 0: the contract cannot drop it) and the honest round after it pass ``audit verify``
    and the independent reader alike: the left-out update's ``update.<site>`` passes, and the
    later round's references, the same for every reader, leave it out (before: the later round
    never finalized, and the reader failed the left-out update)."""
    from fedtrail.valuation.chained import reference_labels
    from fedtrail.valuation.standing import global_label, reference_label

    fed = _quiet_screen_federation(tmp_path, anvil_url, ipfs_api)
    r, small, store = _left_out_and_finalized(fed, caplog)
    assert _references_rule(fed, r) == "weighted"
    gone = next(s.cid for s in fed.ledger.get_submissions(r) if s.site == small.address)
    r2, _, peer2 = _scored_peer_round(fed)
    _finalize(fed, r2, peer2, caplog)
    weighted = [s.site for s in fed.ledger.get_submissions(r) if s.weight > 0]
    assert len(weighted) == 2 and small.address not in weighted
    labels = reference_labels(fed.ledger, store, r2, 1)  # type: ignore[arg-type]
    assert labels == [*(reference_label(a, r) for a in weighted), global_label(r)], labels
    audits = verify_all(fed.ledger, store)  # type: ignore[arg-type]
    assert {a.round for a in audits} == {r, r2}
    failed = [(a.round, c.name, c.detail[:200]) for a in audits for c in a.checks if c.failed]
    assert not failed, failed
    (left,) = [
        c
        for a in audits
        if a.round == r
        for c in a.checks
        if c.name == f"update.{small.address[:10]}"
    ]
    assert left.passed and "left out" in left.detail, left.detail
    results = _reader_results(fed, anvil_url, ipfs_api, gone)
    rows = [x for (q, name), x in results.items() if q == r and name.startswith("update.")]
    assert [x["result"] for x in rows if "left out" in x["detail"]] == ["PASS"], rows
    assert (r2, "peers.screen") in results and results[(r2, "peers.screen")]["result"] == "PASS"
    fails = [(k, x["detail"][:200]) for k, x in results.items() if x["result"] == "FAIL"]
    assert not fails, fails


@pytest.mark.parametrize("references", [None, "weighted"])
def test_the_terms_decide_whether_an_update_at_weight_0_is_a_reference(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    references: str | None,
) -> None:
    """h-300, both reference rules end to end: round 1 is the rounding edge with every update
    readable (the small one at weight 0 from rounding, reason OK); in round 2 the third site
    resends the small site's round-1 update. Under terms without ``valuation.references`` (as
    every ledger before session 62 holds them) the small update is one of round 1's references,
    so the public screen marks the resend stale and drops it (FREE_RIDER), as before; under
    "weighted" it is none (it added nothing to round 1's model and was paid nothing), and the
    resend is paid. Either way ``audit verify`` and the independent reader recompute the same
    screen and pass both rounds: each reader takes a round's references by that round's own
    terms, from the chain alone."""
    import hashlib
    import secrets

    from fedtrail.chain import dev_account
    from fedtrail.ledger import commitment
    from fedtrail.ledger.records import score_commitment
    from fedtrail.protocol.weights import SCORE_SCALE
    from fedtrail.storage.codec import decode_update, encode_update
    from fedtrail.valuation.chained import reference_labels
    from fedtrail.valuation.combine import Combiner
    from fedtrail.valuation.standing import reference_label

    quiet = Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0)
    fed = peer_federation(
        tmp_path,
        anvil_url,
        ipfs_api,
        sites=3,
        standing=True,
        public_screen=True,
        combiner=quiet,
        references=references,
    )
    ledger, service, store = fed.ledger, fed.service, fed.store
    r, peer, [(big, _), (small, small_cid), (third, _)] = _rounding_edge_round(
        fed, seed=21, scale=0.01, third_scale=0.01
    )
    _finalize(fed, r, peer, caplog)
    assert _references_rule(fed, r) == references
    valued = {s.site: s for s in ledger.get_submissions(r)}
    assert (valued[small.address].weight, valued[small.address].reason) == (0, Reason.OK)
    assert valued[small.address].score > 0 and valued[third.address].weight > 0
    small_delta, _ = decode_update(
        store.get(small_cid, valued[small.address].sha256), spec=service.spec, expected_round=r
    )

    # round 2 by hand: big and small send fresh updates, third resends small's round-1 update
    r2 = service.open_next()
    info2, peer2 = ledger.get_round(r2), ledger.get_peer_round(r2)
    assert peer2 is not None
    gen = _generator(r2)
    from fedtrail.protocol.codes import MAX_SITE_SAMPLES

    sends = [
        (big, MAX_SITE_SAMPLES, _random_delta(service.spec, gen, 0.01)),
        (small, 1, _random_delta(service.spec, gen, 0.01)),
        (third, 200, dict(small_delta)),
    ]
    reveals = []
    for site, n, delta in sends:
        blob = encode_update(delta, spec=service.spec, round=r2).blob
        cid, sha = store.put(blob), hashlib.sha256(blob).hexdigest()
        ledger.commit_update(site, r2, commitment(site.address, r2, sha, n))
        reveals.append((site, cid, sha, n))
    pass_deadline(ledger, info2.commit_deadline)
    for site, cid, sha, n in reveals:
        ledger.reveal_update(site, r2, cid, sha, n)
    pass_deadline(ledger, info2.reveal_deadline)
    want = {big.address: SCORE_SCALE, small.address: 1, third.address: SCORE_SCALE // 2}
    sites = [site.address for site, _, _ in sends]
    accounts = sorted((dev_account(2 + i) for i in range(3)), key=lambda a: address_key(a.address))
    salts = {v.address: secrets.token_bytes(32) for v in accounts}
    vectors = {v.address: [0 if s == v.address else want[s] for s in sites] for v in accounts}
    for v in accounts:
        ledger.commit_scores(
            v, r2, score_commitment(v.address, r2, vectors[v.address], salts[v.address])
        )
    pass_deadline(ledger, peer2.score_commit_deadline)
    for v in accounts:
        ledger.reveal_scores(v, r2, vectors[v.address], salts[v.address])
    _finalize(fed, r2, peer2, caplog)

    labels = reference_labels(ledger, store, r2, 1)  # type: ignore[arg-type]
    resent = {s.site: s for s in ledger.get_submissions(r2)}[third.address]
    if references is None:
        assert reference_label(small.address, r) in labels, labels
        assert (resent.reason, resent.weight) == (Reason.FREE_RIDER, 0)
    else:
        assert reference_label(small.address, r) not in labels, labels
        assert resent.reason == Reason.OK and resent.weight > 0
    audits = verify_all(ledger, store)  # type: ignore[arg-type]
    failed = [(a.round, c.name, c.detail[:200]) for a in audits for c in a.checks if c.failed]
    assert not failed, failed
    results = _reader_results(fed, anvil_url, ipfs_api)
    assert results[(r2, "peers.screen")]["result"] == "PASS", results[(r2, "peers.screen")]
    fails = [(k, x["detail"][:200]) for k, x in results.items() if x["result"] == "FAIL"]
    assert not fails, fails


def _generator(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


def _random_delta(spec: Any, gen: Any, scale: float) -> dict[str, Any]:
    """A random update of ``spec``'s layout, entries ``scale`` x a standard normal."""
    import torch

    return {
        name: (scale * torch.randn(shape, generator=gen)).to(getattr(torch, dtype))
        for name, (shape, dtype) in spec.tensor_layout().items()
    }


def test_without_the_public_screen_nothing_is_left_out_and_update_site_still_fails(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """h-300's pass is the public screen's rule, not any unreadable update at weight 0: in a
    peer round whose terms have no public screen (every validator screens) nothing is left out,
    so the small update withheld once scored (reason OK, weight 0) still fails
    ``update.<site>`` in ``audit verify`` and the independent reader, as before. (Open, not
    h-300's: that round is an honest finalize too, so a site at weight 0 that withholds once
    scored still fails it there, not tested further: a later peer round's validators skip an
    unreadable reference; a later aggregator round would read it as one.)"""
    from fedtrail.valuation.combine import Combiner

    quiet = Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0)
    fed = peer_federation(
        tmp_path,
        anvil_url,
        ipfs_api,
        sites=3,
        standing=True,
        public_screen=False,
        combiner=quiet,
    )
    r, peer, [_, (small, gone), _] = _rounding_edge_round(
        fed, seed=17, scale=0.01, third_scale=0.01
    )
    store = _Withholding(fed.store, gone)
    fed.service.store = store  # type: ignore[assignment]
    _finalize(fed, r, peer, caplog)
    assert _references_rule(fed, r) is None  # written only with the public screen
    after = {s.site: s for s in fed.ledger.get_submissions(r)}
    assert (after[small.address].weight, after[small.address].reason) == (0, Reason.OK)
    (audit,) = [a for a in verify_all(fed.ledger, store) if a.round == r]  # type: ignore[arg-type]
    failed = {c.name: c.detail for c in audit.checks if c.failed}
    assert list(failed) == [f"update.{small.address[:10]}"], failed
    results = _reader_results(fed, anvil_url, ipfs_api, gone)
    rows = [x for (q, name), x in results.items() if q == r and name.startswith("update.")]
    assert sorted(x["result"] for x in rows if "." not in x["check"][7:]) == [
        "FAIL",
        "PASS",
        "PASS",
    ]
