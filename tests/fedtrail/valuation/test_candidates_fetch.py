"""A round's revealed updates are fetched concurrently (issue 18): the store's latency, not its
bandwidth, dominates a fetch, so the aggregator (and a peer validator) does not wait for one
update after another; the candidates are the ones a one-by-one fetch gives, in the same order."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from fedtrail.ledger import Submission
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.storage.codec import encode_update
from fedtrail.storage.store import LocalStore
from fedtrail.valuation.candidates import fetch_update, revealed_candidates

SPEC = ModelSpec()
ROUND = 3
SITES = 3


class MeetingStore:
    """A store whose ``get`` returns only once ``parties`` gets are in flight together (a
    one-by-one fetch breaks the barrier after ``timeout`` seconds)."""

    def __init__(self, inner: LocalStore, parties: int, timeout: float = 20.0) -> None:
        self.inner = inner
        self.barrier = threading.Barrier(parties, timeout=timeout)

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        self.barrier.wait()
        return self.inner.get(cid, sha256, max_bytes=max_bytes)


def _round(tmp_path: Path) -> tuple[LocalStore, list[Submission]]:
    store = LocalStore(tmp_path / "store")
    shapes = federated_state(initial_model(SPEC, 0))
    gen = torch.Generator().manual_seed(0)
    subs = []
    for i in range(SITES):
        delta = {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in shapes.items()}
        blob = encode_update(delta, spec=SPEC, round=ROUND).blob
        subs.append(
            Submission(
                round=ROUND,
                site=f"0x{i + 1:040x}",
                cid=store.put(blob),
                sha256=hashlib.sha256(blob).hexdigest(),
                num_samples=100 + i,
                score=0,
                reason=0,
                weight=0,
                commitment="",
                commit_order=i + 1,
                revealed=True,
            )
        )
    return store, subs


def test_updates_are_fetched_concurrently_and_as_one_by_one(tmp_path: Path) -> None:
    store, subs = _round(tmp_path)
    ledger: Any = SimpleNamespace(get_submissions=lambda round_id: list(subs))
    # valuation settings recording no thresholds: no privacy spend check (no events to read)
    terms: Any = SimpleNamespace(
        duplicates=DuplicateRule(), privacy=None, valuation={"method": "loo", "metric": "auc"}
    )
    meeting: Any = MeetingStore(store, parties=SITES)
    pairs = revealed_candidates(ledger, meeting, ROUND, terms=terms, spec=SPEC)
    assert [sub for sub, _ in pairs] == subs
    for sub, cand in pairs:
        status, _, delta = fetch_update(store, sub, round_id=ROUND, terms=terms, spec=SPEC)
        assert (cand.status, status) == (Reason.OK, Reason.OK)
        assert cand.delta is not None and delta is not None
        assert cand.delta.keys() == delta.keys()
        assert all(torch.equal(cand.delta[k], delta[k]) for k in delta)
