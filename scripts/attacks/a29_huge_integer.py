"""A29: a site sends an update whose DP parameters hold an integer no float can hold.

The blob is the site's honest update with DP parameters, except that ``noise_multiplier`` in the
safetensors metadata is written as a 400-digit integer (``1`` and 400 zeros). Before the fix,
``math.isfinite`` in ``DpParams`` raised ``OverflowError`` (not a ``FedtrailError``) while the
aggregator decoded the round's updates, so ``step()`` crashed and the round could not be valued
while the site kept sending it; ``audit verify`` and ``fedtrail audit`` crashed the same way on
such a blob, and the same integer in round terms or a round log crashed every node and auditor.
Now ``fedtrail.safejson`` refuses such integers: the update is ``MALFORMED``, the honest sites are
paid, and ``audit verify`` passes. Four honest sites of 150 images beside the attacker (150).

usage: python attacks/a29_huge_integer.py [rounds]
"""

import struct
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, run

from fedtrail.protocol.privacy import DpParams
from fedtrail.storage.codec import encode_update

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
HUGE = b"1" + b"0" * 400


def huge_noise(ctx):
    """The attacker's honest-looking update (the others' mean) with a 400-digit noise."""
    mean = {k: sum(d[k] for d in ctx.now.values()) / len(ctx.now) for k in ctx.start}
    dp = DpParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=2, delta=1e-5)
    blob = encode_update(mean, spec=SPEC, round=ctx.round, dp=dp).blob
    (n,) = struct.unpack("<Q", blob[:8])
    key = b'\\"noise_multiplier\\":'
    header = blob[8 : 8 + n].replace(key + b"1.0", key + HUGE)
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + blob[8 + n :], 150


try:
    res = run(
        [Site(f"h{i}", 150) for i in range(4)] + [Site("att", 0, huge_noise, cap=150)],
        rounds=rounds,
    )
except Exception as exc:  # the finding: anything but a FedtrailError here is a crash
    print(f"CRASH: {type(exc).__name__}: {exc}")
    raise SystemExit(1) from None
for i, row in enumerate(res["results"], 1):
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
