"""README *Wire format* (attack a103): the parts of a ``topk8`` update, their dtypes and shapes,
``k``, the compression object and which tensors may travel dense, as
``scripts/independent/reader.py`` reads them from the README, against the codec. Each blob
below is canonical (``safetensors.numpy.save`` writes the dtype it is given), so only those
rules refuse it; before a103 the reader decoded every one and read an honest aggregator's
``MALFORMED`` as a lie (``scripts/attacks/real.sh scripts/attacks/a103_wire_reader_gap.py
MODE``). And (attack a104) the metadata's float fields spelled as JSON integers: text that
re-dumps to itself but is not what the codec writes back (``a104_metadata_number_spelling.py``);
and (a105) its integer fields spelled ``true`` or ``1.0``, which Python's ``==`` takes for 1
(``a105_metadata_integer_spelling.py``)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from fedtrail.errors import InvalidUpdate
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.privacy import DpParams
from fedtrail.storage.canonical import check_canonical_update
from fedtrail.storage.codec import Compression, decode_update, encode_update

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_wire_parts", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _reader()
SPEC = ModelSpec()
SHAPES = {name: shape for name, (shape, _) in SPEC.tensor_layout().items()}
Parts = dict[str, np.ndarray]
Mutation = Callable[[Parts, dict[str, Any]], None]


def _honest() -> bytes:
    g = torch.Generator().manual_seed(7)
    delta = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
    comp = Compression(method="topk8", fraction=0.5)
    return encode_update(delta, spec=SPEC, round=1, compression=comp).blob


def _mutated(change: Mutation) -> bytes:
    blob = _honest()
    n = int.from_bytes(blob[:8], "little")
    doc = json.loads(json.loads(blob[8 : 8 + n])["__metadata__"]["fedtrail"])
    parts = dict(st_load(blob))
    change(parts, doc)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return st_save(parts, metadata={"fedtrail": text})


def _retype(suffix: str, dtype: Any) -> Mutation:
    def change(parts: Parts, doc: dict[str, Any]) -> None:
        for k in parts:
            if k.endswith(suffix):
                parts[k] = parts[k].astype(dtype)

    return change


def _dense_bias(parts: Parts, doc: dict[str, Any]) -> None:
    idx, q, scale = (parts.pop("fc2.bias" + p) for p in (":idx", ":q", ":scale"))
    dense = np.zeros(2, dtype=np.float32)
    dense[np.cumsum(idx.astype(np.int64))] = q.astype(np.float32) * np.float32(scale)
    parts["fc2.bias"] = dense


def _doc(**comp: Any) -> Mutation:
    def change(parts: Parts, doc: dict[str, Any]) -> None:
        doc["compression"].update(comp)

    return change


def _read(blob: bytes) -> dict[str, np.ndarray]:
    _, meta, tensors = R.parse_safetensors(blob)
    text, doc = R.fedtrail_meta(meta)
    assert blob == R.canonical(tensors, text)  # canonical: only the wire rules can refuse it
    out: dict[str, np.ndarray] = R.decode_update(tensors, doc, SHAPES)
    return out


MUTATIONS: dict[str, Mutation] = {
    "q as I16": _retype(":q", np.int16),
    "idx as U64": _retype(":idx", np.uint64),
    "idx as I32": _retype(":idx", np.int32),
    "scale as F64": _retype(":scale", np.float64),
    "k of another fraction": _doc(fraction=0.4),
    "a trainable tensor dense": _dense_bias,
    "an extra compression key": _doc(level=1),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_parts_the_readme_refuses_are_refused_by_both(name: str) -> None:
    blob = _mutated(MUTATIONS[name])
    with pytest.raises(InvalidUpdate):
        decode_update(blob, spec=SPEC)
    with pytest.raises(ValueError):
        _read(blob)


def test_the_honest_topk8_blob_reads_alike() -> None:
    blob = _honest()
    ours, _ = decode_update(blob, spec=SPEC)
    theirs = _read(blob)
    assert set(theirs) == set(ours)
    for name, t in ours.items():
        assert np.array_equal(theirs[name], t.numpy()), name


DP = DpParams(noise_multiplier=2.0, max_grad_norm=1.0, sample_rate=0.5, steps=3, delta=1e-5)
SPELLINGS = {  # (compression, the float as the codec writes it, the same number as an integer)
    "topk8 fraction": (Compression(method="topk8", fraction=1.0), '"fraction":1.0', '"fraction":1'),
    "noise_multiplier": (Compression(), '"noise_multiplier":2.0', '"noise_multiplier":2'),
    "max_grad_norm": (Compression(), '"max_grad_norm":1.0', '"max_grad_norm":1'),
    "sample_rate": (Compression(), '"sample_rate":0.5', '"sample_rate":0.5'),
}


def _spelled(comp: Compression, old: str, new: str) -> bytes:
    g = torch.Generator().manual_seed(3)
    delta = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
    blob = encode_update(delta, spec=SPEC, round=1, compression=comp, dp=DP).blob
    n = int.from_bytes(blob[:8], "little")
    text = json.loads(blob[8 : 8 + n])["__metadata__"]["fedtrail"]
    assert old in text
    return st_save(dict(st_load(blob)), metadata={"fedtrail": text.replace(old, new)})


def _codec_reads(blob: bytes) -> bool:
    try:
        _, meta = decode_update(blob, spec=SPEC, expected_round=1)
        check_canonical_update(blob, spec=SPEC, expected_round=1, meta=meta)
    except InvalidUpdate:
        return False
    return True


def _reader_reads(blob: bytes) -> bool:
    _, meta, tensors = R.parse_safetensors(blob)
    text, doc = R.fedtrail_meta(meta)  # the text re-dumps to itself either way
    R.decode_update(tensors, doc, SHAPES)
    return bool(R.canonical_blob(blob, tensors, text, doc))


@pytest.mark.parametrize("name", sorted(SPELLINGS))
def test_float_fields_spelled_as_integers_are_not_canonical(name: str) -> None:
    comp, old, new = SPELLINGS[name]
    blob = _spelled(comp, old, new)
    as_float = old == new  # sample_rate 0.5 has no integer spelling: the control
    assert _codec_reads(blob) is as_float
    assert _reader_reads(blob) is as_float


INTEGERS = {  # the codec's text, a spelling Python's == takes for the same integer
    "format_version true": ('"format_version":1,', '"format_version":true,'),
    "format_version 1.0": ('"format_version":1,', '"format_version":1.0,'),
    "round true": ('"round":1,', '"round":true,'),
    "round 1.0": ('"round":1,', '"round":1.0,'),
    "control": ('"round":1,', '"round":1,'),
}


@pytest.mark.parametrize("name", sorted(INTEGERS))
def test_integer_fields_are_json_integers(name: str) -> None:
    old, new = INTEGERS[name]
    blob = _spelled(Compression(), old, new)
    _, meta, tensors = R.parse_safetensors(blob)
    text, doc = R.fedtrail_meta(meta)  # re-dumps to itself, canonical bytes
    assert R.canonical_blob(blob, tensors, text, doc)
    valid = old == new
    assert _codec_reads(blob) is valid
    assert R.update_header_ok(doc, 1, SPEC.spec_hash()) is valid
