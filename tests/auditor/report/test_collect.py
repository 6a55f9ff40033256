"""collect: the chain and the store read into records, with the limits on what a log names."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fedtrail.auditor.report import (
    MAX_HEATMAP_BYTES,
    MAX_HEATMAP_PIXELS,
    MAX_HEATMAPS_PER_ROUND,
    MAX_REPORT_HEATMAP_BYTES,
    MAX_REPORT_HEATMAP_PIXELS,
    PNG_MAGIC,
    ImageBudget,
    collect,
    write_report,
)
from fedtrail.auditor.report.collect import read_heatmaps, reason_codes
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.storage.store import LocalStore
from tests.auditor.report.federation import Fed, heatmap_png, put, store_without
from tests.fixtures.chain import ChainEnv


def test_collect_reads_rounds_logs_and_reputation(fed: Fed) -> None:
    data = collect(fed.ledger, fed.store, audits=[])
    assert data.address == fed.ledger.address and data.audits == []
    assert [rd.info.phase for rd in data.rounds] == [
        Phase.FINALIZED,
        Phase.FINALIZED,
        Phase.CANCELLED,
        Phase.VALUED,
    ]
    r1, r2, r3, r4 = data.rounds
    assert r1.log == fed.logs[1] and r2.log == fed.logs[2] and not r1.log_problem
    assert r3.log is None and r3.log_problem == "round cancelled: no explanation log"
    assert r4.log is None and r4.log_problem.startswith("round valued: weights are fixed")
    assert r2.metrics_after() == fed.logs[2]["metrics"]["after"] and r4.metrics_after() is None
    rejected = fed.sites[1].address
    entry = r2.log_entry(rejected.lower())  # addresses match case-insensitively
    assert entry is not None and entry["reason_label"] == "LOW_GAIN"
    # sites in aggregation order; one reputation point per valued round (1, 2 and 4)
    assert [s.address for s in data.sites] == data.site_order()
    assert data.site_name(rejected) == "<script>alert(1)</script>"  # raw: escaping is html's job
    assert sorted(data.reputation) == sorted(s.address for s in fed.sites)
    assert all([r for r, _ in series] == [1, 2, 4] for series in data.reputation.values())


def test_collect_checks_heatmaps_against_their_sha256(fed: Fed) -> None:
    r2 = collect(fed.ledger, fed.store, audits=[]).rounds[1]
    assert r2.heatmap_method == "integrated_gradients <i>"
    good, tampered, not_object = r2.heatmaps
    assert good.png == fed.heatmap_png and good.caption == "pneumonia probe <b>#7</b>"
    assert tampered.png is None and tampered.problem.startswith("not shown:")
    assert "sha256" in tampered.problem
    assert not_object.png is None and not_object.problem == "entry is not an object"
    assert r2.heatmaps_dropped == 0


def test_unreadable_log_is_reported_not_raised(fed: Fed, tmp_path: Path) -> None:
    # a copy of the store without round 1's log: the report names the problem and goes on
    copy = store_without(fed, tmp_path / "store", fed.ledger.get_round(1).log_cid)
    r1 = collect(fed.ledger, copy, audits=[]).rounds[0]
    assert r1.log is None and "unusable" in r1.log_problem
    page = write_report(fed.ledger, copy, tmp_path / "out").read_text()
    assert "explanation log Qm" in page and "unusable" in page
    assert '<p class="verdict fail">' in page


def test_reason_codes_cover_the_protocol_table() -> None:
    codes = reason_codes()
    assert set(codes) == {int(r) for r in Reason}
    assert codes[1] == ("LOW_GAIN", Reason.LOW_GAIN.description)


# --------------------------------------------------------------------------- untrusted logs


def _images(store: LocalStore, *blobs: bytes) -> dict[str, Any]:
    images = []
    for i, blob in enumerate(blobs):
        cid, sha = put(store, blob)
        images.append({"cid": cid, "sha256": sha, "caption": f"probe {i}"})
    return {"explanations": {"method": "ig", "images": images}}


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_heatmaps_are_capped_per_round(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    cid, sha = put(store, heatmap_png(0))
    doc = {"explanations": {"images": [{"cid": cid, "sha256": sha}] * (MAX_HEATMAPS_PER_ROUND + 3)}}
    method, maps, dropped = read_heatmaps(store, doc)
    assert method == "" and len(maps) == MAX_HEATMAPS_PER_ROUND and dropped == 3
    assert all(m.png is not None for m in maps)
    assert maps[0].caption == "image 1"  # no caption given: numbered


def test_heatmap_must_be_a_png(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    fake = PNG_MAGIC + b"\x00" * 64  # the magic alone is not enough
    _, maps, _ = read_heatmaps(store, _images(store, jpeg.getvalue(), fake, _png(8, 8)))
    assert maps[0].png is None and maps[0].problem == "not shown: the blob is not a PNG image"
    assert maps[1].png is None and maps[1].problem.startswith("not shown: broken PNG (")
    assert maps[2].png == _png(8, 8) and maps[2].problem == ""


def test_heatmap_pixel_and_byte_limits(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    side = 2048
    assert side * side == MAX_HEATMAP_PIXELS
    too_big = PNG_MAGIC + b"\x00" * MAX_HEATMAP_BYTES  # one byte over the limit
    _, maps, _ = read_heatmaps(
        store, _images(store, _png(side, side), _png(side + 1, side), too_big)
    )
    assert maps[0].png is not None  # exactly at the pixel limit
    assert maps[1].png is None and maps[1].problem == "not shown: not a PNG of a sensible size"
    assert maps[2].png is None and maps[2].problem.startswith("not shown: content ")
    assert f"over the {MAX_HEATMAP_BYTES}-byte limit" in maps[2].problem


def test_the_page_embeds_a_bounded_total_of_heatmap_bytes(tmp_path: Path) -> None:
    """One image near the per-image byte limit, listed 32 times in each of several rounds'
    logs: every copy passed the per-image and per-round limits, so the page embedded 170 MB of
    base64 per round (a hostile aggregator's report bomb from one stored blob). Now the rounds
    share the page's allowance: what does not fit is named, not fetched."""
    store = LocalStore(tmp_path)
    side = 1140  # random RGB: the PNG does not compress, just under MAX_HEATMAP_BYTES
    noise = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    big = buf.getvalue()
    assert MAX_HEATMAP_BYTES // 2 < len(big) <= MAX_HEATMAP_BYTES
    cid, sha = put(store, big)
    doc = {"explanations": {"images": [{"cid": cid, "sha256": sha}] * MAX_HEATMAPS_PER_ROUND}}
    budget = ImageBudget()
    shown = refused = 0
    for _ in range(3):  # three rounds' logs
        _, maps, _ = read_heatmaps(store, doc, budget)
        shown += sum(m.png is not None for m in maps)
        refused += sum(m.png is None for m in maps)
        assert all(m.png is not None or "image allowance" in m.problem for m in maps)
    assert shown == MAX_REPORT_HEATMAP_BYTES // len(big) and refused == 3 * 32 - shown
    assert shown * len(big) <= MAX_REPORT_HEATMAP_BYTES


def test_the_page_embeds_a_bounded_total_of_heatmap_pixels(tmp_path: Path) -> None:
    """A flat 2048x2048 PNG is a few kilobytes that a browser decodes to 16 MB each."""
    store = LocalStore(tmp_path)
    flat = _png(2048, 2048)
    assert len(flat) < 100_000
    doc = _images(store, *[flat] * MAX_HEATMAPS_PER_ROUND)
    budget = ImageBudget()
    shown = sum(m.png is not None for _ in range(2) for m in read_heatmaps(store, doc, budget)[1])
    assert shown == MAX_REPORT_HEATMAP_PIXELS // (2048 * 2048) < 2 * MAX_HEATMAPS_PER_ROUND


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (None, ("", 0)),
        ("not an object", ("", 0)),
        ({"method": 7, "images": "x"}, ("", 0)),
        ({"method": "ig", "images": None}, ("ig", 0)),
        ({"method": "ig", "images": [{"cid": "Qm", "sha256": "00"}, {"cid": 3}]}, ("ig", 2)),
    ],
)
def test_malformed_explanations_block(
    tmp_path: Path, block: object, expected: tuple[str, int]
) -> None:
    method, maps, dropped = read_heatmaps(LocalStore(tmp_path), {"explanations": block})
    assert (method, len(maps), dropped) == (*expected, 0)
    assert all(m.png is None and m.problem == "no valid cid/sha256 given" for m in maps)


@pytest.mark.anvil
def test_former_names_lists_each_earlier_registration(anvil: ChainEnv) -> None:
    """a64: the SiteRegistered events' earlier names per site, oldest first, none twice, the
    current one left out; a site never renamed has none."""
    from fedtrail.auditor.report.collect import former_names

    ledger = anvil.deploy()
    a, b = anvil.sites[0].address, anvil.sites[1].address
    coord = anvil.coordinator
    ledger.register_site(coord, a, "hospital-a", 10)
    ledger.register_site(coord, b, "clinic", 10)
    for name in ("hospital-y", "hospital-a", "hospital-z"):
        ledger.remove_site(coord, a)
        ledger.register_site(coord, a, name, 10)
    assert former_names(ledger, ledger.get_sites()) == {a: ["hospital-a", "hospital-y"]}


def test_one_rounds_heatmaps_cannot_spend_a_later_rounds_share(
    anvil_url: str, tmp_path: Path
) -> None:
    """a109: a round's log lists flat 2048x2048 PNGs (every one within the per-image limits,
    each a heatmap ``log.heatmaps`` passes) until their pixels exceed the page's allowance.
    The allowance was spent first come, first served, so the report showed none of the next
    round's heatmaps ("the page's image allowance ... is spent"): a chosen round's explanation
    withheld from the report, verify passing. Now each round with heatmaps has an equal share
    of what is left: the hog is cut to its half and the later round is shown."""
    from fedtrail.ledger import Valuation
    from tests.auditor.report.federation import (
        finalize,
        initial,
        new_federation,
        open_round,
        submit_all,
    )

    fed = new_federation(tmp_path, anvil_url)
    flat = put(fed.store, _png(2048, 2048))
    small = put(fed.store, heatmap_png(3))
    hog = MAX_REPORT_HEATMAP_PIXELS // (2048 * 2048) + 1  # one more than the page holds
    blocks = [
        {"method": "ig", "images": [{"cid": flat[0], "sha256": flat[1]}] * hog},
        {"method": "ig", "images": [{"cid": small[0], "sha256": small[1], "caption": "next"}]},
    ]
    model = initial(fed)
    for block in blocks:
        r = open_round(fed, model)
        submit_all(fed, r, seed=r)
        fed.ledger.record_valuation(
            fed.coordinator, r, [Valuation(s.address, 1_000_000, 0) for s in fed.sites]
        )
        model = finalize(fed, r, model, block)
    first, second = collect(fed.ledger, fed.store, audits=[]).rounds
    assert [m.png for m in second.heatmaps] == [heatmap_png(3)]  # the later round is shown
    shown = [m for m in first.heatmaps if m.png is not None]
    assert len(shown) == MAX_REPORT_HEATMAP_PIXELS // 2 // (2048 * 2048)  # its half
    cut = [m for m in first.heatmaps if m.png is None]
    assert cut and all("this round's share" in m.problem for m in cut)


def test_an_animated_png_is_not_shown(tmp_path: Path) -> None:
    """a109 ``apng``: an APNG's header gives one frame's size, so the page's pixel allowance
    counted one frame of 2,001 a browser decodes; the writer writes one frame. A still PNG of
    the same picture is shown."""
    store = LocalStore(tmp_path)
    first = Image.new("RGB", (64, 64))
    frames = [first.copy() for _ in range(50)]
    for k, frame in enumerate(frames):
        frame.putpixel((k, 0), (255, 0, 0))
    buf = io.BytesIO()
    first.save(buf, format="PNG", save_all=True, append_images=frames, duration=20)
    still = io.BytesIO()
    first.save(still, format="PNG")
    _, maps, _ = read_heatmaps(store, _images(store, buf.getvalue(), still.getvalue()))
    assert maps[0].png is None and maps[0].problem == "not shown: an animated PNG"
    assert maps[1].png == still.getvalue()
