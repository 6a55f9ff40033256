"""The audit report: one self-contained HTML page, from a federation run by hand.

The federation is built on the embedded chain with a LocalStore and no aggregator service: the
test plays the aggregator (opens rounds, values, aggregates with the shared rule, writes a
schema-valid explanation log, finalizes), so the report is checked against a known history:

- round 1, 2: finalized (round 2 rejects one site and carries two heatmaps, one tampered);
- round 3: cancelled (nobody submitted before the deadline);
- round 4: valued, not finalized.

The browser test renders the page in headless Chromium (Debian package ``chromium``) and checks
that it loads without console errors and that its screenshot is not blank.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from eth_account.signers.local import LocalAccount
from PIL import Image

from fedtrail.auditor.commands import audit as audit_group
from fedtrail.auditor.report import clean_text, write_report
from fedtrail.auditor.verify import Check, RoundAudit, verify_all
from fedtrail.chain import advance_time, block_timestamp, connect, funded_accounts
from fedtrail.ledger import Ledger, Valuation
from fedtrail.ml.aggregation import AggregationRule, aggregate, apply_delta
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol import roundlog
from fedtrail.protocol.weights import WEIGHT_SCALE
from fedtrail.storage.codec import decode_model, decode_update, encode_model, encode_update
from fedtrail.storage.store import LocalStore, sha256_hex

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = (
    "headless Chromium is needed for this test: "
    "`sudo apt-get update && sudo apt-get install -y chromium` (Debian package)"
)

EVIL_NAME = "<script>alert(1)</script>"
EVIL_EXPLANATION = 'gain -0.004 <= 0 & <img src=x onerror="alert(2)"> rejected'
SITE_NAMES = ("St. Mary's Radiology", EVIL_NAME, "Klinikum $x^2$ Nord & S\u00fcd\u202e")
SPEC = ModelSpec()


@dataclass
class Fed:
    ledger: Ledger
    store: LocalStore
    coordinator: LocalAccount
    sites: list[LocalAccount]
    heatmap_png: bytes = b""
    logs: dict[int, dict[str, Any]] = field(default_factory=dict)


def _put(store: LocalStore, blob: bytes) -> tuple[str, str]:
    return store.put(blob), sha256_hex(blob)


def _heatmap_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:56, 0:56]
    heat = np.exp(-((xx - 30) ** 2 + (yy - 24) ** 2) / 120.0) + 0.1 * rng.random((56, 56))
    rgb = np.stack([heat, 0.3 * heat, 1 - heat], axis=-1)
    buf = io.BytesIO()
    Image.fromarray((255 * rgb / rgb.max()).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _submit_all(fed: Fed, round_id: int, *, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for i, site in enumerate(fed.sites):
        delta = {
            name: 0.01 * torch.randn(shape, generator=gen)
            for name, (shape, _) in SPEC.tensor_layout().items()
        }
        cid, sha = _put(fed.store, encode_update(delta, spec=SPEC, round=round_id).blob)
        fed.ledger.submit_update(site, round_id, cid, sha, 100 + 50 * i)


def _open(fed: Fed, model: tuple[str, str], seconds: int = 3600) -> int:
    deadline = block_timestamp(fed.ledger.w3) + seconds
    round_id, _ = fed.ledger.open_round(fed.coordinator, model[0], model[1], deadline)
    return round_id


def _finalize(
    fed: Fed, round_id: int, start: tuple[str, str], explanations: dict[str, Any] | None
) -> tuple[str, str]:
    """What an honest aggregator does after valuation: aggregate with the on-chain weights,
    store the new global model and the explanation log, finalize."""
    ledger, store = fed.ledger, fed.store
    subs = ledger.get_submissions(round_id)
    start_state, _ = decode_model(store.get(*start), spec=SPEC)
    deltas = [
        decode_update(store.get(s.cid, s.sha256), spec=SPEC, expected_round=round_id)[0]
        for s in subs
    ]
    rule = AggregationRule()
    new = apply_delta(start_state, aggregate(rule, deltas, [s.weight for s in subs]))
    global_ref = _put(store, encode_model(new, spec=SPEC, round=round_id))
    names = {s.address: s.name for s in ledger.get_sites()}
    auc = 0.70 + 0.08 * round_id
    doc: dict[str, Any] = {
        "format": roundlog.FORMAT,
        "round": round_id,
        "ledger": {"address": ledger.address, "chain_id": ledger.chain_id},
        "start_model": {"cid": start[0], "sha256": start[1]},
        "settings": {
            "aggregation_rule": asdict(rule),
            "valuation": {"method": "loo", "metric": "auc"},
            "model_spec": asdict(SPEC),
            "spec_hash": SPEC.spec_hash(),
            "seed": 0,
        },
        "validation": {"sha256": "ab" * 32, "images": 270},
        "sites": [
            {
                "site": s.site,
                "name": names[s.site],
                "update": {"cid": s.cid, "sha256": s.sha256, "num_samples": s.num_samples},
                "status": "ok",
                "components": {"gain": round(s.score / 1e7, 4), "cosine": 0.93},
                "score": s.score,
                "reason": s.reason,
                "reason_label": "OK" if s.reason == 0 else "LOW_GAIN",
                "explanation": (
                    f"marginal AUC gain {s.score / 1e7:.4f} > 0: accepted"
                    if s.reason == 0
                    else EVIL_EXPLANATION
                ),
                "weight": str(s.weight),
                "weight_fraction": s.weight / WEIGHT_SCALE,
            }
            for s in subs
        ],
        "aggregation": {
            "rule": rule.name,
            "global_sha256": global_ref[1],
            "included_sites": [s.site for s in subs if s.weight > 0],
        },
        "metrics": {
            "before": {"auc": auc - 0.08, "f1": auc - 0.15, "accuracy": auc - 0.1, "loss": 0.6},
            "after": {"auc": auc, "f1": auc - 0.07, "accuracy": auc - 0.02, "loss": 0.5},
        },
        "summary": f"Round {round_id}: {len(subs)} updates aggregated <b>weighted</b>.",
    }
    if explanations is not None:
        doc["explanations"] = explanations
    log_ref = _put(store, roundlog.to_bytes(doc))
    fed.logs[round_id] = doc
    ledger.finalize_round(
        fed.coordinator,
        round_id,
        global_cid=global_ref[0],
        global_sha256=global_ref[1],
        log_cid=log_ref[0],
        log_sha256=log_ref[1],
    )
    return global_ref


def _new_federation(tmp: Path) -> Fed:
    w3 = connect("embedded")
    accounts = funded_accounts(w3)
    ledger, _ = Ledger.deploy(w3, accounts[0])
    fed = Fed(ledger, LocalStore(tmp / "store"), accounts[0], accounts[1:4])
    for account, name in zip(fed.sites, SITE_NAMES, strict=True):
        ledger.register_site(fed.coordinator, account.address, name)
    return fed


def _initial(fed: Fed) -> tuple[str, str]:
    state = initial_model(SPEC, 0).state_dict()
    return _put(fed.store, encode_model(state, spec=SPEC, round=0))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Fed:
    fed = _new_federation(tmp_path_factory.mktemp("fed"))
    ledger, coord, sites = fed.ledger, fed.coordinator, fed.sites
    model = _initial(fed)

    r1 = _open(fed, model)
    _submit_all(fed, r1, seed=1)
    ledger.record_valuation(
        coord, r1, [Valuation(s.address, 600_000 + 100_000 * i, 0) for i, s in enumerate(sites)]
    )
    model = _finalize(fed, r1, model, None)

    r2 = _open(fed, model)
    _submit_all(fed, r2, seed=2)
    ledger.record_valuation(
        coord,
        r2,
        [
            Valuation(sites[0].address, 900_000, 0),
            Valuation(sites[1].address, 0, 1),  # the malicious name is rejected: LOW_GAIN
            Valuation(sites[2].address, 700_000, 0),
        ],
    )
    fed.heatmap_png = _heatmap_png(0)
    good = _put(fed.store, fed.heatmap_png)
    other = _put(fed.store, _heatmap_png(1))
    model = _finalize(
        fed,
        r2,
        model,
        {
            "method": "integrated_gradients <i>",
            "images": [
                {"cid": good[0], "sha256": good[1], "caption": "pneumonia probe <b>#7</b>"},
                {"cid": other[0], "sha256": "00" * 32, "caption": "tampered probe"},
                "not an object",
            ],
        },
    )

    r3 = _open(fed, model, seconds=60)
    advance_time(ledger.w3, 120)
    ledger.cancel_round(coord, r3)

    r4 = _open(fed, model)
    _submit_all(fed, r4, seed=4)
    ledger.record_valuation(coord, r4, [Valuation(s.address, 800_000, 0) for s in sites])
    return fed


@pytest.fixture(scope="module")
def report(fed: Fed, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = write_report(fed.ledger, fed.store, tmp_path_factory.mktemp("report"))
    return path, path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- content


def test_report_is_index_html_with_header_facts(fed: Fed, report: tuple[Path, str]) -> None:
    path, page = report
    assert path.name == "index.html"
    assert page.startswith("<!DOCTYPE html>")
    assert fed.ledger.address in page
    assert f"<dt>Chain id</dt><dd>{fed.ledger.chain_id}</dd>" in page
    assert "4 (1 cancelled, 2 finalized, 1 valued)" in page
    assert "Generated by <code>fedtrail audit report</code>" in page
    for section in ("rounds", "metrics", "weights", "reputation", "reasons", "verification"):
        assert f'<section id="{section}">' in page


def test_report_shows_sites_reasons_and_rounds(fed: Fed, report: tuple[Path, str]) -> None:
    _, page = report
    assert "St. Mary&#x27;s Radiology" in page
    for round_id in (1, 2, 3, 4):
        assert f"<h3>Round {round_id} " in page
    assert "round cancelled: no explanation log" in page
    assert "round valued: weights are fixed on chain" in page
    # reasons table: score, label, weight and the log's sentence
    assert "marginal AUC gain 0.0900 &gt; 0: accepted" in page
    assert '<span class="reason bad">LOW_GAIN</span>' in page
    assert "<td class=num>0.900</td>" in page
    subs = fed.ledger.get_submissions(2)
    assert f'title="{subs[0].weight}">{subs[0].weight / WEIGHT_SCALE:.2%}</td>' in page
    assert "gain=0.0900" in page  # log components
    # metrics table from metrics.after
    assert "0.780</b>" in page and "0.860</b>" in page
    # plots (metrics, weights, reputation) and the one verified heatmap are embedded
    assert page.count('src="data:image/png;base64,') == 4


class _Elements(HTMLParser):
    """Every element of the page with its attributes, as a browser's tokenizer sees them."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))


def test_report_escapes_untrusted_text(report: tuple[Path, str]) -> None:
    _, page = report
    assert EVIL_NAME not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert "<b>weighted</b>" not in page and "&lt;b&gt;weighted&lt;/b&gt;" in page
    assert "integrated_gradients &lt;i&gt;" in page
    assert "\u202e" not in page  # bidi override in a site name is neutralized
    assert "Klinikum $x^2$ Nord &amp; S\u00fcd\ufffd" in page
    # no element or handler that could run anything
    elements = _Elements(page).elements
    tags = {tag for tag, _ in elements}
    assert not tags & {"script", "iframe", "object", "embed", "link", "base", "form", "svg"}
    assert not [a for _, attrs in elements for a in attrs if a.startswith("on")]
    imgs = [attrs for tag, attrs in elements if tag == "img"]
    assert len(imgs) == 4 and all(a["src"].startswith("data:image/png;base64,") for a in imgs)


def test_report_is_self_contained(report: tuple[Path, str]) -> None:
    _, page = report
    elements = _Elements(page).elements
    refs = [v for _, attrs in elements for k, v in attrs.items() if k in ("src", "href")]
    assert refs, "expected images and in-page links"
    for ref in refs:
        assert ref.startswith(("data:image/png;base64,", "#")), ref
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page
    csp = [a["content"] for t, a in elements if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0].startswith("default-src 'none'; img-src data:;")


def test_heatmaps_are_hash_checked(fed: Fed, report: tuple[Path, str]) -> None:
    import base64

    _, page = report
    assert base64.b64encode(fed.heatmap_png).decode() in page
    assert "pneumonia probe &lt;b&gt;#7&lt;/b&gt;" in page
    assert "tampered probe" in page
    assert "not shown:" in page and "sha256" in page
    assert "entry is not an object" in page


def test_verification_table_pass_and_fail(fed: Fed, tmp_path: Path) -> None:
    audits = verify_all(fed.ledger, fed.store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if not c.passed]
    page = write_report(fed.ledger, fed.store, tmp_path / "ok", audits=audits).read_text()
    assert '<p class="verdict pass">Verification PASSED' in page
    assert "global.recomputed" in page and '<span class="badge pass">PASS</span>' in page
    assert '<span class="badge fail">' not in page

    bad = [RoundAudit(1, [Check(1, "global.recomputed", False, "sha <differs>")])]
    page = write_report(fed.ledger, fed.store, tmp_path / "bad", audits=bad).read_text()
    assert '<p class="verdict fail">Verification FAILED: 1 of 1 checks failed' in page
    assert '<tr class="failrow">' in page and '<span class="badge fail">FAIL</span>' in page
    assert "sha &lt;differs&gt;" in page


def test_report_is_deterministic(fed: Fed, report: tuple[Path, str], tmp_path: Path) -> None:
    _, page = report
    again = write_report(fed.ledger, fed.store, tmp_path).read_text(encoding="utf-8")
    assert again == page
    stamped = write_report(fed.ledger, fed.store, tmp_path, generated_at="2030-01-01T00:00Z")
    assert "<dt>Generated</dt><dd>2030-01-01T00:00Z</dd>" in stamped.read_text()


def test_open_round_and_empty_ledger(tmp_path: Path) -> None:
    fed = _new_federation(tmp_path)
    page = write_report(fed.ledger, fed.store, tmp_path / "empty").read_text()
    assert "No round has been opened yet." in page
    assert "No rounds to verify yet." in page

    round_id = _open(fed, _initial(fed))
    cid, sha = _put(fed.store, b"an update blob")
    fed.ledger.submit_update(fed.sites[0], round_id, cid, sha, 10)
    page = write_report(fed.ledger, fed.store, tmp_path / "open").read_text()
    assert "not valued yet" in page
    assert "No valued round yet: no weights to plot." in page
    assert "No finalized round yet: no metrics to plot." in page


def test_unreadable_log_is_reported_not_raised(fed: Fed, tmp_path: Path) -> None:
    # a copy of the store without round 1's log: the report names the problem and goes on
    copy = LocalStore(tmp_path / "store")
    for blob in (fed.store.root / "blobs").iterdir():
        if blob.name != fed.ledger.get_round(1).log_cid:
            copy.put(blob.read_bytes())
    page = write_report(fed.ledger, copy, tmp_path / "out").read_text()
    assert "explanation log Qm" in page and "unusable" in page
    assert '<p class="verdict fail">' in page


def test_clean_text() -> None:
    assert clean_text("a\x00b\u202ec\n\td") == "a\ufffdb\ufffdc d"
    assert clean_text("x" * 10, 5) == "xxxx\u2026"


# --------------------------------------------------------------------------- CLI


def test_cli_report_json(fed: Fed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reaches the chain by URL; the embedded chain lives in this process, so point the
    # command's ledger opener at the fixture's ledger.
    import fedtrail.auditor.commands as commands

    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    out = tmp_path / "r"
    args = ["report", "--out", str(out), "--store", f"local:{fed.store.root}", "--format", "json"]
    result = CliRunner().invoke(audit_group, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc == {"report": str(tmp_path / "r" / "index.html"), "passed": True}
    assert "Generated</dt>" in (tmp_path / "r" / "index.html").read_text()

    args = ["report", "--out", str(out), "--store", f"local:{fed.store.root}", "--no-timestamp"]
    result = CliRunner().invoke(audit_group, [*args, "--title", "Pneumonia federation"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"report written to {out / 'index.html'}\nverification: PASS")
    page = (out / "index.html").read_text()
    assert "Generated</dt>" not in page and "<h1>Pneumonia federation</h1>" in page


# --------------------------------------------------------------------------- browser


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
    from fedtrail.auditor.report import CSP

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
