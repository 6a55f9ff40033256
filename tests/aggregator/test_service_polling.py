"""The service values a round's set of revealed updates once (issue 18): a round whose updates
are all unusable is not valued again on every poll while its reveal deadline has not passed,
only when the set of reveals changes or the deadline passes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

import fedtrail.aggregator.service as service_module
from fedtrail.aggregator.service import CLOCK_SLACK, REVEAL_GRACE, AggregatorSettings
from fedtrail.chain import MIN_WAKE, advance_time, next_block_timestamp
from fedtrail.errors import LedgerError
from fedtrail.ledger import commitment
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.storage.codec import encode_update
from fedtrail.storage.store import LocalStore
from tests.aggregator.service_setup import service_with_sites
from tests.aggregator.test_service_reads import profiled_noise
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_an_unchanged_set_of_reveals_is_valued_once_until_the_deadline(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    service, sites = service_with_sites(
        embedded,
        store,
        2,
        AggregatorSettings(standing=False, explain_method=None),
        tmp_path / "agg",
    )
    ledger = service.ledger
    calls: list[int] = []
    real = service_module.value_round

    def counted(**kwargs: Any) -> Any:
        calls.append(len(kwargs["candidates"]))
        return real(**kwargs)

    monkeypatch.setattr(service_module, "value_round", counted)

    r = service.open_next()
    junk = [os.urandom(3000) for _ in sites]  # not updates at all: every score is 0
    for acct, blob in zip(sites, junk, strict=True):
        sha = hashlib.sha256(blob).hexdigest()
        ledger.commit_update(acct, r, commitment(acct.address, r, sha, 100))
    info = ledger.get_round(r)
    advance_time(ledger.w3, info.commit_deadline - next_block_timestamp(ledger.w3) + 1)

    def reveal(i: int) -> None:
        blob = junk[i]
        ledger.reveal_update(sites[i], r, store.put(blob), hashlib.sha256(blob).hexdigest(), 100)

    # one reveal: valued once, however often asked
    reveal(0)
    assert service.value(r) is None
    assert service.value(r) is None
    assert calls == [1]
    # the set changed: valued again, once
    reveal(1)
    assert service.ready_to_value(r)
    for _ in range(3):  # polls before the deadline
        assert service.step() is None
        assert ledger.get_round(r).phase == Phase.OPEN
    assert calls == [1, 2]
    assert {s.reason for s in ledger.get_submissions(r)} == {0}  # nothing recorded
    # the deadline passed: one last valuation of the final set, then the round is cancelled
    now = next_block_timestamp(ledger.w3)
    advance_time(ledger.w3, info.reveal_deadline + service_module.CLOCK_SLACK - now + 1)
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.CANCELLED
    assert ledger.get_round(r).phase == Phase.CANCELLED
    assert calls == [1, 2, 2]
    saved = json.loads((tmp_path / "agg" / f"valuation-{r}.json").read_text())
    assert [(v["score"], v["reason"]) for v in saved["sites"]] == [(0, Reason.MALFORMED)] * 2


def test_the_run_loop_finalizes_right_after_valuing(embedded: ChainEnv, tmp_path: Path) -> None:
    """Once a step has recorded the valuation, the run loop finalizes without waiting a poll
    interval first (issue 18: a whole interval sat between the two on every round)."""
    store = LocalStore(tmp_path / "store")
    service, sites = service_with_sites(
        embedded,
        store,
        3,
        AggregatorSettings(
            valuation="loo", standing=False, explain_method=None, poll_interval=60.0
        ),
        tmp_path / "agg",
    )
    ledger = service.ledger
    spec = ModelSpec()
    params = initial_model(spec, 0).state_dict()
    gen = torch.Generator().manual_seed(0)
    r = service.open_next()
    blobs = [
        encode_update(
            profiled_noise(params, gen),
            spec=spec,
            round=r,
        ).blob
        for _ in sites
    ]
    for acct, blob in zip(sites, blobs, strict=True):
        ledger.commit_update(
            acct, r, commitment(acct.address, r, hashlib.sha256(blob).hexdigest(), 100)
        )
    info = ledger.get_round(r)
    advance_time(ledger.w3, info.commit_deadline - next_block_timestamp(ledger.w3) + 1)
    for acct, blob in zip(sites, blobs, strict=True):
        ledger.reveal_update(acct, r, store.put(blob), hashlib.sha256(blob).hexdigest(), 100)
    started = time.monotonic()
    outcomes = service.run(rounds=1)
    assert [o.phase for o in outcomes] == [Phase.FINALIZED]
    assert time.monotonic() - started < 30  # valued and finalized, no 60 s poll between


def _committed_round(
    embedded: ChainEnv, tmp_path: Path, poll_interval: float
) -> tuple[Any, Any, int, list[Any], list[bytes]]:
    """A service with three sites that committed to its first round (none revealed yet)."""
    store = LocalStore(tmp_path / "store")
    service, sites = service_with_sites(
        embedded,
        store,
        3,
        AggregatorSettings(
            valuation="loo",
            standing=False,
            explain_method=None,
            poll_interval=poll_interval,
            round_seconds=60,
            reveal_seconds=120,
        ),
        tmp_path / "agg",
    )
    ledger = service.ledger
    params = initial_model(ModelSpec(), 0).state_dict()
    gen = torch.Generator().manual_seed(0)
    r = service.open_next()
    blobs = [
        encode_update(
            {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in params.items()},
            spec=ModelSpec(),
            round=r,
        ).blob
        for _ in sites
    ]
    for acct, blob in zip(sites, blobs, strict=True):
        ledger.commit_update(
            acct, r, commitment(acct.address, r, hashlib.sha256(blob).hexdigest(), 100)
        )
    return service, store, r, sites, blobs


def test_the_run_loop_wakes_when_the_sites_can_have_revealed(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Before the commit deadline, the loop's next look is when the sites' own loops reveal
    (the deadline, CLOCK_SLACK and REVEAL_GRACE later), not a poll interval away (issue 18)."""
    service, store, r, sites, blobs = _committed_round(embedded, tmp_path, 600.0)
    ledger = service.ledger
    info = ledger.get_round(r)
    waits: list[float] = []

    def wait(timeout: float | None = None) -> bool:
        assert timeout is not None
        waits.append(timeout)
        advance_time(ledger.w3, math.ceil(timeout))
        if len(waits) == 1:  # the sites' loops woke at the commit deadline and revealed
            for acct, blob in zip(sites, blobs, strict=True):
                sha = hashlib.sha256(blob).hexdigest()
                ledger.reveal_update(acct, r, store.put(blob), sha, 100)
        return False

    service.stop_event.wait = wait  # type: ignore[method-assign]
    outcomes = service.run(rounds=1)
    assert [o.phase for o in outcomes] == [Phase.FINALIZED]
    assert len(waits) == 1, waits
    most = info.commit_deadline + CLOCK_SLACK + 1 + REVEAL_GRACE - info.opened_at
    assert MIN_WAKE <= waits[0] <= most


def test_the_run_loop_wakes_at_the_reveal_deadline(embedded: ChainEnv, tmp_path: Path) -> None:
    """A site that never reveals: the round is valued once the reveal deadline has passed,
    not at the first poll after it (issue 18)."""
    service, store, r, sites, blobs = _committed_round(embedded, tmp_path, 600.0)
    ledger = service.ledger
    info = ledger.get_round(r)
    reveals = info.commit_deadline + CLOCK_SLACK + 1 + REVEAL_GRACE  # past the sites' wake
    advance_time(ledger.w3, reveals - next_block_timestamp(ledger.w3))
    for acct, blob in zip(sites[:2], blobs[:2], strict=True):
        ledger.reveal_update(acct, r, store.put(blob), hashlib.sha256(blob).hexdigest(), 100)
    waits: list[float] = []

    def wait(timeout: float | None = None) -> bool:
        assert timeout is not None
        waits.append(timeout)
        advance_time(ledger.w3, math.ceil(timeout))
        return False

    service.stop_event.wait = wait  # type: ignore[method-assign]
    outcomes = service.run(rounds=1)
    assert [o.phase for o in outcomes] == [Phase.FINALIZED]
    assert len(waits) == 1, waits
    assert MIN_WAKE <= waits[0] <= info.reveal_deadline + CLOCK_SLACK + 1 - info.commit_deadline
    assert ledger.get_round(r).submission_count == 2


def test_each_pass_of_the_run_loop_reads_the_current_round_once(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run loop's one read of the current round per pass is the step's own poll
    (:meth:`Ledger.round_poll`, one JSON-RPC batch over HTTP): it decides whether to step
    (``until_round``), and a round the step opened is worked on at once without another read
    (issue 18: a ``current_round`` read before each step and one after it)."""
    store = LocalStore(tmp_path / "store")
    service, sites = service_with_sites(
        embedded,
        store,
        3,
        AggregatorSettings(
            valuation="loo", standing=False, explain_method=None, poll_interval=600.0
        ),
        tmp_path / "agg",
    )
    ledger = service.ledger
    params = initial_model(ModelSpec(), 0).state_dict()
    gen = torch.Generator().manual_seed(0)
    reads: Counter[str] = Counter()
    polling: list[bool] = []
    poll, current_round = ledger.round_poll, ledger.current_round

    def counted_poll(*a: Any, **k: Any) -> Any:
        reads["poll"] += 1
        polling.append(True)  # its own one-by-one reads (no batch here) are the poll's
        try:
            return poll(*a, **k)
        finally:
            polling.pop()

    def counted_current() -> int:
        reads["current_round" if not polling else "in poll"] += 1
        return current_round()

    monkeypatch.setattr(ledger, "round_poll", counted_poll)
    monkeypatch.setattr(ledger, "current_round", counted_current)
    step = service.step
    monkeypatch.setattr(service, "step", lambda **k: reads.update(["step"]) or step(**k))
    waits: list[float] = []

    def wait(timeout: float | None = None) -> bool:
        """The sites commit and, once the commit window has passed, reveal."""
        waits.append(0.0 if timeout is None else timeout)
        r = current_round()  # not counted: the sites' read
        blobs = [
            encode_update(
                profiled_noise(params, gen),
                spec=ModelSpec(),
                round=r,
            ).blob
            for _ in sites
        ]
        for acct, blob in zip(sites, blobs, strict=True):
            sha = hashlib.sha256(blob).hexdigest()
            ledger.commit_update(acct, r, commitment(acct.address, r, sha, 100))
        info = ledger.get_round(r)
        reveals = info.commit_deadline + CLOCK_SLACK + 1 + REVEAL_GRACE
        advance_time(ledger.w3, reveals - next_block_timestamp(ledger.w3))
        for acct, blob in zip(sites, blobs, strict=True):
            ledger.reveal_update(acct, r, store.put(blob), hashlib.sha256(blob).hexdigest(), 100)
        return False

    service.stop_event.wait = wait  # type: ignore[method-assign]
    assert current_round() == 0
    outcomes = service.run(rounds=1)
    assert [o.phase for o in outcomes] == [Phase.FINALIZED]
    # open (no wait after it), a look before the reveals (the one wait), value, finalize
    assert len(waits) == 1, waits
    assert reads["step"] == 4
    # the one current_round read is the start's (preflight: payment settings), none per pass
    assert reads["poll"] == reads["step"] and reads["current_round"] == 1, reads
    reads.clear()
    assert service.run(until_round=1) == []  # round 1 is closed: one poll, no step
    assert reads["poll"] == 1 and reads["current_round"] == 1 and "step" not in reads, reads


def test_after_a_failed_step_the_chain_says_whether_a_round_was_opened(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open that landed on chain before its step failed (here the receipt read) is worked on
    at the next pass without a wait: after a failed step the loop reads the current round from
    the chain, not from what the step recorded."""
    service, _ = service_with_sites(
        embedded,
        LocalStore(tmp_path / "store"),
        3,
        AggregatorSettings(
            valuation="loo", standing=False, explain_method=None, poll_interval=600.0
        ),
        tmp_path / "agg",
    )
    ledger = service.ledger
    open_round = ledger.open_round

    def lost_receipt(*a: Any, **k: Any) -> Any:
        open_round(*a, **k)
        monkeypatch.setattr(ledger, "open_round", open_round)
        raise LedgerError("receipt not read")

    monkeypatch.setattr(ledger, "open_round", lost_receipt)
    steps: list[int] = []
    step = service.step
    monkeypatch.setattr(service, "step", lambda **k: steps.append(1) or step(**k))
    waited_after: list[int] = []

    def wait(timeout: float | None = None) -> bool:
        waited_after.append(len(steps))
        service.stop_event.set()
        return True

    service.stop_event.wait = wait  # type: ignore[method-assign]
    assert service.run(rounds=1) == []
    assert ledger.current_round() == 1
    # the failed open (step 1) did not wait; the open round, not ready yet (step 2), did
    assert waited_after == [2]
