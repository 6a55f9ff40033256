"""The service reads back from memory what it put itself (issue 18): a round's start model and
terms come from this process, not the store; the sites' updates are fetched once each."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import fedtrail.aggregator.service as service_mod
from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.ledger import commitment
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.terms import RoundTerms
from fedtrail.storage.cid import compute_cid
from fedtrail.storage.codec import decode_model, encode_model, encode_update
from fedtrail.storage.store import LocalStore
from tests.aggregator.service_setup import service_with_sites
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CountingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: Counter[str] = Counter()
        self.puts: list[int] = []  # blobs per store request
        self.stored: list[list[str]] | None = None  # where to note put_many's CIDs, if anywhere
        self._many = threading.local()  # inside a put_many, in this thread (the finalize's
        # model is put in a thread of its own while the log is made)

    def put(self, data: bytes) -> str:
        if not getattr(self._many, "on", False):
            self.puts.append(1)
        return super().put(data)

    def put_many(self, blobs: Sequence[bytes]) -> list[str]:
        self.puts.append(len(blobs))
        self._many.on = True
        try:
            cids = super().put_many(blobs)
        finally:
            self._many.on = False
        if self.stored is not None:
            self.stored.append(cids)
        return cids

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        self.gets[cid] += 1
        return super().get(cid, sha256, max_bytes=max_bytes)


def profiled_noise(
    params: Mapping[str, torch.Tensor], gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """A small random update the free-rider screen's noise tests pass, so a round of them is
    valued, not cancelled: each value's noise is scaled by a ramp over its tensor (a per-row
    and per-column profile: i.i.d. noise is the white-noise test's), plus a rank-one part
    across each weight's rows (noise independent between blocks is the block-noise test's)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in params.items():
        noise = torch.linspace(0.1, 2.0, v.numel()).reshape(v.shape) * torch.randn(
            v.shape, generator=gen
        )
        if v.dim() >= 2:
            rows = torch.randn(v.shape[0], 1, generator=gen)
            cols = torch.randn(1, v.numel() // v.shape[0], generator=gen)
            noise = noise + (rows * cols).reshape(v.shape)
        out[k] = 0.01 * noise
    return out


def _rounds(
    service: AggregatorService, store: CountingStore, sites: list[Any], n: int
) -> list[str]:
    """``n`` finalized rounds of small random updates (:func:`profiled_noise`); every update's
    CID."""
    ledger, spec = service.ledger, ModelSpec()
    gen = torch.Generator().manual_seed(0)
    params = initial_model(spec, 0).state_dict()
    cids: list[str] = []
    for _ in range(n):
        r = service.open_next()
        cids += _revealed(service, store, sites, r, gen, params)
        service.step()  # value
        service.step()  # finalize
        assert ledger.get_round(r).phase == Phase.FINALIZED
    return cids


def _revealed(
    service: AggregatorService,
    store: CountingStore,
    sites: list[Any],
    r: int,
    gen: torch.Generator,
    params: Mapping[str, torch.Tensor],
) -> list[str]:
    """Every site commits and reveals a :func:`profiled_noise` update in open round ``r``;
    their CIDs."""
    ledger, spec = service.ledger, ModelSpec()
    info = ledger.get_round(r)
    blobs = [encode_update(profiled_noise(params, gen), spec=spec, round=r).blob for _ in sites]
    for acct, blob in zip(sites, blobs, strict=True):
        sha = hashlib.sha256(blob).hexdigest()
        ledger.commit_update(acct, r, commitment(acct.address, r, sha, 100))
    advance_time(ledger.w3, info.commit_deadline - next_block_timestamp(ledger.w3) + 1)
    cids = []
    for acct, blob in zip(sites, blobs, strict=True):
        cids.append(store.put(blob))
        ledger.reveal_update(acct, r, cids[-1], hashlib.sha256(blob).hexdigest(), 100)
    return cids


def test_the_previous_rounds_blobs_come_from_memory_and_from_the_store_after_a_restart(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """With standing, round r's valuation reads round r-1's updates, start and global models and
    log (its free-rider references and standing source). The service that finalized round r-1
    holds them (issue 18: 8 store requests of a 5-site round before): the store is asked for
    none of them, every update is fetched once, as a candidate. A restarted service reads them
    from the store and values the round exactly as the one holding them (scores, reasons,
    components, standing), and the audit passes."""
    store = CountingStore(tmp_path / "store")
    settings = AggregatorSettings(valuation="loo", explain_method=None)
    service, sites = service_with_sites(embedded, store, 3, settings, tmp_path / "agg")
    ledger = service.ledger
    cids = _rounds(service, store, sites, 3)
    assert all(store.gets[c] == 1 for c in cids), store.gets
    for r in (1, 2, 3):
        info = ledger.get_round(r)
        assert store.gets[info.log_cid] == 0, r
        assert store.gets[info.global_cid] == 0 and store.gets[info.start_cid] == 0, r
    assert set(service._held) == {3}  # round 2's were read into the references by round 3
    # round 4 revealed; valued by the service holding round 3's blobs (not recorded) ...
    gen = torch.Generator().manual_seed(4)
    params = initial_model(ModelSpec(), 0).state_dict()
    r = service.open_next()
    fresh = _revealed(service, store, sites, r, gen, params)
    info, prev = ledger.get_round(r), ledger.get_round(r - 1)
    before = Counter(store.gets)
    held = service._valuate(
        r, service._model(info.start_cid, info.start_sha256), service.candidates(r, info=info)
    )
    asked = store.gets - before
    assert all(asked[c] == 1 for c in fresh) and sum(asked.values()) == len(fresh), asked
    # ... and by a restarted one, which reads them from the store and records its valuation
    restarted = AggregatorService(
        ledger=ledger,
        store=store,
        account=embedded.aggregator,
        validation=service.validation,
        settings=settings,
        folder=tmp_path / "agg",
    )
    before = Counter(store.gets)
    restarted.step()  # value
    asked = store.gets - before
    assert all(asked[c] == 1 for c in cids[-len(sites) :]), asked  # round 3's updates
    assert all(asked[c] >= 1 for c in (prev.log_cid, prev.start_cid, prev.global_cid)), asked
    report, standing = held
    assert [(s.site, s.score, s.reason) for s in ledger.get_submissions(r)] == [
        (v.site, v.score, int(v.reason)) for v in report.sites
    ]
    saved, restored = restarted._load_valuation(r)
    assert restored is not None and standing is not None
    assert json.dumps(restored.to_json(), default=float) == json.dumps(
        standing.to_json(), default=float
    )
    assert saved == {
        v.site: json.loads(
            json.dumps(
                {
                    "site": v.site,
                    "score": v.score,
                    "reason": int(v.reason),
                    "components": v.components,
                    "explanation": v.explanation,
                },
                default=float,
            )
        )
        for v in report.sites
    }
    restarted.step()  # finalize
    assert ledger.get_round(r).phase == Phase.FINALIZED
    audits = verify_all(ledger, store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if c.failed]


def test_free_rider_references_are_read_once_however_many_rounds_use_them(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """With standing, each round's references are the updates of the latest stale_rounds (3)
    finalized rounds: an update is fetched once as a candidate and once as a reference, not
    again by every later round that uses it."""
    store = CountingStore(tmp_path / "store")
    service, sites = service_with_sites(
        embedded,
        store,
        3,
        AggregatorSettings(valuation="loo", explain_method=None),
        tmp_path / "agg",
    )
    cids = _rounds(service, store, sites, 4)
    assert all(store.gets[c] <= 2 for c in cids), store.gets


def test_the_service_reads_its_own_model_and_terms_from_memory(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    store = CountingStore(tmp_path / "store")
    spec = ModelSpec()
    service, sites = service_with_sites(
        embedded,
        store,
        3,
        AggregatorSettings(valuation="loo", standing=False, explain_method=None),
        tmp_path / "agg",
    )
    ledger = service.ledger
    gen = torch.Generator().manual_seed(0)
    params = initial_model(spec, 0).state_dict()
    finalized: list[list[str]] = []  # the CIDs the last finalize stored, by request
    for _ in range(2):  # the second round starts from the model the first finalized
        store.puts.clear()
        r = service.open_next()
        # the first round's model and terms in one store request; a later round's terms went
        # with the last finalize's model (its request: the model, then the terms): none at
        # its open
        assert store.puts == ([2] if r == 1 else [])
        info = ledger.get_round(r)
        if r > 1:
            assert [info.start_cid, info.terms_cid] in finalized, finalized
            terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
            assert terms.round == r and terms == service.round_terms(r)
        blobs = [
            encode_update(
                {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in params.items()},
                spec=spec,
                round=r,
            ).blob
            for _ in sites
        ]
        for acct, blob in zip(sites, blobs, strict=True):
            sha = hashlib.sha256(blob).hexdigest()
            ledger.commit_update(acct, r, commitment(acct.address, r, sha, 100))
        advance_time(ledger.w3, info.commit_deadline - next_block_timestamp(ledger.w3) + 1)
        cids = []
        for acct, blob in zip(sites, blobs, strict=True):
            cids.append(store.put(blob))
            ledger.reveal_update(acct, r, cids[-1], hashlib.sha256(blob).hexdigest(), 100)
        store.gets.clear()
        service.step()  # value
        finalized.clear()
        store.stored = finalized
        service.step()  # finalize
        store.stored = None
        assert ledger.get_round(r).phase == Phase.FINALIZED
        assert store.gets[info.start_cid] == 0 and store.gets[info.terms_cid] == 0
        assert all(store.gets[c] == 1 for c in cids), store.gets


def test_each_step_reads_the_round_and_the_chains_clock_once(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round the step just read is what valuation, the terms and finalize use (the
    ledger fixes its start model, terms and deadlines at open), and one read of the pending
    block's time serves both the readiness check and the valuation (issue 18: each was read
    twice per step). The step asks one poll (:meth:`Ledger.round_poll`: the current round, the
    round the service last saw, the clock; one JSON-RPC batch over HTTP) and nothing else
    while that round is still the current one; when another is (a stale guess), it reads that
    round's record and the clock once each after the poll."""
    store = CountingStore(tmp_path / "store")
    spec = ModelSpec()
    service, sites = service_with_sites(
        embedded,
        store,
        2,
        AggregatorSettings(valuation="loo", standing=False, explain_method=None),
        tmp_path / "agg",
    )
    ledger = service.ledger
    r = service.open_next()
    info = ledger.get_round(r)
    params = initial_model(spec, 0).state_dict()
    gen = torch.Generator().manual_seed(1)
    blobs = [
        encode_update(
            {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in params.items()},
            spec=spec,
            round=r,
        ).blob
        for _ in sites
    ]
    for acct, blob in zip(sites, blobs, strict=True):
        ledger.commit_update(
            acct, r, commitment(acct.address, r, hashlib.sha256(blob).hexdigest(), 100)
        )
    advance_time(ledger.w3, info.commit_deadline - next_block_timestamp(ledger.w3) + 1)
    for acct, blob in zip(sites, blobs, strict=True):
        ledger.reveal_update(acct, r, store.put(blob), hashlib.sha256(blob).hexdigest(), 100)
    service._terms.clear()  # as after a restart: the terms are read from the chain's record
    reads: Counter[str] = Counter()
    get_round, poll = ledger.get_round, ledger.round_poll
    monkeypatch.setattr(ledger, "get_round", lambda rid: reads.update(["round"]) or get_round(rid))
    monkeypatch.setattr(
        ledger, "round_poll", lambda *a, **k: reads.update(["poll"]) or poll(*a, **k)
    )
    clock = service_mod.next_block_timestamp
    monkeypatch.setattr(
        service_mod, "next_block_timestamp", lambda w3: reads.update(["clock"]) or clock(w3)
    )
    service._seen = r - 1  # a stale guess: as if another process had opened round r
    service.step()  # value
    assert reads == {"poll": 1, "round": 1, "clock": 1}
    assert get_round(r).phase == Phase.VALUED
    reads.clear()
    service.step()  # finalize: the round it saw is the current one
    assert reads == {"poll": 1, "round": 1}  # the poll's own read (one by one: no batch here)
    assert get_round(r).phase == Phase.FINALIZED
    reads.clear()
    service.step()  # opens the next round from the poll's counters
    assert reads["poll"] == 1 and "clock" not in reads  # its counters: no second read
    assert ledger.current_round() == r + 1


def test_updates_are_fetched_as_their_reveals_land_not_all_after_the_window(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll during the reveal window fetches and checks the updates revealed since the last
    one; a poll with no new reveal reads nothing more; an update the store does not hold yet is
    left for a later read; once the round is ready only what is left is fetched, and the
    valuation is the one the round gets without polls."""
    store = CountingStore(tmp_path / "store")
    spec = ModelSpec()
    service, sites = service_with_sites(
        embedded,
        store,
        3,
        AggregatorSettings(valuation="loo", standing=False, explain_method=None),
        tmp_path / "agg",
    )
    ledger = service.ledger
    r = service.open_next()
    info = ledger.get_round(r)
    params = initial_model(spec, 0).state_dict()
    gen = torch.Generator().manual_seed(2)
    blobs = [
        encode_update(
            {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in params.items()},
            spec=spec,
            round=r,
        ).blob
        for _ in sites
    ]
    shas = [hashlib.sha256(b).hexdigest() for b in blobs]
    for acct, sha in zip(sites, shas, strict=True):
        ledger.commit_update(acct, r, commitment(acct.address, r, sha, 100))
    advance_time(ledger.w3, info.commit_deadline - next_block_timestamp(ledger.w3) + 1)
    reads: Counter[str] = Counter()
    get_submissions = ledger.get_submissions
    monkeypatch.setattr(
        ledger,
        "get_submissions",
        lambda rid, **kw: reads.update(["submissions"]) or get_submissions(rid, **kw),
    )
    cid0 = store.put(blobs[0])
    ledger.reveal_update(sites[0], r, cid0, shas[0], 100)
    assert service.step() is None  # still open: the first update is fetched now
    assert store.gets[cid0] == 1 and reads["submissions"] == 1
    assert service.step() is None  # nothing new: no read
    assert reads["submissions"] == 1 and store.gets[cid0] == 1
    cid1 = compute_cid(blobs[1])  # revealed before its blob reaches the store
    ledger.reveal_update(sites[1], r, cid1, shas[1], 100)
    assert service.step() is None
    assert store.gets[cid1] == 1  # asked, not there yet: not recorded
    assert (sites[1].address, shas[1]) not in service._fetched.of(r)
    assert store.put(blobs[1]) == cid1
    cid2 = store.put(blobs[2])
    ledger.reveal_update(sites[2], r, cid2, shas[2], 100)
    store.gets.clear()
    service.step()  # every site revealed: valued, reading only what was not fetched yet
    assert ledger.get_round(r).phase == Phase.VALUED
    assert store.gets[cid0] == 0 and store.gets[cid1] == 1 and store.gets[cid2] == 1
    # the same round read by a service that never polled during the window: same candidates
    fresh = AggregatorService(
        ledger=ledger,
        store=store,
        account=embedded.aggregator,
        validation=load_bundled().val,
        settings=AggregatorSettings(valuation="loo", standing=False, explain_method=None),
        folder=tmp_path / "agg2",
    )
    pairs = fresh.candidates(r)
    assert [(s.site, c.status) for s, c in pairs] == [
        (s.site, c.status) for s, c in service.candidates(r)
    ]
    for (_, a), (_, b) in zip(pairs, service.candidates(r), strict=True):
        assert a.delta is not None and b.delta is not None
        assert all(torch.equal(a.delta[k], b.delta[k]) for k in a.delta)


def test_a_rounds_start_metrics_are_the_ones_its_start_models_finalize_computed(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finalize evaluates the start model only when this process did not finalize it (issue
    18): round 2's log records as its start metrics exactly what evaluating its start model
    gives, and round 1's log as its new model's."""
    store = CountingStore(tmp_path / "store")
    service, sites = service_with_sites(
        embedded,
        store,
        3,
        AggregatorSettings(valuation="loo", standing=False, explain_method=None),
        tmp_path / "agg",
    )
    ledger = service.ledger
    evaluate = service._evaluate
    evaluated: list[str] = []

    def counted(state: dict[str, torch.Tensor]) -> Any:
        evaluated.append(
            hashlib.sha256(encode_model(state, spec=service.spec, round=0)).hexdigest()
        )
        return evaluate(state)

    monkeypatch.setattr(service, "_evaluate", counted)
    _rounds(service, store, sites, 2)
    first, second = ledger.get_round(1), ledger.get_round(2)
    assert second.start_sha256 == first.global_sha256
    assert len(evaluated) == 3  # round 1: start and new model; round 2: its new model only
    logs = [json.loads(store.get(r.log_cid, r.log_sha256)) for r in (first, second)]
    start = decode_model(store.get(second.start_cid, second.start_sha256), spec=service.spec)[0]
    fresh = service_mod._metrics_record(evaluate(start)).to_json()
    assert logs[1]["metrics"]["before"] == fresh == logs[0]["metrics"]["after"]


@pytest.mark.anvil
def test_the_finalize_starts_from_the_submissions_its_poll_read(
    anvil: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a valuation the service's next poll reads the round's revealed updates in its own
    batch and the finalize starts from them (issue 18: one more round trip after the poll);
    the poll after that asks no submissions. The round verifies (the audit recomputes the
    global model from the chain's weights and the store)."""
    store = CountingStore(tmp_path / "store")
    service, sites = service_with_sites(
        anvil,
        store,
        2,
        AggregatorSettings(valuation="loo", standing=False, explain_method=None),
        tmp_path / "agg",
    )
    ledger = service.ledger
    gen = torch.Generator().manual_seed(3)
    params = initial_model(ModelSpec(), 0).state_dict()
    r = service.open_next()
    _revealed(service, store, sites, r, gen, params)
    service.step()  # value
    assert ledger.get_round(r).phase == Phase.VALUED
    reads: Counter[str] = Counter()
    get_submissions, round_poll = ledger.get_submissions, ledger.round_poll

    def counted(*a: Any, **k: Any) -> Any:
        reads.update(["submissions"])
        return get_submissions(*a, **k)

    def polled(*a: Any, **k: Any) -> Any:
        reads.update([f"poll{'+submissions' if k.get('submissions') else ''}"])
        return round_poll(*a, **k)

    monkeypatch.setattr(ledger, "get_submissions", counted)
    monkeypatch.setattr(ledger, "round_poll", polled)
    outcome = service.step()  # finalize
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    assert reads == {"poll+submissions": 1}  # parent: a poll, then the submissions
    reads.clear()
    service.step()  # opens the next round: its poll asks no submissions
    assert reads == {"poll": 1}
    monkeypatch.undo()
    assert sum(s.weight for s in ledger.get_submissions(r)) > 0
    assert all(a.passed for a in verify_all(ledger, store))
