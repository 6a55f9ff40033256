"""`audit privacy` reads each update with the model spec of its round's terms, which the
aggregator wrote. A spec much larger than any store returns (``audit verify`` fails it as
``model.size``) let a colluding site's topk8 update of a few bytes per tensor expand to the
spec's full dense size in the auditor's memory: measured, a 1,888-byte update decoded to 785 MB
(2.4 GB peak), and a wider spec takes every gigabyte the auditor has."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from fedtrail.auditor.privacy import Status, _RoundReader
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.terms import RoundTerms
from fedtrail.storage import topk8
from fedtrail.storage.codec import Compression, default_max_bytes, encode_update, zero_state
from fedtrail.storage.store import DEFAULT_MAX_BYTES, LocalStore

HUGE = ModelSpec(hidden=2**15, width=64)  # fc1 is 32768 x 6272: 785 MB dense
SITE = "0x" + "11" * 20


@dataclass
class _Round:
    terms_cid: str
    terms_sha256: str


class _Ledger:
    def __init__(self, terms: tuple[str, str]) -> None:
        self.terms = terms

    def get_round(self, round_id: int) -> _Round:
        return _Round(*self.terms)


class _History:
    def remember(self, *args: object) -> None:
        pass


def _put(store: LocalStore, blob: bytes) -> tuple[str, str]:
    return store.put(blob), hashlib.sha256(blob).hexdigest()


def _terms(spec: ModelSpec) -> bytes:
    return RoundTerms(
        round=1,
        aggregation_rule={"name": "weighted"},
        valuation={"method": "loo", "metric": "balanced_loss"},
        model_spec=spec.to_json(),
        spec_hash=spec.spec_hash(),
        seed=0,
        validation_sha256="0" * 64,
        validation_images=1,
        commit_seconds=600,
        reveal_seconds=600,
    ).to_bytes()


def _tiny_topk8_update(spec: ModelSpec) -> bytes:
    """A valid topk8 update for ``spec`` carrying one entry a tensor (built without the dense
    delta, as a hostile site would)."""
    from fedtrail.storage.codec import _layout, _meta, _serialize

    layout = _layout(spec)
    comp = Compression(method="topk8", fraction=1e-12)
    parts: dict[str, torch.Tensor] = {}
    for name in layout.shapes:
        parts.update(topk8.TOPK8.encode(name, torch.ones(1), comp.fraction)[0])
    return _serialize(parts, _meta("update", layout, 1, comp))


def test_a_terms_spec_no_store_returns_is_refused_before_an_update_is_decoded(
    tmp_path: Path,
) -> None:
    assert default_max_bytes(HUGE) > DEFAULT_MAX_BYTES
    store = LocalStore(tmp_path / "store")
    blob = _tiny_topk8_update(HUGE)
    assert len(blob) < 4096
    cid, sha = _put(store, blob)
    reader = _RoundReader(_Ledger(_put(store, _terms(HUGE))), store, 1, _History())  # type: ignore[arg-type]
    spend = reader.check(SITE, cid, sha, 0, None)
    assert spend.status == Status.UNREADABLE
    assert "over the store's" in spend.detail and "model.size" in spend.detail


def test_an_honest_spec_still_reads_its_updates(tmp_path: Path) -> None:
    spec = ModelSpec()
    store = LocalStore(tmp_path / "store")
    update = encode_update(zero_state(spec), spec=spec, round=1).blob
    cid, sha = _put(store, update)
    reader = _RoundReader(_Ledger(_put(store, _terms(spec))), store, 1, _History())  # type: ignore[arg-type]
    assert reader.check(SITE, cid, sha, 0, None).status == Status.NOT_PRIVATE
