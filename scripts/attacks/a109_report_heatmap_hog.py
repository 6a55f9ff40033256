"""A109: **aggregator**: one round's heatmaps spend the report's image allowance, so the
audit report shows none of a later round's.

``fedtrail audit report`` embeds each finalized round's explanation heatmaps (the new global
model on the fixed probe set, for clinicians and auditors) up to a page allowance
(``MAX_REPORT_HEATMAP_BYTES`` 64 MB, ``MAX_REPORT_HEATMAP_PIXELS`` 128 M pixels, a bound against
report bombs). The allowance was spent first come, first served in round order, and once an
image did not fit no later one was shown. ``audit verify``'s ``log.heatmaps`` checks that each
heatmap is fetchable under its sha256 and is a PNG, and that the probe set and method are the
earlier rounds' (a38); the images' size is the aggregator's. So the aggregator, seeing that
round ROUNDS's model looks bad, writes the round before's heatmaps as the honest overlays,
each grown by a private ancillary PNG chunk (``paDd``, skipped by every decoder: the same
picture) to its part of what is left of the allowance (16 of ~4.1 MB, each under the 4 MB
per-image limit): that round still shows its heatmaps, and the report then shows none of the
target round's ("not shown: the page's image allowance ... is spent"), verify passing. a41
(``drop``) is the same withholding by leaving the block out, which verify fails.

``apng``: the hog round's heatmaps are the honest overlays as animated PNGs (APNG: the first
frame the overlay, 2,000 more each one pixel apart, ~1 MB); PIL reads one frame's size from the
header, so the page's pixel allowance counted one frame of each while a browser decodes them
all. Works when verify passes and the page embeds more pixels of frames than the allowance.

Three honest sites, 30 images each, ``integrated_gradients`` heatmaps on 8 images per class,
ROUNDS rounds (default 3; the hog is round ROUNDS - 1). ``honest``: the service as it is.

usage: scripts/attacks/real.sh scripts/attacks/a109_report_heatmap_hog.py hog|apng|honest [ROUNDS]
Exits 1 when verify passes and the report shows none of the last round's heatmaps (the attack
works), 0 otherwise.
"""

import dataclasses
import hashlib
import io
import struct
import sys
import zlib

from PIL import Image

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import audit_failures, explained_run

from fedtrail.aggregator.service import AggregatorService
from fedtrail.auditor.report import (
    MAX_HEATMAP_BYTES,
    MAX_REPORT_HEATMAP_BYTES,
    MAX_REPORT_HEATMAP_PIXELS,
    collect,
)
from fedtrail.protocol.roundlog import HeatmapRef
from fedtrail.storage.cid import compute_cid

mode = sys.argv[1] if len(sys.argv) > 1 else "hog"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
HOG_ROUND = rounds - 1
PER_CLASS = 8
FRAMES = 2000


def padded(png: bytes, size: int) -> bytes:
    """``png`` (the honest overlay, the same pixels) grown to exactly ``size`` bytes by a
    private ancillary chunk (``paDd``: lower-case first letter, so every decoder skips it)
    before its ``IEND``."""
    pad = size - len(png) - 12  # chunk length, type and CRC take 12 bytes
    data = bytes(max(0, pad))
    chunk = struct.pack(">I", len(data)) + b"paDd" + data
    chunk += struct.pack(">I", zlib.crc32(chunk[4:]) & 0xFFFFFFFF)
    return png[:-12] + chunk + png[-12:]


earlier_bytes = 0  # heatmap bytes of the rounds before (public: every log names them)


real_explanations = AggregatorService._explanations


def animated(png: bytes) -> bytes:
    """``png`` as an APNG whose first frame is the honest overlay, then ``FRAMES`` more that
    each move one pixel (a decoder reading the header counts one frame's pixels)."""
    first = Image.open(io.BytesIO(png)).convert("RGB")
    frames = []
    for k in range(FRAMES):
        frame = first.copy()
        frame.putpixel((k % first.width, (k // first.width) % first.height), (k % 256, 0, 0))
        frames.append(frame)
    buf = io.BytesIO()
    first.save(buf, format="PNG", save_all=True, append_images=frames, duration=20, loop=0)
    return buf.getvalue()


def explanations(self, round_id, state, bias=None):
    global earlier_bytes
    made, pngs = real_explanations(self, round_id, state, bias)
    if mode == "apng" and round_id == HOG_ROUND:
        big = [animated(p) for p in pngs]
        refs = tuple(
            HeatmapRef(cid=compute_cid(b), sha256=hashlib.sha256(b).hexdigest(), caption=r.caption)
            for b, r in zip(big, made.images, strict=True)
        )
        print(f"round {round_id}: {len(big)} APNG heatmaps, {sum(map(len, big)) / 2**20:.1f} MB")
        return dataclasses.replace(made, images=refs), big
    if mode != "hog" or round_id != HOG_ROUND:
        earlier_bytes += sum(map(len, pngs))
        return made, pngs
    # exactly what is left of the page's allowance, in equal parts (each under the per-image
    # limit): the next round's first heatmap no longer fits
    each = (MAX_REPORT_HEATMAP_BYTES - earlier_bytes) // len(pngs)
    assert each <= MAX_HEATMAP_BYTES
    big = [padded(p, each) for p in pngs]
    refs = tuple(
        HeatmapRef(cid=compute_cid(b), sha256=hashlib.sha256(b).hexdigest(), caption=r.caption)
        for b, r in zip(big, made.images, strict=True)
    )
    print(f"round {round_id}: {len(big)} heatmaps of {sum(map(len, big)) / 2**20:.1f} MB in all")
    return dataclasses.replace(made, images=refs), big


AggregatorService._explanations = explanations

fed, store = explained_run(rounds, PER_CLASS)
failed = audit_failures(fed, store)
page = collect(fed.ledger, store, audits=[])
for rd in page.rounds:
    shown = sum(h.png is not None for h in rd.heatmaps)
    problems = sorted({h.problem for h in rd.heatmaps if h.png is None})
    print(
        f"round {rd.info.id} ({mode}): report shows {shown} of {len(rd.heatmaps)} heatmaps"
        + (f"; {problems[0][:150]}" if problems else "")
    )
last = page.rounds[-1]
hidden = bool(last.heatmaps) and all(h.png is None for h in last.heatmaps)
works = not failed and hidden
if mode == "apng":  # the frames a browser decodes against the pixels the allowance counted
    decoded = counted = 0
    for rd in page.rounds:
        for h in rd.heatmaps:
            if h.png is not None:
                img = Image.open(io.BytesIO(h.png))
                counted += img.width * img.height
                decoded += img.width * img.height * getattr(img, "n_frames", 1)
    print(
        f"the page embeds {decoded / 1e6:.1f} M pixels of frames, the allowance counted "
        f"{counted / 1e6:.1f} M (page allowance {MAX_REPORT_HEATMAP_PIXELS / 2**20:.0f} M)"
    )
    works = not failed and decoded > MAX_REPORT_HEATMAP_PIXELS
print("attack works" if works else "attack fails", f"(verify {'FAIL' if failed else 'PASS'})")
sys.exit(1 if works else 0)
