"""`fedtrail explain --html`: one self-contained clinician page (every image, its decision and
truth, each method's overlay side by side, the model and each method's faithfulness), checked
in headless Chromium like the audit report."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fedtrail.auditor.explain_page import ModelFacts, image_png, render_page
from fedtrail.cli import cli
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.explain import METHODS, explain_methods, probe_set
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.storage.codec import encode_model
from fedtrail.storage.store import LocalStore
from tests.auditor.report.test_browser import _chromium, _console_problems, _screenshot


def _args(tmp: Path, *extra: str) -> tuple[list[str], str]:
    store = LocalStore(tmp / "store")
    blob = encode_model(initial_model(ModelSpec(), 1).state_dict(), spec=ModelSpec(), round=3)
    sha = hashlib.sha256(blob).hexdigest()
    args = ["explain", "--cid", store.put(blob), "--sha256", sha]
    args += ["--store", f"local:{tmp / 'store'}", "--out", str(tmp / "out"), "--per-class", "1"]
    return [*args, *extra], sha


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], str]:
    tmp = tmp_path_factory.mktemp("explain")
    args, sha = _args(tmp, "--html", "--format", "json")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    return Path(doc["page"]), doc, sha


def test_html_writes_one_page_with_every_method_side_by_side(
    page: tuple[Path, dict[str, object], str],
) -> None:
    path, doc, sha = page
    assert path.name == "index.html"
    assert doc["methods"] == list(METHODS)  # --html without --methods: all five, lime too
    html = path.read_text(encoding="utf-8")
    images = doc["images"]
    assert isinstance(images, list) and len(images) == 2
    # per image: the plain image and one overlay per method, all inlined
    assert html.count('src="data:image/png;base64,') == 2 * (1 + len(METHODS))
    for img in images:
        for method, file in img["files"].items():
            png = Path(file).read_bytes()
            assert base64.b64encode(png).decode() in html, method
    assert f"<code>{sha}</code> (verified)" in html
    assert "<dt>Model round</dt><dd>3</dd>" in html
    assert "threshold 0.500 (default 0.5: a model named by CID has no round log)" in html
    first = images[0]
    assert f"({first['confidence']:.1%} calibrated probability)" in html
    # the faithfulness table: one row per method with the numbers the JSON reports
    faith = doc["faithfulness"]
    assert isinstance(faith, dict) and set(faith) == set(METHODS)
    for method, f in faith.items():
        assert (
            f"<tr><td>{method}</td><td class=num>{f['deletion_auc']:.3f}</td>"
            f"<td class=num>{f['random_deletion_auc']:.3f}</td>"
            f"<td class=num>{f['insertion_auc']:.3f}</td>"
        ) in html
        assert f["images"] == 2 and f["steps"] == 10
    # nothing to load or run
    assert "<script" not in html.lower() and "url(" not in html
    assert not re.search(r'(src|href)="(?!data:)', html)


def test_methods_choose_the_overlays_and_are_checked(tmp_path: Path) -> None:
    args, _ = _args(tmp_path, "--methods", "lime,occlusion", "--format", "json")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["methods"] == ["lime", "occlusion"] and doc["page"] is None
    assert set(doc["images"][0]["files"]) == {"lime", "occlusion"}
    assert not (tmp_path / "out" / "index.html").exists()
    for bad in (["--methods", "lime,nope"], ["--methods", "lime,lime"], ["--methods", ","]):
        bad_args, _ = _args(tmp_path, *bad)
        assert CliRunner().invoke(cli, bad_args).exit_code == 2, bad
    both, _ = _args(tmp_path, "--method", "lime", "--methods", "lime")
    assert CliRunner().invoke(cli, both).exit_code == 2


def test_the_page_escapes_class_names_and_keeps_image_pixels() -> None:
    spec = ModelSpec()
    data = probe_set(load_bundled().val, 1)
    state = initial_model(spec, 2).state_dict()
    results = explain_methods(state, spec, data, methods=("grad_cam",), faithfulness_steps=2)
    facts = ModelFacts("Qm<b>", "ab" * 32, None, "threshold 0.500", "default")
    html = render_page(facts, data, results, ["<script>alert(1)</script>", "pneumonia"])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Qm&lt;b&gt;" in html and "<dt>Model round</dt><dd>\u2014</dd>" in html
    # the plain image is the image, upscaled by whole pixels
    with Image.open(io.BytesIO(image_png(data.images[0]))) as img:
        arr = np.asarray(img)
    scale = arr.shape[0] // 28
    expected = np.rint(np.clip(data.images[0][0], 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(arr[::scale, ::scale], expected)


@pytest.mark.browser
def test_the_clinician_page_renders_in_headless_chromium(
    page: tuple[Path, dict[str, object], str], tmp_path: Path
) -> None:
    """From file:// with networking off: no console message (CSP violations and failed loads
    are console messages), every image decoded in the DOM, a screenshot that is not blank."""
    path, _, _ = page
    png, proc = _screenshot(path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not _console_problems(proc.stderr), _console_problems(proc.stderr)
    dom = _chromium(["--dump-dom", path.resolve().as_uri()], tmp_path / "profile2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_problems(dom.stderr), _console_problems(dom.stderr)
    assert dom.stdout.count("<img ") == 2 * (1 + len(METHODS))
    assert "Which explanation to trust" in dom.stdout
    with Image.open(png) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50
    non_white = float((rgb.min(axis=-1) < 235).mean())
    assert 0.03 < non_white < 0.95, non_white


def test_the_page_replaces_a_link_at_its_path_instead_of_writing_through_it(
    tmp_path: Path,
) -> None:
    """`explain --html` writes a temporary file and renames it over ``index.html``. Before, it
    wrote ``index.html`` in place: a link under that name in the output folder made it
    overwrite the file the link pointed at (and a crash mid-write left a torn page)."""
    args, _ = _args(tmp_path, "--html", "--method", "grad_cam")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    (out / "index.html").symlink_to(victim)
    overlay = tmp_path / "victim.png"
    overlay.write_bytes(b"keep me too")
    (out / "000-grad_cam.png").symlink_to(overlay)  # the overlays are written the same way
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert overlay.read_bytes() == b"keep me too"
    assert (out / "000-grad_cam.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = out / "index.html"
    assert not page.is_symlink() and "<!DOCTYPE html>" in page.read_text(encoding="utf-8")
