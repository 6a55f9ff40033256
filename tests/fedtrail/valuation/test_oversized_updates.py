"""An update larger than any the model spec allows is refused by the store before its bytes are
read: a site cannot make the aggregator and every peer validator buffer and hash up to the
store's general limit (256 MiB, FETCH_THREADS at a time) for a SmallCNN whose updates are
0.4 MiB. The other updates of the round are used as usual."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from fedtrail.ledger import Submission
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.storage.codec import Compression, default_max_bytes, encode_update
from fedtrail.storage.store import LocalStore
from fedtrail.valuation.candidates import revealed_candidates

SPEC = ModelSpec()
ROUND = 2


class CountingStore:
    """Records the size of every blob the store hands back."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.returned: list[int] = []

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        blob = self.inner.get(cid, sha256, max_bytes=max_bytes)
        self.returned.append(len(blob))
        return blob


def _sub(store: LocalStore, i: int, blob: bytes) -> Submission:
    return Submission(
        round=ROUND,
        site=f"0x{i + 1:040x}",
        cid=store.put(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        num_samples=100,
        score=0,
        reason=0,
        weight=0,
        commitment="",
        commit_order=i + 1,
        revealed=True,
    )


def test_an_oversized_update_is_malformed_and_never_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    gen = torch.Generator().manual_seed(0)
    shapes = federated_state(initial_model(SPEC, 0))
    delta = {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in shapes.items()}
    limit = default_max_bytes(SPEC)
    honest = encode_update(delta, spec=SPEC, round=ROUND).blob
    other = {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in shapes.items()}
    # another update (a topk8 re-encoding of ``delta`` itself is a DUPLICATE of it)
    sparse = encode_update(
        other, spec=SPEC, round=ROUND, compression=Compression(method="topk8", fraction=1.0)
    ).blob
    assert max(len(honest), len(sparse)) <= limit < 2 * 1024 * 1024  # the spec's own bound
    bomb = honest + b"\0" * (limit + 1 - len(honest))  # what a 256 MiB blob would be, smaller
    subs = [_sub(store, 0, honest), _sub(store, 1, bomb), _sub(store, 2, sparse)]
    ledger: Any = SimpleNamespace(get_submissions=lambda round_id: list(subs))
    # valuation settings recording no thresholds: no privacy spend check (no events to read)
    terms: Any = SimpleNamespace(
        duplicates=DuplicateRule(), privacy=None, valuation={"method": "loo", "metric": "auc"}
    )
    counting: Any = CountingStore(store)
    pairs = revealed_candidates(ledger, counting, ROUND, terms=terms, spec=SPEC)
    status = {sub.site: cand.status for sub, cand in pairs}
    assert list(status.values()) == [Reason.OK, Reason.MALFORMED, Reason.OK]
    detail = next(cand.detail for sub, cand in pairs if sub is subs[1])
    assert f"over the {limit}-byte limit" in detail  # the store's refusal, not the decoder's
    assert sorted(counting.returned) == sorted([len(honest), len(sparse)])  # the bomb: never
