"""The canonical check compares headers only: judged against the full re-encoding it replaces.

``check_canonical_update`` once serialized every update again (``safetensors.torch.save`` of its
stored tensors and metadata) and compared the bytes; it now writes only the header
(``canonical_header``) and compares that and the blob's length. These tests hold it to the old
judgement: the header is ``save``'s for every dtype a method stores, and every blob of a corpus
of non-canonical variants that the decoder accepts is refused by both, a canonical one by
neither.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import save as st_save

from fedtrail.errors import InvalidUpdate
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.privacy import DpParams
from fedtrail.storage.canonical import canonical_header, check_canonical_update
from fedtrail.storage.codec import (
    METADATA_KEY,
    Compression,
    decode_update_stored,
    encode_update,
    zero_state,
)

TINY = ModelSpec(width=1, hidden=2, image_size=4)  # topk8 gaps in U8
SPEC = ModelSpec()
WIDE = ModelSpec(width=4, hidden=1200, image_size=16)  # a 153,600-entry layer: U32 gaps
DP = DpParams(noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.064, steps=32, delta=1e-5)
SETTINGS = [Compression(), Compression(method="topk8"), Compression(method="topk8", fraction=1.0)]


def _blob(spec: ModelSpec, compression: Compression, dp: DpParams | None, seed: int = 0) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    delta = {k: torch.randn(v.shape, generator=gen) for k, v in zero_state(spec).items()}
    return encode_update(delta, spec=spec, round=3, compression=compression, dp=dp).blob


def _reencoded(blob: bytes, spec: ModelSpec) -> bool:
    """The old judgement: the decoded stored tensors and metadata, saved again, give ``blob``."""
    _, meta, parts = decode_update_stored(blob, spec=spec, expected_round=3)
    return bool(st_save(dict(parts), metadata={METADATA_KEY: meta._json()}) == blob)


def _header_check(blob: bytes, spec: ModelSpec) -> bool:
    _, meta, parts = decode_update_stored(blob, spec=spec, expected_round=3)
    try:
        check_canonical_update(blob, spec=spec, expected_round=3, meta=meta, parts=parts)
    except InvalidUpdate as e:
        assert "canonical" in e.reason
        return False
    return True


def _decodes(blob: bytes, spec: ModelSpec) -> bool:
    try:
        decode_update_stored(blob, spec=spec, expected_round=3)
    except InvalidUpdate:
        return False
    return True


def _split(blob: bytes) -> tuple[str, bytes]:
    n = int.from_bytes(blob[:8], "little")
    return blob[8 : 8 + n].decode("utf-8"), blob[8 + n :]


def _join(header: str | bytes, data: bytes) -> bytes:
    raw = header.encode("utf-8") if isinstance(header, str) else header
    return len(raw).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize("spec", [TINY, SPEC, WIDE], ids=["tiny", "smallcnn", "wide"])
def test_the_header_is_the_one_safetensors_writes(spec: ModelSpec) -> None:
    seen: set[torch.dtype] = set()
    for compression in SETTINGS:
        for dp in (None, DP):
            blob = _blob(spec, compression, dp)
            _, meta, parts = decode_update_stored(blob, spec=spec, expected_round=3)
            seen |= {t.dtype for t in parts.values()}
            header = canonical_header(parts, meta._json())
            assert header is not None
            assert _join(header, b"") == blob[: 8 + len(header)]
            check_canonical_update(blob, spec=spec, expected_round=3, meta=meta, parts=parts)
            check_canonical_update(blob, spec=spec, expected_round=3)
    # one kept entry per tensor, the last: its gap is the tensor's size less one
    last = {k: torch.zeros(v.numel()) for k, v in zero_state(spec).items()}
    for t in last.values():
        t[-1] = 1.0
    sparse = {k: t.reshape(zero_state(spec)[k].shape) for k, t in last.items()}
    blob = encode_update(
        sparse, spec=spec, round=3, compression=Compression(method="topk8", fraction=1e-9)
    ).blob
    _, meta, parts = decode_update_stored(blob, spec=spec, expected_round=3)
    seen |= {t.dtype for t in parts.values()}
    check_canonical_update(blob, spec=spec, expected_round=3, meta=meta, parts=parts)
    if spec is WIDE:
        want = {torch.float32, torch.int8, torch.uint8, torch.uint16, torch.uint32}
        assert want <= seen


def test_the_header_matches_save_on_odd_names_dtypes_and_metadata() -> None:
    """Names and metadata needing JSON escapes, every stored dtype, empty and 0-d shapes."""
    rng = random.Random(7)
    dtypes = [torch.float32, torch.int8, torch.uint8, torch.uint16, torch.uint32]
    alphabet = 'ab.Z_9"\\\n\t\x01\x7fé€ /'
    for _ in range(200):
        parts = {}
        for _ in range(rng.randint(1, 6)):
            name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
            shape = tuple(rng.randint(0, 4) for _ in range(rng.randint(0, 3)))
            parts[name] = torch.zeros(shape, dtype=rng.choice(dtypes))
        metadata = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        blob = st_save(parts, metadata={METADATA_KEY: metadata})
        header = canonical_header(parts, metadata)
        assert header is not None and _join(header, blob[8 + len(header) :]) == blob


def test_an_unknown_dtype_falls_back_to_the_full_reencoding() -> None:
    assert canonical_header({"x": torch.zeros(2, dtype=torch.float64)}, "{}") is None


def _variants(blob: bytes) -> dict[str, bytes]:
    """Non-canonical dresses of one canonical blob (most still decode), and the blob itself."""
    header, data = _split(blob)
    doc = json.loads(header)
    meta_text = doc["__metadata__"][METADATA_KEY]
    body = header.rstrip(" ")
    names = [k for k in doc if k != "__metadata__"]
    first, second = names[0], names[1]
    e1, e2 = doc[first], doc[second]
    out: dict[str, bytes] = {"canonical": blob}
    out["8 more spaces"] = _join(header + " " * 8, data)
    out["1 more space"] = _join(header + " ", data)
    out["padding stripped"] = _join(body, data)
    out["padding as tabs"] = _join(body + "\t" * (len(header) - len(body)), data)
    out["padding as newlines"] = _join(body + "\n" * (len(header) - len(body)), data)
    out["padding as NULs"] = _join(body + "\0" * (len(header) - len(body)), data)
    out["leading space"] = _join(" " + body, data)
    out["space after a colon"] = _join(header.replace('"dtype":', '"dtype": ', 1), data)
    out["space in a shape"] = _join(header.replace('"shape":[', '"shape":[ ', 1), data)
    out["keys of an entry reordered"] = _join(
        header.replace(
            json.dumps({"dtype": e1["dtype"], "shape": e1["shape"]}, separators=(",", ":"))[1:-1],
            json.dumps({"shape": e1["shape"], "dtype": e1["dtype"]}, separators=(",", ":"))[1:-1],
            1,
        ),
        data,
    )
    meta_entry = json.dumps({"__metadata__": doc["__metadata__"]}, separators=(",", ":"))[1:-1]
    moved = body.replace(meta_entry + ",", "", 1)[:-1] + "," + meta_entry + "}"
    out["metadata last"] = _join(moved, data)
    out["escaped dtype"] = _join(header.replace('"F32"', '"F\\u0033\\u0032"', 1), data)
    out["escaped name"] = _join(
        header.replace(f'"{first}"', f'"{first[0]}\\u00{ord(first[1]):02x}{first[2:]}"', 1), data
    )
    out["minus zero offset"] = _join(
        header.replace('"data_offsets":[0,', '"data_offsets":[-0,', 1), data
    )
    out["exponent in an offset"] = _join(
        header.replace('"data_offsets":[0,', '"data_offsets":[0e0,', 1), data
    )
    out["BOM"] = _join("\ufeff" + body, data)
    out["trailing byte"] = blob + b"\0"
    out["trailing 8 bytes"] = blob + b"\0" * 8
    # the metadata: same fields, other text
    meta_doc = json.loads(meta_text)
    for label, text in {
        "metadata with spaces": json.dumps(meta_doc, sort_keys=True),
        "metadata keys reordered": json.dumps(
            dict(reversed(list(meta_doc.items()))), separators=(",", ":")
        ),
        "metadata escaped": meta_text.replace('"kind"', '"\\u006bind"', 1),
        "metadata round 3.0": meta_text.replace('"round":3', '"round":3.0', 1),
        "metadata round 3e0": meta_text.replace('"round":3', '"round":3e0', 1),
        "metadata trailing space": meta_text + " ",
    }.items():
        d = dict(doc)
        d["__metadata__"] = {METADATA_KEY: text}
        h = json.dumps(d, separators=(",", ":"))
        out[label] = _join(h + " " * (-len(h) % 8), data)
    if "fraction" in meta_text:
        out["fraction 5e-2"] = _variant_meta(
            doc, meta_text.replace('"fraction":0.05', '"fraction":5e-2'), data
        )
        out["fraction 0.050"] = _variant_meta(
            doc, meta_text.replace('"fraction":0.05', '"fraction":0.050'), data
        )
    # the data section: two tensors' places swapped, their offsets with them
    a0, a1 = e1["data_offsets"]
    b0, b1 = e2["data_offsets"]
    if a1 == b0:
        sw = dict(doc)
        sw[second] = {**e2, "data_offsets": [a0, a0 + b1 - b0]}
        sw[first] = {**e1, "data_offsets": [a0 + b1 - b0, b1]}
        swapped = data[:a0] + data[b0:b1] + data[a0:a1] + data[b1:]
        h = json.dumps(sw, separators=(",", ":"))
        out["two tensors swapped in data"] = _join(h + " " * (-len(h) % 8), swapped)
        order = dict(doc)
        del order[first]
        order[first] = e1  # listed last, same offsets
        h = json.dumps(order, separators=(",", ":"))
        out["entries listed out of order"] = _join(h + " " * (-len(h) % 8), data)
    return out


def _variant_meta(doc: dict[str, object], text: str, data: bytes) -> bytes:
    d = dict(doc)
    d["__metadata__"] = {METADATA_KEY: text}
    h = json.dumps(d, separators=(",", ":"))
    return _join(h + " " * (-len(h) % 8), data)


@pytest.mark.parametrize("compression", SETTINGS[:2], ids=["none", "topk8"])
@pytest.mark.parametrize("dp", [None, DP], ids=["plain", "dp"])
def test_every_variant_the_decoder_accepts_is_judged_as_by_reencoding(
    compression: Compression, dp: DpParams | None
) -> None:
    variants = _variants(_blob(TINY, compression, dp))
    judged: dict[str, bool] = {}
    for label, blob in variants.items():
        if _decodes(blob, TINY):
            old, new = _reencoded(blob, TINY), _header_check(blob, TINY)
            assert old == new, label
            judged[label] = new
    assert judged.pop("canonical") is True
    # the check has work to do: these decode, and both judgements refuse them
    for label in (
        "8 more spaces",
        "padding as tabs",
        "leading space",
        "metadata last",
        "escaped dtype",
        "metadata with spaces",
        "entries listed out of order",
    ):
        assert judged[label] is False, label
    assert not any(judged.values())


@pytest.mark.parametrize("compression", SETTINGS[:2], ids=["none", "topk8"])
def test_random_header_edits_are_judged_as_by_reencoding(compression: Compression) -> None:
    """Random byte replacements and inserted whitespace in the header; random bytes in the data
    section (those keep the blob canonical when they decode)."""
    blob = _blob(TINY, compression, DP)
    header, data = _split(blob)
    raw = header.encode()
    rng = random.Random(11)
    pool = b' \t\n\r"\\{}[],:0123456789-.eEFUI'
    decoded = refused = 0
    edits: list[Callable[[], bytes]] = [
        lambda: _join(_replace(raw, rng, pool), data),
        lambda: _join(_insert(raw, rng), data),
        lambda: blob[: -len(data)] + _replace(data, rng, bytes(range(256))),
    ]
    for i in range(900):
        variant = edits[i % 3]()
        if not _decodes(variant, TINY):
            continue
        old, new = _reencoded(variant, TINY), _header_check(variant, TINY)
        assert old == new, variant[: 8 + len(raw) + 8]
        decoded += 1
        refused += not new
    assert decoded > 300 and refused > 50


def _replace(raw: bytes, rng: random.Random, pool: bytes) -> bytes:
    i = rng.randrange(len(raw))
    return raw[:i] + bytes([rng.choice(pool)]) + raw[i + 1 :]


def _insert(raw: bytes, rng: random.Random) -> bytes:
    """Whitespace after a structural character: the same JSON, other bytes."""
    spots = [i + 1 for i, c in enumerate(raw) if c in b"{}[],:"]
    i = rng.choice(spots)
    return raw[:i] + rng.choice([b" ", b"\n", b"\t ", b"\r"]) + raw[i:]


def _outcome(blob: bytes, spec: ModelSpec, direct: bool) -> object:
    """What ``decode_update_stored`` returns (tensors as dtype, shape and bytes) or refuses."""
    try:
        deltas, meta, parts = decode_update_stored(
            blob, spec=spec, expected_round=3, direct_if_canonical=direct
        )
    except InvalidUpdate as e:
        return e.reason

    def dump(ts: dict[str, torch.Tensor]) -> list[tuple[str, object, object, bytes]]:
        return [(k, t.dtype, tuple(t.shape), t.numpy().tobytes()) for k, t in sorted(ts.items())]

    return meta, dump(deltas), dump(parts)


@pytest.mark.parametrize("spec", [TINY, SPEC], ids=["tiny", "smallcnn"])
@pytest.mark.parametrize("compression", SETTINGS, ids=["none", "topk8", "topk8-all"])
def test_reading_a_canonical_blob_directly_gives_what_safetensors_gives(
    spec: ModelSpec, compression: Compression
) -> None:
    """The audit's direct read: the same tensors, bit for bit, and for every variant (most not
    canonical: those take safetensors' parse) the same result or the same refusal."""
    blob = _blob(spec, compression, DP)
    direct = _outcome(blob, spec, True)
    assert not isinstance(direct, str) and direct == _outcome(blob, spec, False)
    _, _, parts = decode_update_stored(blob, spec=spec, direct_if_canonical=True)
    for t in parts.values():
        t.add_(1)  # writable, and no tensor shares memory with another or with the blob
    assert _outcome(blob, spec, True) == direct
    for label, variant in _variants(blob).items():
        assert _outcome(variant, spec, True) == _outcome(variant, spec, False), label
    rng = random.Random(5)
    header, data = _split(blob)
    for _ in range(200):
        edited = _join(_replace(header.encode(), rng, b' "0123456789,:[]FUI'), data)
        assert _outcome(edited, spec, True) == _outcome(edited, spec, False)


@pytest.mark.parametrize(
    ("name", "entry", "why"),
    [
        # since a63 every JSON reader refuses a lone surrogate before the entries are read
        ("\ud800", {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "lone UTF-16 surrogate"),
        (
            "zz",
            {"dtype": "F32", "shape": [10**299] * 16, "data_offsets": [0, 0]},
            "unexpected tensor",
        ),
    ],
    ids=["lone-surrogate-name", "offsets-past-4300-digits"],
)
def test_an_extra_entry_the_header_writer_cannot_write_is_refused_not_raised(
    name: str, entry: dict[str, object], why: str
) -> None:
    """Attack a52: the direct read asked for the canonical header before the entries were
    checked against the model, so an extra entry the writer cannot write (a name no UTF-8
    encodes, offsets past Python's integer-to-string limit) raised ``UnicodeEncodeError`` /
    ``ValueError`` out of the audit; now it is refused as safetensors' path refuses it."""
    blob = _blob(SPEC, Compression(), None)
    header, data = _split(blob)
    doc = json.loads(header)
    doc[name] = entry
    text = json.dumps(doc, separators=(",", ":"))
    hostile = _join(text + " " * (-len(text.encode()) % 8), data)
    refused = _outcome(hostile, SPEC, False)
    assert isinstance(refused, str) and why in refused
    assert _outcome(hostile, SPEC, True) == refused
