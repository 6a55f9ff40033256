"""A53: **site**: update blobs aimed at the gap between the aggregator's decoder and the audit's.

Since stop 45 the aggregator reads an update with ``decode_update`` (safetensors' parse) and
``check_canonical_update`` (header-only comparison), while ``audit verify`` reads a canonical
one straight from its byte ranges (``decode_update_stored(direct_if_canonical=True)``). A blob
that one reads and the other refuses, or that the two read as different tensors, would make an
honest aggregator fail its audit, or let a dishonest one pass with a model the auditor
recomputes from other numbers. a28 fuzzed ``decode_update`` only, never the direct read.

1. Crafted blobs from a dense update with DP parameters and a ``topk8`` one: trailing bytes,
   padding other than spaces, whitespace inside the header, two tensors' offsets swapped with
   their data, entries listed out of order, a dtype or shape that disagrees with the byte
   lengths, a repeated tensor name, metadata with an extra key or the fedtrail JSON smuggling
   a field, a lone-surrogate or 4,800-digit extra entry (a52), NaN / -0.0 / signalling-NaN /
   float-max payload words; then N seeded random header and payload edits. Each is read both
   ways: the outcome (refusal, or the exact tensor bytes) must be the same, and nothing but a
   ``FedtrailError`` may escape.
2. One round on the chain: three honest sites of 150 images and three attackers sending
   variants of h0's update (committed after it): ``pad`` (h0's blob, header padded with tabs),
   ``nan`` (h0's tensors, one word a NaN with a payload), ``recode`` (h0's delta re-encoded
   through ``topk8`` at fraction 1: canonical, other bytes). Each must score 0 (MALFORMED,
   MALFORMED, DUPLICATE), the honest sites 1/3 each, and ``audit verify`` must pass.

usage: python scripts/attacks/a53_direct_read_differential.py [N]   (default 300 per blob)
       scripts/attacks/real.sh scripts/attacks/a53_direct_read_differential.py [N]
Exits 1 when the two readers disagree, a reader crashes, an attacker is paid or verify fails.
"""

import json
import random
import struct
import sys
from collections import Counter

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import SPEC, Ctx, Site, run

from fedtrail.errors import FedtrailError
from fedtrail.protocol.privacy import DpParams
from fedtrail.storage.canonical import check_canonical_update
from fedtrail.storage.codec import (
    Compression,
    decode_update,
    decode_update_stored,
    encode_update,
    zero_state,
)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
ROUND = 1
problems: list[str] = []


def aggregator_reads(blob: bytes) -> object:
    try:
        delta, meta = decode_update(blob, spec=SPEC, expected_round=ROUND)
        check_canonical_update(blob, spec=SPEC, expected_round=ROUND, meta=meta)
    except FedtrailError:
        return "refused"
    return {k: v.numpy().tobytes() for k, v in delta.items()}


def auditor_reads(blob: bytes) -> object:
    try:
        delta, meta, stored = decode_update_stored(
            blob, spec=SPEC, expected_round=ROUND, direct_if_canonical=True
        )
        check_canonical_update(blob, spec=SPEC, expected_round=ROUND, meta=meta, parts=stored)
    except FedtrailError:
        return "refused"
    return {k: v.numpy().tobytes() for k, v in delta.items()}


def both(blob: bytes) -> tuple[object, object]:
    out = []
    for reader in (aggregator_reads, auditor_reads):
        try:
            out.append(reader(blob))
        except Exception as exc:  # the attack: a crash
            out.append(f"CRASH {type(exc).__name__}: {str(exc)[:80]}")
    return out[0], out[1]


def split(blob: bytes) -> tuple[dict, bytes]:
    hl = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + hl]), blob[8 + hl :]


def join(header: dict | str, data: bytes, pad: str = " ") -> bytes:
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    raw = text.encode("utf-8", "surrogatepass")
    raw += pad.encode() * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def word(blob: bytes, at: int, value: bytes) -> bytes:
    """``blob`` with the 4 bytes at data offset ``at`` replaced."""
    hl = struct.unpack("<Q", blob[:8])[0]
    pos = 8 + hl + at
    return blob[:pos] + value + blob[pos + 4 :]


def crafted(blob: bytes) -> dict[str, bytes]:
    h, data = split(blob)
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"])
    first, second = names[0], names[1]
    text = json.dumps(h, separators=(",", ":"))
    body = blob[8 : 8 + struct.unpack("<Q", blob[:8])[0]].decode().rstrip(" ")
    out = {
        "trailing byte": blob + b"\0",
        "trailing 8 bytes": blob + b" " * 8,
        "padding as tabs": join(body, data, "\t") if len(body) % 8 else blob,
        "8 more spaces": join(body + " " * 8, data),
        "space after a colon": join(text.replace('":', '": ', 1), data),
        "newline before }": join(text[:-1] + "\n}", data),
    }
    e1, e2 = h[first], h[second]
    a0, a1 = e1["data_offsets"]
    b0, b1 = e2["data_offsets"]
    sw = dict(h)
    sw[second] = {**e2, "data_offsets": [a0, a0 + b1 - b0]}
    sw[first] = {**e1, "data_offsets": [a0 + b1 - b0, b1]}
    out["offsets swapped with data"] = join(sw, data[:a0] + data[b0:b1] + data[a0:a1] + data[b1:])
    out["offsets swapped, data not"] = join(sw, data)
    reordered = {k: h[k] for k in [*reversed(list(h))]}
    out["entries listed out of order"] = join(reordered, data)
    longer = [*e1["shape"][:-1], e1["shape"][-1] + 1] if e1["shape"] else [2]
    for key, val in {"dtype": "U32" if e1["dtype"] != "U32" else "F32", "shape": longer}.items():
        bad = dict(h)
        bad[first] = {**e1, key: val}
        out[f"{key} disagrees with bytes"] = join(bad, data)
    again = json.dumps({first: e1}, separators=(",", ":"))[1:-1]
    out["repeated tensor name"] = join(text[:-1] + "," + again + "}", data)
    meta = dict(h["__metadata__"])
    out["extra metadata key"] = join({**h, "__metadata__": {**meta, "x": "1"}}, data)
    inner = json.loads(meta["fedtrail"])
    inner["note"] = "smuggled"
    out["smuggled metadata field"] = join(
        {**h, "__metadata__": {"fedtrail": json.dumps(inner, separators=(",", ":"))}}, data
    )
    out["lone-surrogate entry (a52)"] = join(
        {**h, "\ud800": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}, data
    )
    out["4,800-digit entry (a52)"] = join(
        {**h, "zz": {"dtype": "F32", "shape": [10**299] * 16, "data_offsets": [0, 0]}}, data
    )
    f32 = next((k for k in names if h[k]["dtype"] == "F32"), None)
    if f32 is not None:
        at = h[f32]["data_offsets"][0]
        for label, w in {
            "NaN with a payload": b"\x01\x00\xc0\x7f",
            "signalling NaN": b"\x01\x00\x80\x7f",
            "-0.0": b"\x00\x00\x00\x80",
            "float max": b"\xff\xff\x7f\x7f",
        }.items():
            out[f"{label} in {f32}"] = word(blob, at, w)
    return out


def mutated(blob: bytes, rng: random.Random) -> bytes:
    h, data = split(blob)
    names = [k for k in h if k != "__metadata__"]
    if rng.random() < 0.6:
        key = rng.choice(names)
        h[key] = dict(h[key])
        h[key][rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(
            ["U32", "I8", "U8", "F32", [0, 2**70], [2**63, 2**63], [10**299], [0], []]
        )
        return join(h, data, rng.choice([" ", "\t", "\n"]))
    raw = bytearray(blob)
    hl = struct.unpack("<Q", blob[:8])[0]
    pos = 8 + hl + rng.randrange(len(blob) - 8 - hl - 4)
    raw[pos : pos + 4] = rng.choice(
        [b"\x00\x00\xc0\x7f", b"\x01\x00\x80\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff"]
    )
    return bytes(raw)


# ---------------------------------------------------------------- 1. the two readers
g = torch.Generator().manual_seed(0)
d = {k: torch.randn(v.shape, generator=g) * 1e-3 for k, v in zero_state(SPEC).items()}
dp = DpParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=2, delta=1e-5)
blobs = {
    "dense+dp": encode_update(d, spec=SPEC, round=ROUND, dp=dp).blob,
    "topk8": encode_update(
        d, spec=SPEC, round=ROUND, compression=Compression(method="topk8", fraction=0.1)
    ).blob,
}
rng = random.Random(0)
tally: Counter[str] = Counter()
for name, blob in blobs.items():
    cases = crafted(blob)
    cases.update({f"random {i}": mutated(blob, rng) for i in range(N)})
    for label, variant in cases.items():
        agg, aud = both(variant)
        crashed = any(isinstance(x, str) and x.startswith("CRASH") for x in (agg, aud))
        kind = "crash" if crashed else "refused" if agg == "refused" else "read"
        tally[f"{name}: {kind}{'' if agg == aud else ' DISAGREE'}"] += 1
        if not label.startswith("random"):
            shown = agg if isinstance(agg, str) else "reads"
            other = aud if isinstance(aud, str) else "reads OTHER tensors"
            same = "same" if aud == agg else other
            print(f"  {name:9s} {label:34s} aggregator {shown[:60]}; audit {same}")
        if agg != aud or kind == "crash":
            problems.append(f"{name} {label}: aggregator {str(agg)[:60]}, audit {str(aud)[:60]}")
for key, n in sorted(tally.items()):
    print(f"  {key}: {n}")

# ---------------------------------------------------------------- 2. on the chain


def pad(ctx: Ctx) -> tuple[bytes, int]:
    h, data = split(encode_update(ctx.now["h0"], spec=SPEC, round=ctx.round).blob)
    return join(h, data, "\t"), 150


def nan(ctx: Ctx) -> tuple[bytes, int]:
    blob = encode_update(ctx.now["h0"], spec=SPEC, round=ctx.round).blob
    return word(blob, 0, b"\x01\x00\xc0\x7f"), 150


def recode(ctx: Ctx) -> tuple[bytes, int]:
    comp = Compression(method="topk8", fraction=1.0)
    return encode_update(ctx.now["h0"], spec=SPEC, round=ctx.round, compression=comp).blob, 150


sites = [
    Site("h0", 150),
    Site("h1", 150),
    Site("h2", 150),
    Site("pad", 0, pad, cap=150),
    Site("nan", 0, nan, cap=150),
    Site("recode", 0, recode, cap=150),
]
out = run(sites, 1, real=True)
row = out["results"][0]
want = {"pad": "MALFORMED", "nan": "MALFORMED", "recode": "DUPLICATE"}
for nm, reason in want.items():
    if row[nm]["weight"] > 0 or row[nm]["reason"] != reason:
        problems.append(f"{nm}: {row[nm]['reason']} weight {row[nm]['weight']:.3f}, not {reason}")
if not out["audit_ok"]:
    problems.append("audit verify fails an honest aggregator")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems[:8]))
    sys.exit(1)
print("defence holds: both readers agree on every blob, the variants are paid nothing, PASS")
