"""The aggregator reads models and terms under their own size limits, not the store's 256 MiB: a
start model or terms document the chain names but someone stored oversized is refused before it
is read (``ContentTooLarge``), where the whole blob used to be read and then refused by the
decoder. The same for the Flower strategy's model reads."""

from __future__ import annotations

import hashlib
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedtrail.aggregator.service import AggregatorService
from fedtrail.errors import ContentTooLarge
from fedtrail.flower.strategy import LedgerStrategy
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.terms import MAX_TERMS_BYTES
from fedtrail.storage.codec import default_max_bytes
from fedtrail.storage.store import LocalStore

SPEC = ModelSpec()


def _oversized(store: LocalStore, size: int) -> tuple[str, str]:
    blob = b"\0" * size
    return store.put(blob), hashlib.sha256(blob).hexdigest()


def _service(store: LocalStore) -> SimpleNamespace:
    ns = SimpleNamespace(_kept={}, store=store, spec=SPEC, _last_model=None)
    ns._read = types.MethodType(AggregatorService._read, ns)
    return ns


def test_the_aggregator_refuses_an_oversized_model_before_reading_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    cid, sha = _oversized(store, default_max_bytes(SPEC) + 1)
    with pytest.raises(ContentTooLarge, match="limit"):
        AggregatorService._model(_service(store), cid, sha)  # type: ignore[arg-type]


def test_the_aggregator_reads_terms_under_the_terms_limit(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    cid, sha = _oversized(store, MAX_TERMS_BYTES + 1)
    with pytest.raises(ContentTooLarge):
        _service(store)._read(cid, sha, max_bytes=MAX_TERMS_BYTES)
    small = b"{}"
    assert _service(store)._read(store.put(small), hashlib.sha256(small).hexdigest(), max_bytes=2)


def test_the_flower_strategy_refuses_an_oversized_model_before_reading_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    cid, sha = _oversized(store, default_max_bytes(SPEC) + 1)
    strategy = SimpleNamespace(service=SimpleNamespace(store=store, spec=SPEC))
    with pytest.raises(ContentTooLarge):
        LedgerStrategy._stored(strategy, cid, sha)  # type: ignore[arg-type]
