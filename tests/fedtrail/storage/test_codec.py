"""Tests of fedtrail.storage.codec: round trips, canonical bytes, error feedback, hostile blobs."""

from __future__ import annotations

import contextlib
import io
import json
import math
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load

from fedtrail.errors import ConfigError, InvalidUpdate
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.storage.codec import (
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    BlobMeta,
    Compression,
    decode_model,
    decode_update,
    default_max_bytes,
    encode_model,
    encode_update,
)

REPO = Path(__file__).resolve().parents[3]
SPEC = ModelSpec()
SPEC8 = ModelSpec(width=8)
TINY = ModelSpec(width=1, hidden=2, image_size=4)  # 42 parameters: fast fuzzing
TOPK = Compression(method="topk8", fraction=0.05)
FUZZ = settings(
    max_examples=150,
    deadline=2000,  # a hang would blow this; normal examples take a few ms
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


def shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    return {name: shape for name, (shape, _) in spec.tensor_layout().items()}


def rand_state(spec: ModelSpec, seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) * scale for n, s in shapes(spec).items()}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(torch.int32), b.view(torch.int32))
    )


def split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    hlen = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + hlen]), blob[8 + hlen :]


def rebuild(header: Any, data: bytes, pad: bool = True) -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def meta_doc(header: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(header["__metadata__"]["fedtrail"])
    return doc


def with_meta(blob: bytes, **changes: Any) -> bytes:
    header, data = split(blob)
    doc = meta_doc(header)
    doc.update(changes)
    header["__metadata__"]["fedtrail"] = json.dumps(doc)
    return rebuild(header, data)


def reason(fn: Callable[..., object], *args: Any, **kwargs: Any) -> str:
    """The reason of the ``InvalidUpdate`` that ``fn(*args, **kwargs)`` must raise."""
    with pytest.raises(InvalidUpdate) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value.reason, str) and info.value.reason
    return info.value.reason


# ---------------------------------------------------------------- fixtures (module-level cache)

_MODEL_BLOB = {
    s: encode_model(initial_model(s, 0).state_dict(), spec=s, round=2) for s in (SPEC, TINY)
}
_DENSE_UPD = {s: encode_update(rand_state(s, 1, 0.01), spec=s, round=3).blob for s in (SPEC, TINY)}
_TOPK_UPD = {
    s: encode_update(
        rand_state(s, 2, 0.01),
        spec=s,
        round=3,
        compression=Compression(method="topk8", fraction=0.3),
    ).blob
    for s in (SPEC, TINY)
}


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("spec", [SPEC, SPEC8], ids=["width16", "width8"])
def test_model_round_trip_is_bit_exact(spec: ModelSpec) -> None:
    state = initial_model(spec, seed=7).state_dict()
    blob = encode_model(state, spec=spec, round=5)
    out, meta = decode_model(blob, spec=spec, expected_round=5)
    assert list(out) == list(state)
    assert all(same_bits(out[n], state[n]) for n in state)
    assert meta == BlobMeta(
        kind="model",
        format_version=FORMAT_VERSION,
        spec_hash=spec.spec_hash(),
        round=5,
        compression=Compression(),
    )
    model = spec.build()
    model.load_state_dict(out)  # usable as is
    assert encode_model(out, spec=spec, round=5) == blob


@pytest.mark.parametrize("spec", [SPEC, SPEC8], ids=["width16", "width8"])
def test_dense_update_round_trip(spec: ModelSpec) -> None:
    delta = rand_state(spec, 3, 0.01)
    enc = encode_update(delta, spec=spec, round=1)
    out, meta = decode_update(enc.blob, spec=spec, expected_round=1)
    assert meta.kind == "update" and meta.compression.method == "none"
    assert all(same_bits(out[n], delta[n]) for n in delta)
    assert all(not r.any() for r in enc.residual.values())


@pytest.mark.parametrize("spec", [SPEC, SPEC8], ids=["width16", "width8"])
@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.3, 1.0])
def test_topk8_round_trip(spec: ModelSpec, fraction: float) -> None:
    comp = Compression(method="topk8", fraction=fraction)
    delta = rand_state(spec, 4, 0.01)
    enc = encode_update(delta, spec=spec, round=9, compression=comp)
    out, meta = decode_update(enc.blob, spec=spec, expected_round=9)
    assert meta.compression == comp
    for name, d in delta.items():
        o = out[name]
        assert o.dtype == torch.float32 and o.shape == d.shape
        k = comp.keep(d.numel())
        assert int((o != 0).sum()) <= k
        # what was sent plus what was kept back is the input
        torch.testing.assert_close(o + enc.residual[name], d, rtol=0, atol=1e-7)
        # the kept entries are the largest in magnitude
        kept = o.reshape(-1) != 0
        if 0 < int(kept.sum()) < d.numel():
            mags = d.reshape(-1).abs()
            assert float(mags[kept].min()) >= float(mags[~kept].max())
        # 8-bit quantization error is at most half a step
        step = float(d.abs().max()) / 127
        assert float((o - d)[o != 0].abs().max()) <= step / 2 * 1.001


@settings(max_examples=60, deadline=2000, derandomize=True)
@given(
    values=st.lists(st.integers(-3, 3), min_size=42, max_size=42),
    fraction=st.floats(0.01, 1.0),
)
def test_topk8_selection_breaks_ties_by_position(values: list[int], fraction: float) -> None:
    """The kept entries equal a stable sort's first k: the largest, lowest positions on ties."""
    flat = torch.tensor(values, dtype=torch.float32)
    state, pos = {}, 0
    for name, shape in shapes(TINY).items():
        state[name] = flat[pos : pos + math.prod(shape)].reshape(shape)
        pos += math.prod(shape)
    assert pos == flat.numel()
    comp = Compression(method="topk8", fraction=fraction)
    parts = st_load(encode_update(state, spec=TINY, round=0, compression=comp).blob)
    for name, t in state.items():
        k = comp.keep(t.numel())
        order = torch.sort(t.reshape(-1).abs(), descending=True, stable=True).indices[:k]
        sent = parts[f"{name}:idx"].to(torch.int64).cumsum(0)
        assert sent.tolist() == sorted(order.tolist()), name


def test_topk8_cuts_bytes_by_more_than_90_percent() -> None:
    delta = rand_state(SPEC, 5, 0.01)
    dense = len(encode_update(delta, spec=SPEC, round=1).blob)
    sparse = len(encode_update(delta, spec=SPEC, round=1, compression=TOPK).blob)
    assert 1 - sparse / dense >= 0.90, (dense, sparse)


def test_topk8_of_all_zeros_and_tiny_values() -> None:
    zeros = {n: torch.zeros(s) for n, s in shapes(TINY).items()}
    out, _ = decode_update(
        encode_update(zeros, spec=TINY, round=0, compression=TOPK).blob, spec=TINY
    )
    assert all(not t.any() for t in out.values())
    tiny = {n: torch.full(s, 1e-45) for n, s in shapes(TINY).items()}  # a float32 subnormal
    enc = encode_update(tiny, spec=TINY, round=0, compression=TOPK)
    out, _ = decode_update(enc.blob, spec=TINY)
    for n in out:
        torch.testing.assert_close(out[n] + enc.residual[n], tiny[n], rtol=0, atol=0)


def test_none_sends_the_residual_and_clears_it() -> None:
    delta, residual = rand_state(TINY, 6), rand_state(TINY, 7)
    enc = encode_update(delta, spec=TINY, round=1, residual=residual)
    out, _ = decode_update(enc.blob, spec=TINY)
    for n in delta:
        torch.testing.assert_close(out[n], delta[n] + residual[n])
        assert not enc.residual[n].any()


def test_encoder_refuses_what_the_decoder_would_refuse() -> None:
    good = rand_state(TINY, 8)
    name = next(iter(good))
    cases: list[tuple[dict[str, torch.Tensor], str]] = [
        ({**good, name: good[name].double()}, "dtype"),
        ({**good, name: good[name].reshape(-1)}, "shape"),
        ({k: v for k, v in good.items() if k != name}, "lacks"),
        ({**good, "extra": torch.zeros(1)}, "unexpected"),
        ({**good, name: torch.full_like(good[name], math.nan)}, "non-finite"),
    ]
    for state, word in cases:
        assert word in reason(encode_update, state, spec=TINY, round=0)
        assert word in reason(encode_model, state, spec=TINY, round=0)
    huge = {k: torch.full_like(v, 3e38) for k, v in good.items()}
    assert "non-finite" in reason(
        lambda: encode_update(huge, spec=TINY, round=0, residual=huge, compression=TOPK)
    )
    with pytest.raises(ConfigError):
        encode_model(good, spec=TINY, round=-1)
    # values at the float32 limit: int8 steps of max/127 could round past it
    fmax = torch.finfo(torch.float32).max
    for value in (fmax, -fmax, 3.3e38):
        top = {k: torch.full_like(v, value) for k, v in good.items()}
        enc = encode_update(top, spec=TINY, round=0, compression=TOPK)
        out, _ = decode_update(enc.blob, spec=TINY)
        for k in out:
            torch.testing.assert_close(out[k] + enc.residual[k], top[k])


def test_encoder_accepts_non_contiguous_and_grad_tensors() -> None:
    model = initial_model(TINY, 0)
    state: dict[str, torch.Tensor] = dict(model.named_parameters())  # requires_grad
    state["fc1.weight"] = state["fc1.weight"].detach().t().contiguous().t()  # non-contiguous
    blob = encode_model(state, spec=TINY, round=0)
    assert blob == encode_model(model.state_dict(), spec=TINY, round=0)


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({}, True),
        ({"method": "topk8", "fraction": 1}, True),
        ({"method": "zip"}, False),
        ({"method": "topk8", "fraction": 0.0}, False),
        ({"method": "topk8", "fraction": 1.5}, False),
        ({"method": "topk8", "fraction": math.nan}, False),
        ({"method": "topk8", "fraction": True}, False),
    ],
)
def test_compression_settings_are_validated(kwargs: dict[str, Any], ok: bool) -> None:
    if ok:
        Compression(**kwargs)
    else:
        with pytest.raises(ConfigError):
            Compression(**kwargs)


def test_none_normalizes_fraction() -> None:
    assert Compression(method="none", fraction=0.5) == Compression()
    assert Compression(method="topk8", fraction=0.05).keep(105_000) == 5250
    assert Compression(method="topk8", fraction=0.01).keep(2) == 1


# ---------------------------------------------------------------- canonical bytes

finite32 = st.floats(
    width=32, allow_nan=False, allow_infinity=False, min_value=-(2.0**100), max_value=2.0**100
)


@st.composite
def tiny_states(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    out = {}
    for name, shape in shapes(TINY).items():
        values = draw(st.lists(finite32, min_size=math.prod(shape), max_size=math.prod(shape)))
        out[name] = torch.tensor(values, dtype=torch.float32).reshape(shape)
    return out


@settings(max_examples=60, deadline=2000, derandomize=True)
@given(
    state=tiny_states(),
    fraction=st.sampled_from([0.01, 0.2, 0.5, 1.0]),
    round=st.integers(0, 2**63),
)
def test_encoding_is_canonical(state: dict[str, torch.Tensor], fraction: float, round: int) -> None:
    reordered = dict(reversed(state.items()))
    blob = encode_model(state, spec=TINY, round=round)
    assert blob == encode_model(reordered, spec=TINY, round=round)
    out, _ = decode_model(blob, spec=TINY)
    assert all(same_bits(out[n], state[n]) for n in state)  # -0.0 and subnormals survive
    assert encode_model(out, spec=TINY, round=round) == blob
    comp = Compression(method="topk8", fraction=fraction)
    first = encode_update(state, spec=TINY, round=round, compression=comp)
    again = encode_update(reordered, spec=TINY, round=round, compression=comp)
    assert first.blob == again.blob
    assert all(same_bits(first.residual[n], again.residual[n]) for n in state)
    dec, _ = decode_update(first.blob, spec=TINY)
    for n in state:
        torch.testing.assert_close(dec[n] + first.residual[n], state[n], rtol=1e-6, atol=0)


_CHILD = textwrap.dedent(
    """
    import hashlib, torch
    from fedtrail.storage.codec import Compression, encode_model, encode_update
    from fedtrail.ml.models import ModelSpec, initial_model
    spec = ModelSpec()
    g = torch.Generator().manual_seed(11)
    delta = {n: torch.randn(s, generator=g) * 0.01
             for n, (s, _) in spec.tensor_layout().items()}
    blobs = [encode_model(initial_model(spec, 3).state_dict(), spec=spec, round=4),
             encode_update(delta, spec=spec, round=4).blob,
             encode_update(delta, spec=spec, round=4,
                           compression=Compression(method="topk8", fraction=0.05)).blob]
    print(" ".join(hashlib.sha256(b).hexdigest() for b in blobs))
    """
)


def test_encoding_is_identical_across_processes() -> None:
    """safetensors' Rust side seeds its hash maps per process: compare this process and another."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(_CHILD, {})
    assert proc.stdout.strip() == buf.getvalue().strip()
    assert len(set(proc.stdout.split())) == 3


# ---------------------------------------------------------------- error feedback and residuals


def test_error_feedback_loses_nothing_over_rounds() -> None:
    delta = rand_state(SPEC8, 12, 0.01)
    comp = Compression(method="topk8", fraction=0.05)
    residual: dict[str, torch.Tensor] | None = None
    sent = {n: torch.zeros_like(d, dtype=torch.float64) for n, d in delta.items()}
    rounds = 6
    for r in range(rounds):
        enc = encode_update(delta, spec=SPEC8, round=r, compression=comp, residual=residual)
        out, _ = decode_update(enc.blob, spec=SPEC8, expected_round=r)
        for n in sent:
            sent[n] += out[n].double()
        residual = enc.residual
    assert residual is not None
    for n, d in delta.items():
        total = sent[n] + residual[n].double()
        torch.testing.assert_close(total, d.double() * rounds, rtol=0, atol=1e-6)
    # error feedback moves mass: after several rounds more distinct entries were sent than k
    assert int((sent["fc1.weight"] != 0).sum()) > comp.keep(delta["fc1.weight"].numel())


# ---------------------------------------------------------------- targeted hostile blobs


def test_wrong_spec_round_kind_and_limit() -> None:
    blob = _DENSE_UPD[TINY]
    assert "spec hash" in reason(
        lambda: decode_update(blob, spec=ModelSpec(width=2, hidden=2, image_size=4))
    )
    assert "round 3 but round 4" in reason(lambda: decode_update(blob, spec=TINY, expected_round=4))
    assert "kind" in reason(lambda: decode_model(blob, spec=TINY))
    assert "kind" in reason(lambda: decode_update(_MODEL_BLOB[TINY], spec=TINY))
    assert "over the limit" in reason(lambda: decode_update(blob, spec=TINY, max_bytes=100))
    assert "must be bytes" in reason(lambda: decode_update(bytearray(blob), spec=TINY))  # type: ignore[arg-type]
    assert len(_TOPK_UPD[SPEC]) < default_max_bytes(SPEC)
    assert "over the limit" in reason(
        lambda: decode_update(b"\0" * (default_max_bytes(TINY) + 1), spec=TINY)
    )


def test_reasons_name_the_check_for_shapes_names_dtypes() -> None:
    header, data = split(_MODEL_BLOB[SPEC])
    header["fc1.weight"]["shape"] = [3]
    assert reason(lambda: decode_model(rebuild(header, data), spec=SPEC)) == (
        "tensor fc1.weight has shape (3,) but the model expects (64, 1568)"
    )
    header, data = split(_MODEL_BLOB[TINY])
    header["fc2.bias"]["dtype"] = "F16"
    assert "dtype" in reason(lambda: decode_model(rebuild(header, data), spec=TINY))
    header, data = split(_MODEL_BLOB[TINY])
    header["fc3.bias"] = header.pop("fc2.bias")
    r = reason(lambda: decode_model(rebuild(header, data), spec=TINY))
    assert "lacks" in r and "fc2.bias" in r
    header, data = split(_MODEL_BLOB[TINY])
    header["extra"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    assert "unexpected" in reason(lambda: decode_model(rebuild(header, data), spec=TINY))


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(h: dict[str, Any]) -> None:
        node = h
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


@pytest.mark.parametrize(
    ("mutate", "word"),
    [
        (_set(("fc1.weight", "shape"), [2**62, 2**62]), "shape"),
        (_set(("fc1.weight", "data_offsets"), [0, 2**64 + 5]), "spans"),
        (_set(("fc1.weight", "data_offsets"), [-8, 0]), "data_offsets"),
        (_set(("fc1.weight", "shape"), [True, 2]), "shape"),
        (_set(("fc1.weight", "dtype"), 7), "dtype"),
        (_set(("fc1.weight",), []), "must be an object"),
        (_set(("fc1.weight", "extra"), 1), "must be an object"),
        (_set(("__metadata__", "other"), "x"), "other than"),
        (_set(("__metadata__",), {}), "no 'fedtrail'"),
        (_set(("__metadata__", "fedtrail"), "{not json"), "not valid JSON"),
        (_set(("__metadata__", "fedtrail"), "[]"), "not a JSON object"),
        (_set(("__metadata__", "fedtrail"), 5), "not a string"),
    ],
)
def test_header_mutations(mutate: Callable[[dict[str, Any]], None], word: str) -> None:
    header, data = split(_MODEL_BLOB[TINY])
    mutate(header)
    assert word in reason(lambda: decode_model(rebuild(header, data), spec=TINY))


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"format_version": 2}, "format version"),
        ({"format_version": True}, "format version"),
        ({"extra": 1}, "keys"),
        ({"round": -1}, "non-negative"),
        ({"round": 1.5}, "non-negative"),
        ({"compression": {"method": "topk8", "fraction": 0.5}}, "uncompressed"),
        ({"compression": {"method": "none", "fraction": 0.5}}, "keys"),
        ({"compression": "none"}, "compression"),
        ({"spec_hash": ["x"]}, "spec hash"),
    ],
)
def test_metadata_mutations(changes: dict[str, Any], word: str) -> None:
    blob = with_meta(_MODEL_BLOB[TINY], **changes)
    assert word in reason(lambda: decode_model(blob, spec=TINY))


def test_overlapping_and_gapped_offsets() -> None:
    header, data = split(_MODEL_BLOB[TINY])
    entries = sorted((e["data_offsets"][0], n) for n, e in header.items() if n != "__metadata__")
    first, second = entries[0][1], entries[1][1]
    header[second]["data_offsets"] = header[first]["data_offsets"]  # same sizes? maybe not
    r = reason(lambda: decode_model(rebuild(header, data), spec=TINY))
    assert "overlaps" in r or "spans" in r
    header, data = split(_MODEL_BLOB[TINY])
    assert "cover" in reason(lambda: decode_model(rebuild(header, data + b"\0" * 8), spec=TINY))
    header, data = split(_MODEL_BLOB[TINY])
    for e in header.values():
        if "data_offsets" in e:
            e["data_offsets"] = [o + 4 for o in e["data_offsets"]]
    assert "gap" in reason(lambda: decode_model(rebuild(header, b"\0" * 4 + data), spec=TINY))


def test_header_json_traps() -> None:
    blob = _MODEL_BLOB[TINY]
    hlen = struct.unpack("<Q", blob[:8])[0]
    text = blob[8 : 8 + hlen].decode()
    dup = text.replace("{", '{"fc2.bias":{},', 1)
    cases = {
        "duplicate": dup,
        "NaN": text.replace('"round\\":2', '"round\\":NaN'),
        "deep": "[" * 60_000,
        "utf8": "\udcff",
    }
    for what, t in cases.items():
        raw = t.encode("utf-8", "surrogateescape")
        r = reason(decode_model, struct.pack("<Q", len(raw)) + raw, spec=TINY)
        assert "header" in r or "metadata" in r or "not allowed" in r, (what, r)
    assert "over" in reason(lambda: decode_model(struct.pack("<Q", 2**64 - 1) + b"{}", spec=TINY))
    assert "only" in reason(lambda: decode_model(struct.pack("<Q", 100) + b"{}", spec=TINY))
    assert "too short" in reason(lambda: decode_model(b"\1\0", spec=TINY))
    # Well-formed but not canonical (whitespace before the JSON): accepted, same tensors. The
    # decoder checks validity, not canonical form; the sha256 on chain is over the bytes as sent.
    header, data = split(blob)
    h = b" " + json.dumps(header).encode()
    out, _ = decode_model(struct.pack("<Q", len(h)) + h + data, spec=TINY)
    assert encode_model(out, spec=TINY, round=2) == blob
    assert default_max_bytes(TINY) > MAX_HEADER_BYTES


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values(value: float) -> None:
    header, data = split(_DENSE_UPD[TINY])
    off = header["fc1.weight"]["data_offsets"][0] + 4
    bad = data[:off] + struct.pack("<f", value) + data[off + 4 :]
    assert "non-finite" in reason(lambda: decode_update(rebuild(header, bad), spec=TINY))
    assert "non-finite" in reason(
        lambda: decode_model(rebuild(with_meta_header(header, kind="model"), bad), spec=TINY)
    )


def with_meta_header(header: dict[str, Any], **changes: Any) -> dict[str, Any]:
    h: dict[str, Any] = json.loads(json.dumps(header))
    doc = meta_doc(h)
    doc.update(changes)
    h["__metadata__"]["fedtrail"] = json.dumps(doc)
    return h


def _topk_part(blob: bytes, name: str) -> tuple[dict[str, Any], bytes, int, int]:
    header, data = split(blob)
    a, b = header[name]["data_offsets"]
    return header, data, a, b


def _patch(data: bytes, a: int, raw: bytes) -> bytes:
    return data[:a] + raw + data[a + len(raw) :]


def test_compressed_blob_checks() -> None:
    blob = _TOPK_UPD[SPEC]
    # scale zero, negative, NaN, Inf
    for value in (0.0, -1.0, math.nan, math.inf):
        header, data, a, _ = _topk_part(blob, "fc1.weight:scale")
        bad = rebuild(header, _patch(data, a, struct.pack("<f", value)))
        assert "scale" in reason(decode_update, bad, spec=SPEC)
    # scale so large that dequantized values overflow
    header, data, a, _ = _topk_part(blob, "fc1.weight:scale")
    bad = rebuild(header, _patch(data, a, struct.pack("<f", 3e38)))
    assert "non-finite" in reason(lambda: decode_update(bad, spec=SPEC))
    # q = -128
    header, data, a, _ = _topk_part(blob, "fc1.weight:q")
    bad = rebuild(header, _patch(data, a, b"\x80"))
    assert "-128" in reason(lambda: decode_update(bad, spec=SPEC))
    # index past the end: a huge gap at the end
    header, data, a, b = _topk_part(blob, "fc2.bias:idx")
    dt = header["fc2.bias:idx"]["dtype"]
    width = {"U8": 1, "U16": 2, "U32": 4}[dt]
    bad = rebuild(header, _patch(data, b - width, b"\xff" * width))
    assert "past" in reason(lambda: decode_update(bad, spec=SPEC))
    # repeated index: a zero gap after the first
    header, data, a, b = _topk_part(blob, "fc1.weight:idx")
    dt = header["fc1.weight:idx"]["dtype"]
    width = {"U8": 1, "U16": 2, "U32": 4}[dt]
    bad = rebuild(header, _patch(data, a + width, b"\0" * width))
    assert "repeated" in reason(lambda: decode_update(bad, spec=SPEC))
    # counts inconsistent with k: claim another fraction
    assert "shape" in reason(
        lambda: decode_update(
            with_meta(blob, compression={"method": "topk8", "fraction": 0.2}), spec=SPEC
        )
    )
    assert "compression" in reason(
        lambda: decode_update(
            with_meta(blob, compression={"method": "topk8", "fraction": 2.0}), spec=SPEC
        )
    )
    assert "compression" in reason(
        lambda: decode_update(
            with_meta(blob, compression={"method": "gzip", "fraction": 0.2}), spec=SPEC
        )
    )
    # wrong index dtype
    header, data = split(blob)
    header["fc1.weight:idx"]["dtype"] = "I64"
    assert "dtype" in reason(lambda: decode_update(rebuild(header, data), spec=SPEC))
    # a dense blob cannot pretend to be compressed and vice versa
    assert "lacks" in reason(
        lambda: decode_update(
            with_meta(_DENSE_UPD[SPEC], compression={"method": "topk8", "fraction": 0.3}), spec=SPEC
        )
    )
    assert "lacks" in reason(
        lambda: decode_update(with_meta(blob, compression={"method": "none"}), spec=SPEC)
    )


# ---------------------------------------------------------------- fuzzing

VALID = [_MODEL_BLOB[TINY], _DENSE_UPD[TINY], _TOPK_UPD[TINY]]


def decode_any(blob: bytes) -> None:
    """Run every decoder; each must return a valid result or raise InvalidUpdate."""
    for fn in (decode_model, decode_update):
        try:
            out, meta = fn(blob, spec=TINY)
        except InvalidUpdate as e:
            assert isinstance(e.reason, str) and e.reason
            continue
        assert list(out) == list(shapes(TINY))
        for name, shape in shapes(TINY).items():
            t = out[name]
            assert t.dtype == torch.float32 and tuple(t.shape) == shape
            assert bool(torch.isfinite(t).all())
        assert meta.spec_hash == TINY.spec_hash()


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(blob: bytes) -> None:
    decode_any(blob)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_fuzz_truncated(blob: bytes, data: st.DataObject) -> None:
    decode_any(blob[: data.draw(st.integers(0, len(blob) - 1))])


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_fuzz_bit_flips(blob: bytes, data: st.DataObject) -> None:
    hlen = struct.unpack("<Q", blob[:8])[0]
    spots = st.one_of(st.integers(0, (8 + hlen) * 8 - 1), st.integers(0, len(blob) * 8 - 1))
    flips = data.draw(st.lists(spots, min_size=1, max_size=4))
    buf = bytearray(blob)
    for bit in flips:
        buf[bit // 8] ^= 1 << (bit % 8)
    decode_any(bytes(buf))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_fuzz_header_fields(blob: bytes, data: st.DataObject) -> None:
    """Replace one header field (or metadata field) with arbitrary JSON."""
    header, body = split(blob)
    name = data.draw(st.sampled_from(sorted(header)))
    if name == "__metadata__":
        doc = meta_doc(header)
        key = data.draw(st.sampled_from([*sorted(doc), "extra"]))
        doc[key] = data.draw(json_values)
        header[name]["fedtrail"] = json.dumps(doc)
    else:
        key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))
        header[name][key] = data.draw(json_values)
    decode_any(rebuild(header, body, pad=data.draw(st.booleans())))


shape_like = st.lists(st.integers(0, 2**64), max_size=4)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_fuzz_shapes_offsets_and_data(blob: bytes, data: st.DataObject) -> None:
    """Plausible but wrong shapes, offsets and data (including NaN/Inf payloads)."""
    header, body = split(blob)
    names = sorted(n for n in header if n != "__metadata__")
    name = data.draw(st.sampled_from(names))
    choice = data.draw(st.integers(0, 3))
    if choice == 0:
        header[name]["shape"] = data.draw(shape_like)
    elif choice == 1:
        header[name]["data_offsets"] = data.draw(
            st.lists(st.integers(0, 2**64), min_size=2, max_size=2)
        )
    elif choice == 2:
        header[name]["dtype"] = data.draw(
            st.sampled_from(
                ["F32", "F16", "BF16", "F64", "I8", "U8", "U16", "U32", "I64", "BOOL", "X"]
            )
        )
    else:
        at = data.draw(st.integers(0, max(0, len(body) - 4)))
        raw = struct.pack("<f", data.draw(st.floats(width=32)))
        body = body[:at] + raw + body[at + 4 :]
    decode_any(rebuild(header, body))


@FUZZ
@given(st.sampled_from(VALID), json_values, json_values, st.booleans())
def test_fuzz_compression_settings(blob: bytes, method: Any, fraction: Any, topk: bool) -> None:
    """Arbitrary JSON inside the compression settings (unhashable methods, odd fractions)."""
    comp = {"method": method, "fraction": fraction}
    if topk:
        comp["method"] = "topk8"
    decode_any(with_meta(blob, compression=comp))
    decode_any(with_meta(blob, compression={"method": method}))


def test_a_densenet121_update_fits_the_header_bound_of_its_layout() -> None:
    """606 tensors: a header of ~76 KB dense and ~220 KB topk8 (over the base 64 KiB), within
    the layout's bound of 64 KiB + 512 B a tensor; a header over that bound is still refused."""
    spec = ModelSpec(arch="densenet121", image_size=32)
    state = federated_state(initial_model(spec, 0))
    blob = encode_model(state, spec=spec, round=0)
    assert struct.unpack("<Q", blob[:8])[0] > MAX_HEADER_BYTES
    back, _ = decode_model(blob, spec=spec)
    assert all(torch.equal(back[k], state[k]) for k in state)
    delta = {k: v * 0.01 for k, v in state.items()}
    sparse = encode_update(delta, spec=spec, round=1, compression=Compression(method="topk8"))
    assert decode_update(sparse.blob, spec=spec)[0].keys() == state.keys()
    bound = MAX_HEADER_BYTES + 512 * len(state)
    with pytest.raises(InvalidUpdate, match=f"over {bound}"):
        decode_model(struct.pack("<Q", bound + 1) + b"{}", spec=spec)
