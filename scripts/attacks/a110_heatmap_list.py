"""A110: **aggregator**: the heatmap list of a round log read as given, its length unbound.

``audit verify``'s ``log.heatmaps`` fetches every heatmap the log's ``explanations`` block
lists and binds the block's probe set (hash, size ``probe_images``, method) to the earlier
rounds' (a38) and, with ``--validation``, to the split and the summary's count. The writer
lists exactly one heatmap per probe image; nothing compared the list with ``probe_images``:

- ``subset``: every round's log lists only the heatmaps whose caption says the prediction is
  the truth (the ones the model gets wrong left out), probe hash, size, method and summary
  honest: the report and every reader of the log see only correct decisions, a38's
  cherry-pick by omission. Works when verify passes, with ``--validation`` too.
- ``repeat K``: round 2's log lists its first heatmap, grown to ~4 MB by a private PNG chunk
  (a109's ``padded``: the same picture), K more times: ``log.heatmaps`` fetched and hashed
  every entry, so one 32 MB log (about 200,000 entries) is an audit of hours. Works when verify
  fetches more heatmaps than the round has distinct ones (the run prints the fetches, bytes
  and seconds of round 2's verify against round 1's).
- ``honest``: the service as it is.

Three honest sites, 30 images each, ``integrated_gradients`` on 8 images per class, 2 rounds.

usage: scripts/attacks/real.sh scripts/attacks/a110_heatmap_list.py subset|repeat [K]|honest
Exits 1 when the attack works, 0 otherwise.
"""

import dataclasses
import hashlib
import re
import struct
import sys
import time
import zlib

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import audit_failures, explained_run

from fedtrail.aggregator.service import AggregatorService
from fedtrail.auditor.report import MAX_HEATMAP_BYTES
from fedtrail.auditor.verify import verify_round
from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol.roundlog import HeatmapRef
from fedtrail.storage.cid import compute_cid

mode = sys.argv[1] if len(sys.argv) > 1 else "subset"
K = int(sys.argv[2]) if len(sys.argv) > 2 else 300
ROUNDS = 2
PER_CLASS = 8
CAPTION = re.compile(r"predicted (.+) \(\d+%\), truth (.+)$")


def padded(png: bytes, size: int) -> bytes:
    """a109's: ``png`` grown to ``size`` bytes by a private ancillary chunk before IEND."""
    data = bytes(max(0, size - len(png) - 12))
    chunk = struct.pack(">I", len(data)) + b"paDd" + data
    chunk += struct.pack(">I", zlib.crc32(chunk[4:]) & 0xFFFFFFFF)
    return png[:-12] + chunk + png[-12:]


def correct(caption: str) -> bool:
    m = CAPTION.search(caption)
    return m is not None and m.group(1) == m.group(2)


real_explanations = AggregatorService._explanations


def explanations(self, round_id, state, bias=None):
    made, pngs = real_explanations(self, round_id, state, bias)
    if mode == "subset":
        keep = [i for i, r in enumerate(made.images) if correct(r.caption)]
        print(
            f"round {round_id}: {made.summary}; the log lists {len(keep)} of "
            f"{made.probe_images} heatmaps (the correct ones)"
        )
        images = tuple(made.images[i] for i in keep)
        return dataclasses.replace(made, images=images), [pngs[i] for i in keep]
    if mode == "repeat" and round_id == 2:
        big = padded(pngs[0], MAX_HEATMAP_BYTES - 1024)
        ref = HeatmapRef(cid=compute_cid(big), sha256=hashlib.sha256(big).hexdigest(), caption="x")
        print(f"round 2: heatmap 1 ({len(big) / 2**20:.1f} MB) listed {K} more times")
        return dataclasses.replace(made, images=(*made.images, *[ref] * K)), [*pngs, big]
    return made, pngs


AggregatorService._explanations = explanations

fed, store = explained_run(ROUNDS, PER_CLASS)
failed = audit_failures(fed, store)

fetched: list[int] = []
real_get = type(store).get


def counting_get(self, cid, sha256=None, **kw):
    blob = real_get(self, cid, sha256, **kw)
    if blob.startswith(b"\x89PNG"):
        fetched.append(len(blob))
    return blob


type(store).get = counting_get
val = load_bundled().val
spent = {}
for r in range(1, ROUNDS + 1):
    fetched.clear()
    t = time.perf_counter()
    audit = verify_round(fed.ledger, store, r, validation=val)
    spent[r] = (time.perf_counter() - t, len(fetched), sum(fetched))
    heat = next((c for c in audit.checks if c.name == "log.heatmaps"), None)
    bad = [c.name for c in audit.checks if c.failed]
    print(
        f"round {r} verify --validation: {'PASS' if not bad else 'FAIL ' + str(bad)}, "
        f"{spent[r][1]} heatmap fetches ({spent[r][2] / 2**20:.1f} MB), {spent[r][0]:.1f} s; "
        f"log.heatmaps {heat.status if heat else '-'}: {heat.detail[:160] if heat else ''}"
    )
if mode == "subset":
    works = not failed and all(c.passed for c in audit.checks if c.name == "log.heatmaps")
elif mode == "repeat":
    works = spent[2][1] > 16 + 1  # more fetches than distinct heatmaps
else:
    works = bool(failed)
verdict = "FAIL" if failed else "PASS"
print("attack works" if works else "attack fails", f"(public verify {verdict})")
sys.exit(1 if works else 0)
