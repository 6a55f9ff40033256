"""An independent reader and writer of fedtrail's blobs, written from the README's *Wire format*
section alone: the header parsed as raw bytes + JSON, tensors read with ``np.frombuffer``, topk8
expanded by hand, blobs re-created with ``safetensors.numpy.save``. The codec is called only to
produce blobs (or to decode them, on the other side of a comparison). Last, a topk8 federation's
global models recomputed from the chain and the stored blobs the way an auditor does (the two
casts), with this reader."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import NodeConfig
from fedtrail.protocol.codes import Phase
from fedtrail.simulation.federation import SiteSetup, build_federation
from fedtrail.storage.codec import Compression, decode_model, decode_update, encode_update
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv

SPEC = ModelSpec()
SHAPES = {name: shape for name, (shape, _) in SPEC.tensor_layout().items()}  # the model's own
DTYPES = {"F32": "<f4", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4"}


# ---------------------------------------------------------------- the reader


def read_blob(blob: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(fedtrail metadata, blob tensors): u64 little-endian header length, JSON header,
    ``__metadata__["fedtrail"]`` a JSON string, tensors at their data_offsets after the header."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = json.loads(header.pop("__metadata__")["fedtrail"])
    data = blob[8 + n :]
    arrays = {
        name: np.frombuffer(
            data[e["data_offsets"][0] : e["data_offsets"][1]], DTYPES[e["dtype"]]
        ).reshape(e["shape"])
        for name, e in header.items()
    }
    return meta, arrays


def dense(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every model tensor as float32: dense entries as they are; a topk8 tensor from its
    ``:idx`` gaps (cumulative sum = flat C-order positions), ``:q`` int8 values and float32
    ``:scale`` (value = float32(q) * scale in float32), zeros elsewhere."""
    comp = meta["compression"]
    out = {}
    for name, shape in SHAPES.items():
        if name in arrays:
            out[name] = arrays[name].astype("<f4")
            continue
        assert comp["method"] == "topk8"
        numel = math.prod(shape)
        k = min(numel, max(1, math.ceil(comp["fraction"] * numel)))
        gaps, q, scale = arrays[name + ":idx"], arrays[name + ":q"], arrays[name + ":scale"]
        assert gaps.shape == q.shape == (k,) and scale.shape == () and scale.dtype == np.float32
        flat = np.zeros(numel, np.float32)
        flat[np.cumsum(gaps.astype(np.int64))] = q.astype(np.float32) * scale
        out[name] = flat.reshape(shape)
    return out


def is_canonical(blob: bytes) -> bool:
    """The blob is safetensors' serialization of its own stored tensors with the metadata as
    compact sorted-key JSON."""
    meta, arrays = read_blob(blob)
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return st_save(dict(arrays), metadata={"fedtrail": text}) == blob


# ---------------------------------------------------------------- the writer


def canonical_meta(kind: str, round_id: int, compression: dict[str, Any]) -> str:
    doc = {
        "compression": compression,
        "format_version": 1,
        "kind": kind,
        "round": round_id,
        "spec_hash": SPEC.spec_hash(),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def topk8_parts(name: str, v: np.ndarray, fraction: float) -> dict[str, np.ndarray]:
    """The README's encoder: the k largest |v| (ties: lower positions), ascending positions as
    gaps in the smallest of u8/u16/u32, scale = float32(max|kept| / 127) (1.0 when all zero,
    the smallest subnormal when it underflows, one ulp down when scale * 127 overflows),
    q = round-half-even(v / scale) in float32, clipped to [-127, 127]."""
    flat = v.reshape(-1)
    k = min(flat.size, max(1, math.ceil(fraction * flat.size)))
    order = np.lexsort((np.arange(flat.size), -np.abs(flat)))  # |v| descending, then position
    idx = np.sort(order[:k]).astype(np.int64)
    vals = flat[idx]
    amax = float(np.abs(vals).max())
    scale = np.float32(amax / 127.0) if amax > 0 else np.float32(1.0)
    if scale == 0:  # amax / 127 underflows float32: the smallest subnormal
        scale = np.float32(2.0**-149)
    with np.errstate(over="ignore"):
        if not np.isfinite(scale * np.float32(127)):  # amax near float32's limit: one ulp down
            scale = np.nextafter(scale, np.float32(0))
    q = np.clip(np.rint(vals / scale), -127, 127).astype(np.int8)
    gaps = np.diff(idx, prepend=0)
    gap_dtype = next(d for d in (np.uint8, np.uint16, np.uint32) if gaps.max() <= np.iinfo(d).max)
    return {
        name + ":idx": gaps.astype(gap_dtype),
        name + ":q": q,
        name + ":scale": np.array(scale, dtype=np.float32),
    }


def _delta(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in SHAPES.items():
        v = rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 1)
        if seed % 2:  # ties at the k-th magnitude and zeros
            v = np.round(v * 3) / 3 * 10.0 ** rng.integers(-3, 1)
        out[name] = v.astype(np.float32)
    return out


FRACTIONS = [0.001, 0.01, 0.05, 0.3, 1.0]


@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("seed", range(4))
def test_reader_expands_topk8_bit_for_bit(seed: int, fraction: float) -> None:
    delta = _delta(seed)
    blob = encode_update(
        {k: torch.from_numpy(v) for k, v in delta.items()},
        spec=SPEC,
        round=3,
        compression=Compression(method="topk8", fraction=fraction),
    ).blob
    meta, arrays = read_blob(blob)
    assert meta == json.loads(
        canonical_meta("update", 3, {"fraction": fraction, "method": "topk8"})
    )
    # safetensors' own reader sees the same tensors
    assert {k: v.tobytes() for k, v in st_load(blob).items()} == {
        k: v.tobytes() for k, v in arrays.items()
    }
    assert is_canonical(blob)
    # a header padded with spaces is still valid safetensors, but no longer canonical
    (n,) = struct.unpack("<Q", blob[:8])
    padded = struct.pack("<Q", n + 8) + blob[8 : 8 + n] + b" " * 8 + blob[8 + n :]
    assert read_blob(padded)[1].keys() == arrays.keys() and not is_canonical(padded)
    mine = dense(meta, arrays)
    theirs, _ = decode_update(blob, spec=SPEC)
    assert list(theirs) == list(SHAPES)
    for name in SHAPES:
        assert mine[name].tobytes() == theirs[name].numpy().tobytes(), name


@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("seed", range(4))
def test_writer_makes_the_canonical_bytes(seed: int, fraction: float) -> None:
    """Re-encoding from the README gives the blob's bytes (what its sha256 on chain pins, and
    what the canonical-encoding check compares), and the residual is what was not sent."""
    delta = _delta(seed)
    encoded = encode_update(
        {k: torch.from_numpy(v) for k, v in delta.items()},
        spec=SPEC,
        round=2,
        compression=Compression(method="topk8", fraction=fraction),
    )
    parts: dict[str, np.ndarray] = {}
    for name, v in delta.items():
        parts.update(topk8_parts(name, v, fraction))
    meta = canonical_meta("update", 2, {"fraction": fraction, "method": "topk8"})
    mine = st_save(parts, metadata={"fedtrail": meta})
    assert hashlib.sha256(mine).hexdigest() == hashlib.sha256(encoded.blob).hexdigest()
    sent = dense(json.loads(meta), parts)
    for name, v in delta.items():
        assert (v - sent[name]).tobytes() == encoded.residual[name].numpy().tobytes()


@pytest.mark.parametrize("magnitude", [1e-44, 1e-40, 3.4e38, 0.0])
def test_writer_edge_scales(magnitude: float) -> None:
    """Subnormal, underflowing, near-overflow and all-zero tensors."""
    rng = np.random.default_rng(7)
    delta = {
        k: (np.sign(rng.standard_normal(s)) * magnitude * rng.random(s)).astype(np.float32)
        for k, s in SHAPES.items()
    }
    delta["fc2.bias"][:] = np.float32(magnitude)  # the largest entries, sign and all
    encoded = encode_update(
        {k: torch.from_numpy(v) for k, v in delta.items()},
        spec=SPEC,
        round=1,
        compression=Compression(method="topk8", fraction=0.05),
    )
    parts: dict[str, np.ndarray] = {}
    for name, v in delta.items():
        parts.update(topk8_parts(name, v, 0.05))
    meta = canonical_meta("update", 1, {"fraction": 0.05, "method": "topk8"})
    assert st_save(parts, metadata={"fedtrail": meta}) == encoded.blob
    mine = dense(*read_blob(encoded.blob))
    theirs, _ = decode_update(encoded.blob, spec=SPEC)
    assert all(mine[k].tobytes() == theirs[k].numpy().tobytes() for k in SHAPES)


def test_writer_makes_the_canonical_dense_bytes() -> None:
    delta = _delta(5)
    blob = encode_update({k: torch.from_numpy(v) for k, v in delta.items()}, spec=SPEC, round=0)
    mine = st_save(delta, metadata={"fedtrail": canonical_meta("update", 0, {"method": "none"})})
    assert mine == blob.blob
    meta, arrays = read_blob(blob.blob)
    assert all(dense(meta, arrays)[k].tobytes() == v.tobytes() for k, v in delta.items())


# ---------------------------------------------------------------- an auditor's replay


def _site(env: ChainEnv, i: int) -> SiteSetup:
    cfg = NodeConfig(
        poll_interval=0.05,
        training=TrainConfig(epochs=1, seed=i),
        compression=Compression(method="topk8", fraction=0.05),
    )
    train = load_bundled().train.subset(np.arange(80 * i, 80 * i + 80))
    return SiteSetup(account=env.sites[i], name=f"site-{i}", train=train, config=cfg)


@pytest.mark.anvil
@pytest.mark.usefixtures("one_torch_thread")
def test_auditor_recomputes_topk8_global_models(anvil: ChainEnv, tmp_path: Path) -> None:
    """Two rounds of three topk8 sites: each global model is float32(start + float32(sum_i
    w_i/1e18 * delta_i)), both sums in float64, the updates in ascending address order, with
    the deltas expanded by the reader above; and each round starts from the last global."""
    fed = build_federation(
        w3=anvil.w3,
        coordinator=anvil.coordinator,
        aggregator=anvil.aggregator,
        sites=[_site(anvil, i) for i in range(3)],
        store=LocalStore(tmp_path / "store"),
        folder=tmp_path,
        validation=load_bundled().val,
        settings=AggregatorSettings(valuation="loo", explain_method=None),
    )
    previous = None
    for _ in range(2):
        outcome = fed.run_round()
        assert outcome is not None and outcome.phase == Phase.FINALIZED
        info = fed.ledger.get_round(outcome.round)
        if previous is not None:
            assert info.start_sha256 == previous
        start_meta, start = read_blob(fed.store.get(info.start_cid, info.start_sha256))
        assert start_meta["kind"] == "model" and start_meta["compression"] == {"method": "none"}
        subs = sorted(fed.ledger.get_submissions(outcome.round), key=lambda s: int(s.site, 16))
        used = [s for s in subs if s.weight > 0]
        assert len(used) >= 2 and sum(s.weight for s in subs) == 10**18
        acc = {k: np.zeros(s, np.float64) for k, s in SHAPES.items()}
        for s in used:
            update_blob = fed.store.get(s.cid, s.sha256)
            assert is_canonical(update_blob)
            meta, arrays = read_blob(update_blob)
            assert meta["kind"] == "update" and meta["round"] == outcome.round
            assert meta["compression"] == {"fraction": 0.05, "method": "topk8"}
            for k, v in dense(meta, arrays).items():
                acc[k] += (s.weight / 10**18) * v.astype(np.float64)
        blob = fed.store.get(info.global_cid, info.global_sha256)
        assert is_canonical(blob)
        meta, got = read_blob(blob)
        assert meta["kind"] == "model" and meta["round"] == outcome.round
        for k in SHAPES:
            want = (start[k].astype(np.float64) + acc[k].astype(np.float32)).astype(np.float32)
            assert got[k].tobytes() == want.tobytes(), k
        # and the codec reads the same model
        theirs, _ = decode_model(blob, spec=SPEC)
        assert all(theirs[k].numpy().tobytes() == got[k].tobytes() for k in SHAPES)
        previous = info.global_sha256


def test_the_spec_hash_from_the_readme_text() -> None:
    """The README's spec hash: sha256 of the canonical JSON of the spec and the tensors in
    state-dict order (names, shapes as listed there, "float32"), written here by hand."""
    spec = {"arch": "smallcnn", "hidden": 64, "image_size": 28, "in_channels": 1}
    spec |= {"num_classes": 2, "width": 16}
    layout = [
        ["conv1.weight", [16, 1, 3, 3]],
        ["conv1.bias", [16]],
        ["conv2.weight", [32, 16, 3, 3]],
        ["conv2.bias", [32]],
        ["fc1.weight", [64, 1568]],
        ["fc1.bias", [64]],
        ["fc2.weight", [2, 64]],
        ["fc2.bias", [2]],
    ]
    doc = {"spec": spec, "tensors": [[n, s, "float32"] for n, s in layout]}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(text.encode()).hexdigest() == ModelSpec().spec_hash()


README = Path(__file__).resolve().parents[3] / "README.md"
LAYOUT_MARKER = "<!-- layout-reference -->\n```python\n"


def readme_layout() -> Any:
    """The ``layout(spec)`` function of the README's *Wire format* section, run from its text."""
    text = README.read_text(encoding="utf-8")
    start = text.index(LAYOUT_MARKER) + len(LAYOUT_MARKER)
    source = text[start : text.index("\n```", start)]
    namespace: dict[str, Any] = {}
    exec(compile(source, "README.md layout-reference", "exec"), namespace)
    return namespace["layout"]


LAYOUT_SPECS = [
    ModelSpec(),
    ModelSpec(in_channels=3, num_classes=5, image_size=64, width=8, hidden=32),
    ModelSpec(arch="resnet10", image_size=28),
    ModelSpec(arch="resnet10", in_channels=3, num_classes=4, image_size=64, input_norm="zscore"),
    ModelSpec(arch="resnet18", image_size=32),
    ModelSpec(arch="densenet121", image_size=32),
    ModelSpec(arch="densenet121", image_size=64, norm="group", num_classes=3),
]


@pytest.mark.parametrize("spec", LAYOUT_SPECS, ids=lambda s: f"{s.arch}-{s.norm}-{s.num_classes}")
def test_the_readme_layout_is_every_models(spec: ModelSpec) -> None:
    """The README's layout function, given only the spec's JSON, lists the model's federated
    tensors with their shapes in state-dict order, and the spec hash computed from that list
    is the spec's (so a reader without torch can check the terms' spec_hash)."""
    layout = readme_layout()(spec.to_json())
    assert layout == [[n, list(shape)] for n, (shape, _) in spec.tensor_layout().items()]
    doc = {"spec": spec.to_json(), "tensors": [[n, s, "float32"] for n, s in layout]}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(text.encode()).hexdigest() == spec.spec_hash()
    stats = [n for n, _ in layout if n.endswith((".running_mean", ".running_var"))]
    assert tuple(stats) == spec.statistic_names()
