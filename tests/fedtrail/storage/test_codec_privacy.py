"""The optional DP parameters in an update blob's metadata: kept, canonical, strictly validated."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedtrail.errors import InvalidUpdate
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.privacy import DpParams
from fedtrail.storage.canonical import check_canonical_update
from fedtrail.storage.codec import (
    METADATA_KEY,
    Compression,
    decode_model,
    decode_update,
    decode_update_stored,
    encode_model,
    encode_update,
    zero_state,
)

SPEC = ModelSpec()
DP = DpParams(noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.064, steps=32, delta=1e-5)


def _delta() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=gen) for k, v in zero_state(SPEC).items()}


def _meta_doc(blob: bytes) -> dict[str, Any]:
    """The fedtrail metadata of a blob, read straight from its safetensors header."""
    n = int.from_bytes(blob[:8], "little")
    doc: dict[str, Any] = json.loads(json.loads(blob[8 : 8 + n])["__metadata__"][METADATA_KEY])
    return doc


def _with_meta(blob: bytes, doc: dict[str, Any]) -> bytes:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return st_save(st_load(blob), metadata={METADATA_KEY: text})


@pytest.mark.parametrize("compression", [Compression(), Compression(method="topk8")])
def test_dp_parameters_travel_in_the_update(compression: Compression) -> None:
    blob = encode_update(_delta(), spec=SPEC, round=3, compression=compression, dp=DP).blob
    delta, meta = decode_update(blob, spec=SPEC, expected_round=3)
    assert meta.dp == DP
    assert _meta_doc(blob)["dp"] == DP.to_json()
    assert set(delta) == set(zero_state(SPEC))
    check_canonical_update(blob, spec=SPEC, expected_round=3)


def test_an_update_without_dp_keeps_its_bytes() -> None:
    """Without DP parameters an update is the wire format of before DP existed: the tensors
    and the canonical metadata with no ``dp`` key, written here by safetensors itself."""
    with_none = encode_update(_delta(), spec=SPEC, round=3, dp=None).blob
    meta = {
        "compression": {"method": "none"},
        "format_version": 1,
        "kind": "update",
        "round": 3,
        "spec_hash": SPEC.spec_hash(),
    }
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert with_none == st_save(_delta(), metadata={METADATA_KEY: text})
    assert "dp" not in _meta_doc(with_none)
    assert decode_update(with_none, spec=SPEC)[1].dp is None
    assert with_none != encode_update(_delta(), spec=SPEC, round=3, dp=DP).blob


@pytest.mark.parametrize(
    "bad",
    [
        {**DP.to_json(), "steps": -1},
        {**DP.to_json(), "noise_multiplier": 0},
        {**DP.to_json(), "extra": 1},
        {k: v for k, v in DP.to_json().items() if k != "delta"},
        "1.0",
        None,
    ],
)
def test_malformed_dp_parameters_are_refused(bad: Any) -> None:
    blob = encode_update(_delta(), spec=SPEC, round=3, dp=DP).blob
    doc = _meta_doc(blob)
    doc["dp"] = bad
    with pytest.raises(InvalidUpdate, match="DP parameters"):
        decode_update(_with_meta(blob, doc), spec=SPEC)


def test_only_updates_may_carry_dp() -> None:
    blob = encode_model(zero_state(SPEC), spec=SPEC, round=0)
    doc = _meta_doc(blob)
    doc["dp"] = DP.to_json()
    with pytest.raises(InvalidUpdate, match="keys"):
        decode_model(_with_meta(blob, doc), spec=SPEC)


@pytest.mark.parametrize("compression", [Compression(), Compression(method="topk8")])
def test_the_canonical_check_on_the_decoders_stored_tensors_judges_as_on_the_blob(
    compression: Compression,
) -> None:
    """An audit hands ``check_canonical_update`` the tensors ``decode_update_stored`` already
    read (no second parse): a canonical blob still passes and a padded header still fails."""
    blob = encode_update(_delta(), spec=SPEC, round=3, compression=compression, dp=DP).blob
    delta, meta, stored = decode_update_stored(blob, spec=SPEC, expected_round=3)
    plain, plain_meta = decode_update(blob, spec=SPEC, expected_round=3)
    assert meta == plain_meta and all(torch.equal(delta[k], plain[k]) for k in plain)
    check_canonical_update(blob, spec=SPEC, expected_round=3, meta=meta, parts=stored)
    n = int.from_bytes(blob[:8], "little")
    padded_header = blob[8 : 8 + n] + b" " * 8  # same JSON, 8 more bytes: still decodes
    padded = (n + 8).to_bytes(8, "little") + padded_header + blob[8 + n :]
    _, padded_meta, padded_stored = decode_update_stored(padded, spec=SPEC, expected_round=3)
    with pytest.raises(InvalidUpdate, match="canonical"):
        check_canonical_update(
            padded, spec=SPEC, expected_round=3, meta=padded_meta, parts=padded_stored
        )
