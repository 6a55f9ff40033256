"""The page in headless Chromium (Debian package ``chromium``): it loads from file:// without a
console message, the DOM is the page we wrote, and its screenshot is not blank."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedtrail.auditor.report import CSP

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = (
    "headless Chromium is needed for this test: "
    "`sudo apt-get update && sudo apt-get install -y chromium` (Debian package)"
)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    binary = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if binary is None:
        pytest.fail(INSTALL_HINT)
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, check=False)


_CONSOLE = re.compile(r"CONSOLE|Refused to|Uncaught|Failed to load|net::ERR_", re.IGNORECASE)


def _console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if _CONSOLE.search(line)]


def _screenshot(page: Path, tmp: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    png = tmp / "shot.png"
    proc = _chromium(
        [f"--screenshot={png}", "--window-size=1280,2000", page.resolve().as_uri()],
        tmp / "profile",
    )
    return png, proc


@pytest.mark.browser
def test_console_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The console check below must be able to fail: a page that tries to load an external
    image and run a script under the report's CSP logs errors that the check sees."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        f'content="{CSP}"></head><body><img src="https://example.invalid/x.png">'
        "<script>console.error('boom')</script></body></html>"
    )
    _, proc = _screenshot(bad, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console_problems(proc.stderr), proc.stderr[-2000:]


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report: tuple[Path, str], tmp_path: Path) -> None:
    """Loads the report from file:// with networking off: no console message (CSP violations,
    failed loads and script errors are console messages), the DOM is the page we wrote, and
    the 1280x2000 screenshot is not blank."""
    path, page = report
    png, proc = _screenshot(path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not _console_problems(proc.stderr), _console_problems(proc.stderr)
    assert png.is_file(), proc.stderr[-2000:]

    dom = _chromium(["--dump-dom", path.resolve().as_uri()], tmp_path / "profile2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_problems(dom.stderr), _console_problems(dom.stderr)
    assert '<section id="verification">' in dom.stdout
    assert dom.stdout.count("<img ") == page.count("<img ")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom.stdout

    with Image.open(png) as img:
        assert img.size == (1280, 2000)
        rgb = np.asarray(img.convert("RGB"))
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"screenshot has only {len(colours)} colours"
    non_white = float((rgb.min(axis=-1) < 235).mean())
    assert 0.03 < non_white < 0.9, f"share of non-white pixels {non_white:.3f}"
    # the verdict banner (green for an honest federation) is on screen
    green = (rgb[..., 1] > rgb[..., 0] + 40) & (rgb[..., 1] > rgb[..., 2] + 20)
    assert green.sum() > 500
