"""The public screen from the aggregator's side (round terms ``valuation.public_screen``, issue
14's time bar): the service writes the option into peer terms with standing, the nodes'
validators skip the free-rider screen and value a tiny update like any other, and the service
runs the screen once at finalize and drops the update (``dropScreened``: FREE_RIDER, weight 0,
the others re-weighted) before it aggregates; ``audit verify`` recomputes the screen and
passes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import fedtrail.aggregator.service as service_mod
from fedtrail.auditor.verify import verify_all
from fedtrail.errors import StoreError
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.faults import SiteFault
from tests.aggregator.peer_setup import pass_deadline, peer_federation
from tests.aggregator.test_peer_rounds import _scored_peer_round, _Withholding

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rider_federation(tmp_path: Path, anvil_url: str, ipfs_api: str) -> Any:
    """Four sites under the public screen (with standing): site 2 sends its update scaled by 1e-9
    (a free-rider: below 0.1% of the global model's norm), the others train honestly; which of
    them train in a round is each test's."""
    return peer_federation(
        tmp_path,
        anvil_url,
        ipfs_api,
        sites=4,
        faults=[SiteFault(), SiteFault(), SiteFault(kind="scale", factor=1e-9), SiteFault()],
        standing=True,
        public_screen=True,
    )


def test_the_service_drops_what_the_public_screen_marks(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    # sites 0 and 1 honest, 2 the free-rider; 3 sends no update but validates
    fed = _rider_federation(tmp_path, anvil_url, ipfs_api)
    ledger, service, store = fed.ledger, fed.service, fed.store
    trainers, validators = fed.nodes[:3], fed.nodes
    rider = fed.nodes[2].address
    r = service.open_next()
    info = ledger.get_round(r)
    peer = ledger.get_peer_round(r)
    assert peer is not None
    terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
    valuation = ValuationSettings.from_json(terms.valuation)
    assert valuation.public_screen is True and valuation.standing is True
    for n in trainers:
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in trainers:
        n.participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    for n in validators:
        n.scorer.score(r)
    pass_deadline(ledger, peer.score_commit_deadline)
    for n in validators:
        n.scorer.score(r)
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    valued = {s.site: s for s in ledger.get_submissions(r)}
    # the validators did not screen: the peers' median weighs the free-rider
    assert valued[rider].score > 0 and valued[rider].weight > 0
    assert Reason(valued[rider].reason) is Reason.OK

    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    subs = {s.site: s for s in ledger.get_submissions(r)}
    assert (Reason(subs[rider].reason), subs[rider].score, subs[rider].weight) == (
        Reason.FREE_RIDER,
        0,
        0,
    )
    assert ledger.peer_screened(r) == [rider]
    assert all(subs[n.address].weight > 0 for n in fed.nodes[:2])
    assert sum(s.weight for s in subs.values()) == 10**18
    audits = verify_all(ledger, store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if c.failed]
    checks = {c.name: c for c in audits[-1].checks}
    assert checks["peers.screen"].passed and rider[:10] in checks["peers.screen"].detail


def _peer_round(fed: object, trainers: list[object]) -> int:
    """Opens the next peer round and runs it to FINALIZED: ``trainers`` send updates, every
    node validates."""
    ledger, service = fed.ledger, fed.service  # type: ignore[attr-defined]
    r = service.open_next()
    info = ledger.get_round(r)
    peer = ledger.get_peer_round(r)
    assert peer is not None
    for n in trainers:
        n.participate(r)  # type: ignore[attr-defined]
    pass_deadline(ledger, info.commit_deadline)
    for n in trainers:
        n.participate(r)  # type: ignore[attr-defined]
    pass_deadline(ledger, info.reveal_deadline)
    for n in fed.nodes:  # type: ignore[attr-defined]
        n.scorer.score(r)
    pass_deadline(ledger, peer.score_commit_deadline)
    for n in fed.nodes:  # type: ignore[attr-defined]
        n.scorer.score(r)
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    return int(r)


def test_a_dropped_free_rider_gains_no_validator_standing_for_the_next_round(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """Validators do not screen under the public screen, so each accumulates the tiny update's
    share in round 2 (after the warm-up); the aggregator drops it (``UpdateScreened``), and
    every validator's history for round 3 (the node's ``history_for``) holds no standing of the
    rider's from round 2, while the honest sites keep theirs."""
    fed = _rider_federation(tmp_path, anvil_url, ipfs_api)
    ledger = fed.ledger
    trainers = fed.nodes[:3]
    rider = fed.nodes[2].address
    honest = [n.address for n in fed.nodes[:2]]
    assert _peer_round(fed, trainers) == 1  # the warm-up: nothing accumulated
    r = _peer_round(fed, trainers)
    assert ledger.peer_screened(r) == [rider]
    validators = [n for n in fed.nodes if n.address != rider]
    for n in validators:
        saved = json.loads((n.folder / "validator" / f"history-{r}.json").read_text())
        assert saved["valued_rounds"] == 2
        assert rider in saved["accumulated"]  # valued in round 2 like any other update
        history = n.scorer.history_for(r + 1)
        assert history.valued_rounds == 2
        assert rider not in history.accumulated
        kept = {s: v for s, v in saved["accumulated"].items() if s != rider}
        assert dict(history.accumulated) == kept
        assert all(s in kept for s in honest if s != n.address)
        assert rider not in saved["carried_in"]  # round 1 accumulated nothing
    audits = verify_all(ledger, fed.store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if c.failed]


@pytest.mark.parametrize("one_call", [True, False], ids=["dropUpdates", "old-ledger"])
def test_the_service_screens_only_once_every_input_reads_or_is_dropped_as_withheld(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    one_call: bool,
) -> None:
    """The screen's inputs are the chain's (README *Peer rounds*: a positive peer median, not
    dropped as withheld). A weighted honest update the aggregator cannot read is one: the
    service does not screen without it (before, it screened the updates that read and dropped
    the free-rider at once), waits until the score reveal deadline, then drops the update as
    withheld and what the screen marks on the rest in one ``dropUpdates`` transaction (issue
    14's gas bar; on a ledger without it, ``dropWithheld`` then ``dropScreened``, as before);
    verify passes the screen whether or not that update reads at audit time."""
    fed = _rider_federation(tmp_path, anvil_url, ipfs_api)
    ledger, service = fed.ledger, fed.service
    if not one_call:  # a ledger deployed before dropUpdates (its code has no selector for it)
        monkeypatch.setattr(ledger, "has_drop_updates", lambda: False)
    screened_on: list[int] = []  # the screens computed (not refused for an unreadable input)
    screen = service_mod.public_screen_of

    def counted(*a: Any, **k: Any) -> dict[str, str]:
        marked = screen(*a, **k)
        screened_on.append(a[2])
        return marked

    monkeypatch.setattr(service_mod, "public_screen_of", counted)
    rider = fed.nodes[2].address
    r, _, peer = _scored_peer_round(fed)
    gone = next(s for s in ledger.get_submissions(r) if s.site == fed.nodes[0].address)
    honest_store = service.store
    service.store = _Withholding(honest_store, gone.cid)  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
        assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
        assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    valued = {s.site: s for s in ledger.get_submissions(r)}
    assert valued[gone.site].weight > 0 and valued[rider].weight > 0
    assert ledger.peer_screened(r) == []  # not screened on a part of its inputs
    assert "the public screen waits" in caplog.text and gone.site[:10] in caplog.text
    pass_deadline(ledger, peer.score_reveal_deadline)
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    assert ledger.peer_dropped(r) == [gone.site]
    assert ledger.peer_screened(r) == [rider]
    (withheld,) = ledger.events("UpdateWithheld", argument_filters={"round": r})
    (screened,) = ledger.events("UpdateScreened", argument_filters={"round": r})
    assert (withheld.tx_hash == screened.tx_hash) is one_call
    # screened once, for the drop, and not again at the finalize after it (the same inputs;
    # issue 18: twice before)
    assert screened_on == [r], screened_on
    sent = ledger.w3.eth.get_transaction(withheld.tx_hash)  # type: ignore[arg-type]
    name = (
        "dropUpdates(uint256,address[],address[],address[])"
        if one_call
        else ("dropWithheld(uint256,address[],address[])")
    )
    assert bytes(sent["input"])[:4] == bytes(ledger.w3.keccak(text=name))[:4]
    for store in (service.store, honest_store):
        (audit,) = [a for a in verify_all(ledger, store) if a.round == r]
        check = next(c for c in audit.checks if c.name == "peers.screen")
        assert check.passed and rider[:10] in check.detail, check.detail
    service.store = honest_store  # type: ignore[assignment]


class _PinFailing:
    """The store with a pin request that fails for these CIDs (the daemon refused it, or a
    restarted process has not pinned them yet); reads work."""

    def __init__(self, store: Any, *cids: str) -> None:
        self._store, self._cids = store, set(cids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def pin(self, cid: str) -> None:
        if cid in self._cids:
            raise StoreError(f"pin {cid}: refused")
        self._store.pin(cid)


def test_the_screens_drop_waits_until_every_input_is_pinned(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Auditors re-check a ``dropScreened`` on the screen's inputs, so an input its site could
    still withdraw after the drop (its pin failed) would let that site turn the honest drop into
    a failed ``peers.screen`` ("cannot be recomputed"): the service posts no drop and does not
    finalize until every weighted update is pinned, then drops and finalizes."""
    fed = _rider_federation(tmp_path, anvil_url, ipfs_api)
    ledger, service = fed.ledger, fed.service
    rider = fed.nodes[2].address
    r, _, _ = _scored_peer_round(fed)
    honest = next(s for s in ledger.get_submissions(r) if s.site == fed.nodes[0].address)
    store = service.store
    service.store = _PinFailing(store, honest.cid)  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="fedtrail.aggregator"):
        assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
        assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    assert ledger.peer_screened(r) == []
    assert "waits until every input is pinned" in caplog.text and honest.site[:10] in caplog.text
    service.store = store  # the pin works again
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    assert ledger.peer_screened(r) == [rider]
    audits = verify_all(ledger, store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if c.failed]


def test_withheld_and_screened_drops_wait_together_for_an_inputs_pin(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At the score reveal deadline an unreadable weighted update is due to be dropped and the
    screen marks the free-rider among the inputs left, but an honest input's pin fails: the
    service drops neither (the round could not finalize before the screen's drop anyway), so
    the two go in one ``dropUpdates`` once the pin works, not as two calls with the screen's
    drop later."""
    fed = _rider_federation(tmp_path, anvil_url, ipfs_api)
    ledger, service = fed.ledger, fed.service
    rider = fed.nodes[2].address
    r, _, peer = _scored_peer_round(fed)
    subs = {s.site: s for s in ledger.get_submissions(r)}
    gone, honest = subs[fed.nodes[0].address], subs[fed.nodes[1].address]
    store = service.store
    withholding = _Withholding(store, gone.cid)
    service.store = _PinFailing(withholding, honest.cid)  # type: ignore[assignment]
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    pass_deadline(ledger, peer.score_reveal_deadline)
    with caplog.at_level(logging.WARNING, logger="fedtrail.aggregator"):
        assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    assert "waits until every input is pinned" in caplog.text and honest.site[:10] in caplog.text
    assert ledger.peer_dropped(r) == [] and ledger.peer_screened(r) == []
    service.store = withholding  # type: ignore[assignment]  # the pin works again
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    assert ledger.peer_dropped(r) == [gone.site] and ledger.peer_screened(r) == [rider]
    (withheld,) = ledger.events("UpdateWithheld", argument_filters={"round": r})
    (screened,) = ledger.events("UpdateScreened", argument_filters={"round": r})
    assert withheld.tx_hash == screened.tx_hash
    (audit,) = [a for a in verify_all(ledger, withholding) if a.round == r]  # type: ignore[arg-type]
    assert audit.passed, [c for c in audit.checks if c.failed]
    service.store = store  # type: ignore[assignment]


@pytest.mark.parametrize("rule_agrees", [True, False], ids=["rule", "revert"])
def test_a_round_whose_every_weighted_update_the_screen_marks_is_cancelled_not_stalled(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    rule_agrees: bool,
) -> None:
    """Only the free-rider sends an update: the peers weigh it (the validators do not screen),
    the public screen marks it, and dropping it would leave no weight (the contract's
    ``ZeroTotalWeight``: before, every finalize attempt reverted and the round stayed valued for
    good, the federation stalled). The service cancels the valued round once its score reveals
    close (``cancelRound``; it waits until then), the federation opens the next round, and
    ``audit verify`` passes the cancel (``peers.cancelled``: the screen marks every weighted
    update). ``revert``: the service's rule is made to say weight is left, so it sends the drop
    and the contract reverts it (``ZeroTotalWeight``): the service logs the revert and takes
    the same path instead of retrying the drop at every poll."""
    fed = _rider_federation(tmp_path, anvil_url, ipfs_api)
    ledger, service = fed.ledger, fed.service
    if not rule_agrees:
        monkeypatch.setattr(
            "fedtrail.aggregator.service.screen_empties_round", lambda *a, **k: False
        )
    rider = fed.nodes[2].address
    r = service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    fed.nodes[2].participate(r)
    pass_deadline(ledger, info.commit_deadline)
    fed.nodes[2].participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    for n in fed.nodes:
        n.scorer.score(r)
    pass_deadline(ledger, peer.score_commit_deadline)
    for n in fed.nodes:
        n.scorer.score(r)
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    (valued,) = ledger.get_submissions(r)
    assert valued.site == rider and valued.weight == 10**18
    with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
        assert service.step() is None  # before the score reveal deadline: waits, no revert
    assert ledger.get_round(r).phase == Phase.VALUED and ledger.peer_screened(r) == []
    assert "every weighted update" in caplog.text
    assert ("dropScreened reverted" in caplog.text) is not rule_agrees
    pass_deadline(ledger, peer.score_reveal_deadline)
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.CANCELLED
    assert ledger.get_round(r).phase == Phase.CANCELLED
    assert service.open_next() == r + 1
    (audit,) = [a for a in verify_all(ledger, fed.store) if a.round == r]
    checks = {c.name: c for c in audit.checks}
    assert audit.passed, [c for c in audit.checks if c.failed]
    assert "public screen marks" in checks["peers.cancelled"].detail
