"""The audit report: one self-contained HTML page with a federation's history.

Everything on the page comes from public data: the ledger's storage and events, and blobs fetched
by CID and checked against the sha256 the chain records (the explanation logs and the heatmap
images). The page needs no network to be viewed: inline CSS, plots and heatmaps as base64
``data:`` URIs, no scripts, no fonts; its Content-Security-Policy forbids loading anything else.

Site names (``registerSite``) and every string in an explanation log come from other parties, so
each is stripped of control and bidi-override characters, shortened, and HTML-escaped before it is
written; matplotlib gets the same text with mathtext parsing off.

The output is deterministic for a given chain state and store: byte-identical unless a
``generated_at`` stamp is passed.

Modules, in pipeline order: ``collect`` (chain and store -> records, with the limits on untrusted
input), ``plots`` (records -> PNG figures), ``html`` (records and figures -> the page; escaping,
``style`` holds its CSS); ``text`` cleans untrusted strings for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fedtrail.auditor.report.collect import (
    MAX_HEATMAP_BYTES,
    MAX_HEATMAP_PIXELS,
    MAX_HEATMAPS_PER_ROUND,
    MAX_REPORT_HEATMAP_BYTES,
    MAX_REPORT_HEATMAP_PIXELS,
    PNG_MAGIC,
    Federation,
    Heatmap,
    ImageBudget,
    RoundData,
    collect,
)
from fedtrail.auditor.report.html import CSP, DEFAULT_TITLE, esc, render_html
from fedtrail.auditor.report.text import clean_text, short_hex
from fedtrail.fsutil import atomic_write
from fedtrail.ledger import Ledger
from fedtrail.storage.store import ContentStore

if TYPE_CHECKING:
    from fedtrail.auditor.verify import RoundAudit

REPORT_FILE = "index.html"


def write_report(
    ledger: Ledger,
    store: ContentStore,
    out_dir: Path,
    *,
    audits: list[RoundAudit] | None = None,
    title: str = DEFAULT_TITLE,
    generated_at: str | None = None,
    federation: Federation | None = None,
) -> Path:
    """Writes ``out_dir/index.html`` (one self-contained page) and returns its path.

    ``audits`` are shown as the verification results; when None, ``verify_all`` runs first.
    ``generated_at`` (any text, e.g. an ISO timestamp) is printed in the header; without it the
    page is byte-identical for identical chain state and store content. ``federation``: the
    records already collected (then ``ledger``, ``store`` and ``audits`` are not read again).
    """
    fed = federation if federation is not None else collect(ledger, store, audits)
    page = render_html(fed, title=title, generated_at=generated_at)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    # a unique temporary file beside it: two reports written into one folder at once cannot
    # tear each other's page (a fixed temporary name let one rename the other's half-written file)
    atomic_write(path, page.encode("utf-8"), shared=True)
    return path


__all__ = [
    "CSP",
    "DEFAULT_TITLE",
    "MAX_HEATMAPS_PER_ROUND",
    "MAX_HEATMAP_BYTES",
    "MAX_HEATMAP_PIXELS",
    "MAX_REPORT_HEATMAP_BYTES",
    "MAX_REPORT_HEATMAP_PIXELS",
    "PNG_MAGIC",
    "REPORT_FILE",
    "Federation",
    "Heatmap",
    "ImageBudget",
    "RoundData",
    "clean_text",
    "collect",
    "esc",
    "render_html",
    "short_hex",
    "write_report",
]
