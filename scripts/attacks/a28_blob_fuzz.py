"""A28: garbage update blobs and DP parameters at the decoder and the accountant (defended).

A site chooses every byte of its blob. This script mutates a valid dense update (with DP
parameters) and a valid ``topk8`` one, N times each, seeded: header bytes (1-3 characters
replaced), the header's JSON (a tensor's dtype, shape or offsets, a metadata field), and the
payload (NaN, infinity, float max, a denormal), and decodes each with ``decode_update``; then it
accounts DP parameters at the edges ``DpParams`` accepts (noise 1e-300 and 5e-324, sample rate
1e-300, a million-fold clip, 10 million steps, delta near 1). Anything but a ``FedtrailError``
(or a finite epsilon) is what the aggregator, a validator or ``audit verify`` would crash on.

usage: python attacks/a28_blob_fuzz.py [N]   (default 1500 per blob)
"""

import json
import random
import struct
import sys
from collections import Counter

import torch

torch.set_num_threads(1)

from fedtrail.errors import FedtrailError  # noqa: E402
from fedtrail.ml.models import ModelSpec  # noqa: E402
from fedtrail.ml.privacy import declared_micro, epsilon_spent  # noqa: E402
from fedtrail.protocol.privacy import DpParams  # noqa: E402
from fedtrail.storage.codec import Compression, decode_update, encode_update, zero_state  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
spec = ModelSpec()
g = torch.Generator().manual_seed(0)
d = {k: torch.randn(v.shape, generator=g) * 1e-3 for k, v in zero_state(spec).items()}
dp = DpParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=2, delta=1e-5)
blobs = {
    "dense+dp": encode_update(d, spec=spec, round=3, dp=dp).blob,
    "topk8": encode_update(
        d, spec=spec, round=3, compression=Compression(method="topk8", fraction=0.1)
    ).blob,
}
rng = random.Random(0)
crashes: Counter[str] = Counter()
outcome: Counter[str] = Counter()
for name, blob in blobs.items():
    hl = struct.unpack("<Q", blob[:8])[0]
    header = blob[8 : 8 + hl]
    for _ in range(N):
        b = bytearray(blob)
        kind = rng.random()
        if kind < 0.5:  # header bytes
            for _ in range(rng.randint(1, 3)):
                b[8 + rng.randrange(hl)] = rng.choice(b'0123456789-+eE.,:"{}[]tfnaxFIBU ')
        elif kind < 0.8:  # the header's JSON
            h = json.loads(header)
            key = rng.choice(list(h))
            if key == "__metadata__":
                m = dict(h[key])
                mk = rng.choice(list(m))
                m[mk] = rng.choice(["", "null", "1e999", "-1", "[]", "{}", str(m[mk])[::-1]])
                h[key] = m
            else:
                v = dict(h[key])
                odd = [[0], [], [-1], [2**40], [0, 2**62], [1, 0], None]
                v[rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(
                    ["F64", "F16", "BF16", "I8", "U8", "BOOL", *odd]
                )
                h[key] = v
            nh = json.dumps(h).encode()
            nh += b" " * (-len(nh) % 8)
            b = bytearray(struct.pack("<Q", len(nh)) + nh + blob[8 + hl :])
        else:  # payload: NaN, +inf, float max, a denormal
            pos = 8 + hl + rng.randrange(len(blob) - 8 - hl - 4)
            b[pos : pos + 4] = rng.choice(
                [b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\xff\xff\x7f\x7f", b"\x01\x00\x00\x00"]
            )
        try:
            decode_update(bytes(b), spec=spec)
            outcome[f"{name}: decoded"] += 1
        except FedtrailError:
            outcome[f"{name}: refused"] += 1
        except Exception as e:  # what an attacker wants: an unhandled error
            crashes[f"{name}: {type(e).__name__}: {str(e)[:100]}"] += 1
print(dict(outcome))
print(f"{sum(crashes.values())} mutations raised something other than a FedtrailError")
for k, c in crashes.most_common(10):
    print(f"  {c} x {k}")

edges = [
    dict(noise_multiplier=1e-300, max_grad_norm=1.0, sample_rate=1.0, steps=1, delta=1e-5),
    dict(noise_multiplier=5e-324, max_grad_norm=5e-324, sample_rate=5e-324, steps=1, delta=5e-324),
    dict(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=1e-300, steps=1, delta=1e-5),
    dict(
        noise_multiplier=1000.0, max_grad_norm=1e300, sample_rate=1.0, steps=10_000_000, delta=1e-5
    ),
    dict(
        noise_multiplier=0.01,
        max_grad_norm=1.0,
        sample_rate=0.999999,
        steps=10_000_000,
        delta=0.999,
    ),
]
for e in edges:
    try:
        p = DpParams(**e)
        print(f"DP {e}: epsilon {epsilon_spent(p):.6g}, declared {declared_micro(p, [], 0)} micro")
    except FedtrailError as exc:
        print(f"DP {e}: refused ({type(exc).__name__}: {str(exc)[:90]})")
    except Exception as exc:
        print(f"DP {e}: CRASH {type(exc).__name__}: {exc}")
