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
"""

from __future__ import annotations

import base64
import html
import io
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedtrail import __version__
from fedtrail.errors import FedtrailError
from fedtrail.ledger import Ledger, RoundInfo, SiteInfo, Submission
from fedtrail.protocol import roundlog
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.weights import SCORE_SCALE, WEIGHT_SCALE
from fedtrail.storage.store import ContentStore

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from fedtrail.auditor.verify import RoundAudit

DEFAULT_TITLE = "fedtrail federation audit report"
REPORT_FILE = "index.html"

MAX_HEATMAPS_PER_ROUND = 32
MAX_HEATMAP_BYTES = 4 * 1024 * 1024
MAX_HEATMAP_PIXELS = 2048 * 2048
MAX_COMPONENTS = 12
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SHA256 = re.compile(r"[0-9a-f]{64}")

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)

# Colour-blind-friendly palette (Okabe-Ito, then Tableau), one colour per site across every plot.
_PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#8c564b",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#9467bd",
    "#ff9896",
    "#98df8a",
    "#c5b0d5",
)


# --------------------------------------------------------------------------- untrusted text


def clean_text(value: object, limit: int = 500) -> str:
    """``value`` as display text: control, format (bidi override, zero-width) and unassigned
    characters replaced by U+FFFD, whitespace runs collapsed, cut at ``limit`` characters."""
    text = str(value)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r":
            out.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append("\ufffd")
        else:
            out.append(ch)
    text = re.sub(r"\s+", " ", "".join(out)).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


def esc(value: object, limit: int = 500) -> str:
    """Cleaned and HTML-escaped (quotes too, so it is safe inside attributes)."""
    return html.escape(clean_text(value, limit), quote=True)


def short_hex(value: str, head: int = 10, tail: int = 4) -> str:
    """``0x1234abcd\u2026ef01``: the first ``head`` and last ``tail`` characters."""
    if len(value) <= head + tail + 1:
        return value
    return f"{value[:head]}\u2026{value[len(value) - tail :]}"


# --------------------------------------------------------------------------- collected data


@dataclass(frozen=True)
class Heatmap:
    caption: str
    cid: str
    png: bytes | None
    problem: str = ""


@dataclass
class RoundData:
    info: RoundInfo
    submissions: list[Submission]
    log: dict[str, Any] | None = None
    log_problem: str = ""
    heatmap_method: str = ""
    heatmaps: list[Heatmap] = field(default_factory=list)
    heatmaps_dropped: int = 0

    def log_entry(self, site: str) -> dict[str, Any] | None:
        if self.log is None:
            return None
        for entry in self.log["sites"]:
            if str(entry["site"]).lower() == site.lower():
                return dict(entry)
        return None

    def metrics_after(self) -> dict[str, Any] | None:
        if self.log is None:
            return None
        after: dict[str, Any] = self.log["metrics"]["after"]
        return after


@dataclass
class Federation:
    """What the report shows, read once from the chain and the store."""

    address: str
    chain_id: int
    block: int
    coordinator: str
    aggregator: str
    sites: list[SiteInfo]
    rounds: list[RoundData]
    reputation: dict[str, list[tuple[int, int]]]
    audits: list[RoundAudit]

    def site_name(self, address: str) -> str:
        for s in self.sites:
            if s.address == address:
                return s.name
        return ""

    def site_order(self) -> list[str]:
        """Every address seen (registered or submitting), in the aggregation order."""
        seen = {s.address for s in self.sites}
        for rd in self.rounds:
            seen.update(s.site for s in rd.submissions)
        return sorted(seen, key=lambda a: int(a, 16))


def _read_log(store: ContentStore, info: RoundInfo) -> tuple[dict[str, Any] | None, str]:
    if info.phase != Phase.FINALIZED:
        why = {
            Phase.OPEN: "round open: not valued yet, no explanation log",
            Phase.VALUED: "round valued: weights are fixed on chain, not finalized yet, "
            "no explanation log",
            Phase.CANCELLED: "round cancelled: no explanation log",
        }.get(info.phase, f"round {info.phase.label}")
        return None, why
    if not info.log_cid:
        return None, "the chain names no explanation log for this round"
    try:
        return roundlog.from_bytes(store.get(info.log_cid, info.log_sha256)), ""
    except FedtrailError as exc:
        return None, f"explanation log {info.log_cid} unusable: {exc}"


def _read_heatmaps(store: ContentStore, doc: dict[str, Any]) -> tuple[str, list[Heatmap], int]:
    """The log's optional XAI heatmaps, each fetched and checked against its sha256."""
    block = doc.get("explanations")
    if not isinstance(block, dict):
        return "", [], 0
    method = block.get("method")
    method_text = method if isinstance(method, str) else ""
    images = block.get("images")
    if not isinstance(images, list):
        return method_text, [], 0
    out: list[Heatmap] = []
    for i, item in enumerate(images[:MAX_HEATMAPS_PER_ROUND]):
        if not isinstance(item, dict):
            out.append(Heatmap(f"image {i + 1}", "", None, "entry is not an object"))
            continue
        caption_raw = item.get("caption")
        caption = caption_raw if isinstance(caption_raw, str) else f"image {i + 1}"
        cid, sha = item.get("cid"), item.get("sha256")
        if not isinstance(cid, str) or not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            out.append(Heatmap(caption, str(cid or ""), None, "no valid cid/sha256 given"))
            continue
        out.append(_fetch_png(store, caption, cid, sha))
    return method_text, out, max(0, len(images) - MAX_HEATMAPS_PER_ROUND)


def _fetch_png(store: ContentStore, caption: str, cid: str, sha: str) -> Heatmap:
    try:
        blob = store.get(cid, sha, max_bytes=MAX_HEATMAP_BYTES)
    except FedtrailError as exc:
        return Heatmap(caption, cid, None, f"not shown: {exc}")
    if not blob.startswith(PNG_MAGIC):
        return Heatmap(caption, cid, None, "not shown: the blob is not a PNG image")
    try:
        from PIL import Image

        with Image.open(io.BytesIO(blob)) as img:
            if img.format != "PNG" or img.width * img.height > MAX_HEATMAP_PIXELS:
                return Heatmap(caption, cid, None, "not shown: not a PNG of a sensible size")
            img.verify()
    except Exception as exc:  # PIL raises many types for broken images
        return Heatmap(caption, cid, None, f"not shown: broken PNG ({type(exc).__name__})")
    return Heatmap(caption, cid, blob)


def collect(
    ledger: Ledger, store: ContentStore, audits: list[RoundAudit] | None = None
) -> Federation:
    """Reads everything the report shows (and runs ``verify_all`` when ``audits`` is None)."""
    if audits is None:
        from fedtrail.auditor.verify import verify_all

        audits = verify_all(ledger, store)
    rounds: list[RoundData] = []
    for info in ledger.rounds():
        rd = RoundData(info, ledger.get_submissions(info.id))
        rd.log, rd.log_problem = _read_log(store, info)
        if rd.log is not None:
            rd.heatmap_method, rd.heatmaps, rd.heatmaps_dropped = _read_heatmaps(store, rd.log)
        rounds.append(rd)
    reputation: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for ev in ledger.events("UpdateValued"):
        reputation[str(ev.args["site"])].append((int(ev.args["round"]), int(ev.args["reputation"])))
    return Federation(
        address=ledger.address,
        chain_id=ledger.chain_id,
        block=int(ledger.w3.eth.block_number),
        coordinator=ledger.coordinator(),
        aggregator=ledger.aggregator(),
        sites=sorted(ledger.get_sites(), key=lambda s: int(s.address, 16)),
        rounds=rounds,
        reputation=dict(reputation),
        audits=list(audits),
    )


def _reason_names() -> dict[int, tuple[str, str]]:
    """Reason code -> (label, description) from the aggregator's table, if it is installed."""
    try:
        from fedtrail.protocol.codes import Reason
    except ImportError:
        return {}
    out: dict[int, tuple[str, str]] = {}
    for r in Reason:
        try:
            out[int(r)] = (r.name, r.description)
        except (KeyError, AttributeError):
            out[int(r)] = (r.name, "")
    return out


# --------------------------------------------------------------------------- plots


class _Plots:
    """matplotlib figures (Agg, no pyplot state) as PNG data URIs."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        order = fed.site_order()
        self.colour = {a: _PALETTE[i % len(_PALETTE)] for i, a in enumerate(order)}
        self.hatch = {a: ("" if i < len(_PALETTE) else "//") for i, a in enumerate(order)}

    def label(self, address: str) -> str:
        name = clean_text(self.fed.site_name(address), 32) or "(no name)"
        text = f"{name} ({address[:8]}\u2026)"
        return " " + text if text.startswith("_") else text  # "_x" labels are hidden by mpl

    def _render(self, draw: Callable[[Axes], bool], height: float = 3.4) -> str | None:
        import matplotlib
        from matplotlib.figure import Figure

        # parse_math off: site names are untrusted and "$...$" would be parsed as mathtext
        with matplotlib.rc_context(
            {
                "text.parse_math": False,
                "text.usetex": False,
                "font.family": "DejaVu Sans",
                "font.size": 9,
                "axes.spines.top": False,
                "axes.spines.right": False,
            }
        ):
            fig = Figure(figsize=(9.0, height), dpi=110, layout="constrained")
            ax = fig.add_subplot()
            if not draw(ax):
                return None
            buf = io.BytesIO()
            fig.savefig(buf, format="png", metadata={"Software": None})
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    def metrics(self) -> str | None:
        rows = [(rd.info.id, rd.metrics_after()) for rd in self.fed.rounds]
        points = [(r, m) for r, m in rows if m is not None]

        def draw(ax: Axes) -> bool:
            if not points:
                return False
            xs = [r for r, _ in points]
            styles = (  # key, legend, colour, line style, marker, label offset (points)
                ("auc", "AUC", "#1f3a93", "-", "o", 7),
                ("f1", "F1", "#c05800", "-", "s", -12),
                ("accuracy", "accuracy", "#5f6368", ":", "^", 0),
            )
            for key, name, colour, ls, marker, dy in styles:
                ys = [_num(m.get(key)) for _, m in points]
                ax.plot(xs, ys, color=colour, linestyle=ls, marker=marker, label=name)
                if not dy or len(xs) > _MAX_ANNOTATED:
                    continue
                for x, y in zip(xs, ys, strict=True):
                    if y == y:  # not NaN
                        ax.annotate(
                            f"{y:.3f}",
                            (x, y),
                            textcoords="offset points",
                            xytext=(0, dy),
                            ha="center",
                            va="center",
                            fontsize=7,
                            color=colour,
                        )
            _round_ticks(ax, xs, [f"round {x}" for x in xs])
            if len(xs) == 1:
                ax.set_xlim(xs[0] - 1, xs[0] + 1)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("after aggregation")
            ax.set_title("Global model on the aggregator's validation set (from each round's log)")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(loc="lower right", frameon=False)
            return True

        return self._render(draw)

    def weights(self) -> str | None:
        valued = [rd for rd in self.fed.rounds if rd.info.phase in (Phase.VALUED, Phase.FINALIZED)]

        def draw(ax: Axes) -> bool:
            if not valued:
                return False
            xs = list(range(len(valued)))
            bottom = [0.0] * len(valued)
            shown = 0
            for site in self.fed.site_order():
                subs = [next((s for s in rd.submissions if s.site == site), None) for rd in valued]
                if all(s is None for s in subs):
                    continue
                ys = [s.weight / WEIGHT_SCALE if s else 0.0 for s in subs]
                shown += 1
                ax.bar(
                    xs,
                    ys,
                    bottom=bottom,
                    width=0.6 if len(xs) <= _MAX_ANNOTATED else 0.85,
                    color=self.colour[site],
                    hatch=self.hatch[site],
                    edgecolor="white",
                    linewidth=0.8,
                    label=self.label(site),
                )
                for i, y in enumerate(ys):
                    if y >= 0.06 and len(xs) <= _MAX_ANNOTATED:
                        ax.text(
                            i,
                            bottom[i] + y / 2,
                            f"{y:.0%}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color=_ink(self.colour[site]),
                        )
                bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
            _round_ticks(
                ax,
                xs,
                [f"round {rd.info.id}\n({rd.info.phase.label})" for rd in valued],
                numbers=[rd.info.id for rd in valued],
            )
            ax.set_ylim(0, 1.0)
            ax.yaxis.set_major_formatter("{x:.0%}")
            ax.set_ylabel("on-chain weight")
            ax.set_title("Share of each site in the aggregate (on-chain weights)")
            _legend_below(ax, shown)
            return True

        return self._render(draw, height=3.8)

    def reputation(self) -> str | None:
        def draw(ax: Axes) -> bool:
            if not self.fed.reputation:
                return False
            rounds: set[int] = set()
            shown = 0
            for site in self.fed.site_order():
                series = self.fed.reputation.get(site)
                if not series:
                    continue
                shown += 1
                xs = [r for r, _ in series]
                rounds.update(xs)
                ax.plot(
                    xs,
                    [v / SCORE_SCALE for _, v in series],
                    marker="o",
                    color=self.colour[site],
                    label=self.label(site),
                )
            ticks = sorted(rounds)
            _round_ticks(ax, ticks, [f"round {r}" for r in ticks])
            if len(ticks) == 1:
                ax.set_xlim(ticks[0] - 1, ticks[0] + 1)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("reputation (0..1)")
            ax.set_title("Site reputation after each valued round (UpdateValued events)")
            ax.grid(axis="y", alpha=0.3)
            _legend_below(ax, shown)
            return True

        return self._render(draw, height=3.8)


_MAX_ANNOTATED = 12  # more rounds than this: no value labels, plain round numbers on the axis


def _round_ticks(
    ax: Axes, xs: list[int], labels: list[str], *, numbers: list[int] | None = None
) -> None:
    """One labelled tick per round, or for long histories about a dozen numbered ones."""
    if len(xs) <= _MAX_ANNOTATED:
        ax.set_xticks(xs, labels)
        return
    nums = numbers or xs
    step = -(-len(xs) // _MAX_ANNOTATED)
    ax.set_xticks(xs[::step], [str(n) for n in nums[::step]])
    ax.set_xlabel("round")


def _legend_below(ax: Axes, n: int) -> None:
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18),
        ncols=min(max(n, 1), 4),
        frameon=False,
        fontsize=8,
    )


def _ink(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "white"


def _num(value: object) -> float:
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else float("nan")
    )


def _value(value: object) -> str:
    return _fmt(value, 4) if isinstance(value, float) else clean_text(value, 40)


def _code(value: str, head: int, tail: int) -> str:
    """A (long, untrusted) hash or CID shortened in a <code>, the full text as its tooltip."""
    return f'<code title="{esc(value)}">{esc(short_hex(value, head, tail))}</code>'


def _fmt(value: object, digits: int = 3) -> str:
    x = _num(value)
    return "\u2014" if x != x else f"{x:.{digits}f}"


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { --pass:#1b7f3b; --pass-bg:#e3f4e8; --fail:#b3261e; --fail-bg:#fbe4e2;
  --muted:#5f6368; --line:#d9dce1; --head:#f3f5f8; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color:#1f2328; margin:0; background:#fff; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }
header { border-bottom: 3px solid #1f2328; padding-bottom: 12px; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 20px; margin: 28px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 6px; }
.muted, .note { color: var(--muted); }
.note { font-size: 13px; margin: 4px 0 10px; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.verdict { font-size: 17px; font-weight: 700; padding: 10px 14px; border-radius: 6px;
  margin: 10px 0; }
.verdict.pass { color: var(--pass); background: var(--pass-bg); border: 1px solid var(--pass); }
.verdict.fail { color: var(--fail); background: var(--fail-bg); border: 1px solid var(--fail); }
nav { font-size: 13px; margin: 6px 0 0; } nav a { margin-right: 14px; color: #0b57d0; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.failrow td { background: var(--fail-bg); }
.badge { display: inline-block; min-width: 44px; text-align: center; font-weight: 700;
  border-radius: 4px; padding: 0 6px; font-size: 12px; }
.badge.pass { color: #fff; background: var(--pass); }
.badge.fail { color: #fff; background: var(--fail); }
.badge.phase { color: #1f2328; background: #e8eaed; font-weight: 600; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px;
  vertical-align: baseline; border: 1px solid rgba(0,0,0,.25); }
.sitename { font-weight: 600; overflow-wrap: anywhere; }
.expl { max-width: 520px; overflow-wrap: anywhere; }
.comp { color: var(--muted); font-size: 11px; margin-top: 2px; overflow-wrap: anywhere; }
.reason { font-weight: 600; white-space: nowrap; }
.reason.ok { color: var(--pass); } .reason.bad { color: var(--fail); }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
.heatmaps { display: flex; flex-wrap: wrap; gap: 12px; }
.heatmaps figure { width: 220px; margin: 0; overflow-wrap: anywhere; }
.heatmaps .missing { width: 220px; min-height: 120px; border: 2px dashed var(--fail);
  padding: 8px; font-size: 12px; }
.heatmaps figure img { width: 220px; image-rendering: pixelated; }
.problem { color: var(--fail); }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line);
  padding-top: 8px; }
@media print { nav { display: none; } h2 { break-after: avoid; }
  figure, tr { break-inside: avoid; } }
"""


class _Page:
    def __init__(self, fed: Federation, title: str, generated_at: str | None) -> None:
        self.fed = fed
        self.title = title
        self.generated_at = generated_at
        self.plots = _Plots(fed)
        self.reasons = _reason_names()
        self.parts: list[str] = []

    def add(self, *chunks: str) -> None:
        self.parts.extend(chunks)

    # ------------------------------------------------------------------ pieces

    def site_cell(self, address: str, *, with_address: bool = True) -> str:
        name = self.fed.site_name(address)
        colour = self.plots.colour.get(address, "#999999")
        shown = esc(name, 80) if clean_text(name) else '<span class="muted">(no name)</span>'
        addr = (
            f'<br><code title="{esc(address)}">{esc(short_hex(address))}</code>'
            if with_address
            else ""
        )
        return (
            f'<span class="swatch" style="background:{colour}"></span>'
            f'<span class="sitename">{shown}</span>{addr}'
        )

    def badge(self, passed: bool) -> str:
        word = "PASS" if passed else "FAIL"
        return f'<span class="badge {word.lower()}">{word}</span>'

    def figure(self, uri: str | None, alt: str, caption: str, empty: str) -> None:
        if uri is None:
            self.add(f'<p class="note">{esc(empty)}</p>')
            return
        self.add(
            f'<figure><img src="{uri}" alt="{esc(alt)}">'
            f"<figcaption>{esc(caption, 1000)}</figcaption></figure>"
        )

    def check_site(self, check: str) -> str:
        """For ``update.<address prefix>`` checks: the site's name, so a reader knows whose."""
        if not check.startswith("update."):
            return ""
        prefix = check.removeprefix("update.").lower()
        for address in self.plots.colour:
            if address.lower().startswith(prefix):
                return f"<br>{self.site_cell(address, with_address=False)}"
        return ""

    def reason_label(self, rd: RoundData, sub: Submission) -> str:
        entry = rd.log_entry(sub.site)
        if entry is not None:
            return clean_text(entry.get("reason_label", ""), 60)
        known = self.reasons.get(sub.reason)
        return known[0] if known else f"code {sub.reason}"

    # ------------------------------------------------------------------ sections

    def header(self) -> None:
        fed = self.fed
        phases: dict[str, int] = defaultdict(int)
        for rd in fed.rounds:
            phases[rd.info.phase.label] += 1
        phase_text = ", ".join(f"{n} {p}" for p, n in sorted(phases.items())) or "none yet"
        checks = [c for a in fed.audits for c in a.checks]
        failed = [c for c in checks if not c.passed]
        ok = bool(fed.audits) and not failed
        if not fed.audits:
            verdict = "No rounds to verify yet."
        elif ok:
            verdict = (
                f"Verification PASSED: all {len(checks)} checks over {len(fed.audits)} round(s)."
            )
        else:
            names = ", ".join(sorted({f"round {c.round}: {c.name}" for c in failed}))
            verdict = (
                f"Verification FAILED: {len(failed)} of {len(checks)} checks failed ({names})."
            )
        registered = sum(1 for s in fed.sites if s.registered)
        stamp = f"<dt>Generated</dt><dd>{esc(self.generated_at)}</dd>" if self.generated_at else ""
        self.add(
            "<header>",
            f"<h1>{esc(self.title, 200)}</h1>",
            f'<p class="verdict {"pass" if ok else "fail"}">{esc(verdict, 2000)}</p>',
            '<dl class="facts">',
            f"<dt>Ledger</dt><dd><code>{esc(fed.address)}</code></dd>",
            f"<dt>Chain id</dt><dd>{fed.chain_id}</dd>",
            f"<dt>Chain state</dt><dd>as of block {fed.block}</dd>",
            f"<dt>Coordinator</dt><dd><code>{esc(fed.coordinator)}</code></dd>",
            f"<dt>Aggregator</dt><dd><code>{esc(fed.aggregator)}</code></dd>",
            f"<dt>Rounds</dt><dd>{len(fed.rounds)} ({esc(phase_text)})</dd>",
            f"<dt>Sites</dt><dd>{registered} registered, {len(fed.sites)} ever</dd>",
            stamp,
            "</dl>",
            '<p class="note">Generated by <code>fedtrail audit report</code> '
            f"(fedtrail {esc(__version__)}) from public data only. Scores, weights, sample counts "
            "and reputations are read from the contract; every explanation log and heatmap shown "
            "was fetched by CID and checked against the sha256 recorded on chain. Reason labels, "
            "explanations and metrics come from those logs. Site names and log texts are "
            "supplied by the participants and shown escaped. Verification recomputes every "
            "weight and every global model bit for bit (<code>fedtrail audit verify</code>).</p>",
            "<nav>"
            '<a href="#rounds">Rounds</a><a href="#metrics">Global metrics</a>'
            '<a href="#weights">Weights</a><a href="#reputation">Reputation</a>'
            '<a href="#reasons">Reasons</a><a href="#verification">Verification</a>'
            '<a href="#heatmaps">Heatmaps</a>'
            "</nav>",
            "</header>",
        )

    def rounds_table(self) -> None:
        by_round = {a.round: a for a in self.fed.audits}
        self.add('<section id="rounds"><h2>Rounds</h2>')
        if not self.fed.rounds:
            self.add('<p class="note">No round has been opened yet.</p></section>')
            return
        self.add(
            "<table><thead><tr><th class=num>Round</th><th>Phase</th><th class=num>Updates</th>"
            "<th>Start model sha256</th><th>Global model sha256</th><th>Explanation log</th>"
            "<th>Verified</th></tr></thead><tbody>"
        )
        for rd in self.fed.rounds:
            info = rd.info
            audit = by_round.get(info.id)
            verified = self.badge(audit.passed) if audit else '<span class="muted">not run</span>'
            glob = (
                _code(info.global_sha256, 16, 0)
                if info.phase == Phase.FINALIZED
                else '<span class="muted">\u2014</span>'
            )
            if rd.log is not None:
                log = _code(info.log_cid, 14, 4)
            else:
                log = f'<span class="muted">{esc(rd.log_problem)}</span>'
            self.add(
                f"<tr><td class=num>{info.id}</td>"
                f'<td><span class="badge phase">{esc(info.phase.label)}</span></td>'
                f"<td class=num>{info.submission_count}</td>"
                f"<td>{_code(info.start_sha256, 16, 0)}</td>"
                f"<td>{glob}</td><td>{log}</td><td>{verified}</td></tr>"
            )
        self.add("</tbody></table>")
        summaries = [(rd.info.id, rd.log["summary"]) for rd in self.fed.rounds if rd.log]
        if summaries:
            self.add("<h3>Aggregator's summaries (from the logs)</h3><ul>")
            for r, text in summaries:
                self.add(f"<li><b>Round {r}.</b> {esc(text, 1000)}</li>")
            self.add("</ul>")
        self.add("</section>")

    def metrics_section(self) -> None:
        self.add('<section id="metrics"><h2>Global model metrics per round</h2>')
        self.figure(
            self.plots.metrics(),
            "Line plot of AUC, F1 and accuracy of the global model per finalized round",
            "AUC, F1 and accuracy of each round's new global model on the aggregator's "
            "validation set (metrics.after of the round's explanation log). Only finalized "
            "rounds have a log.",
            "No finalized round yet: no metrics to plot.",
        )
        rows = [rd for rd in self.fed.rounds if rd.log is not None]
        if rows:
            self.add(
                "<table><thead><tr><th class=num>Round</th>"
                "<th class=num>AUC before \u2192 after</th>"
                "<th class=num>F1 before \u2192 after</th>"
                "<th class=num>Accuracy before \u2192 after</th>"
                "<th class=num>Loss before \u2192 after</th><th class=num>Validation images</th>"
                "</tr></thead><tbody>"
            )
            for rd in rows:
                assert rd.log is not None
                before, after = rd.log["metrics"]["before"], rd.log["metrics"]["after"]
                cells = "".join(
                    f"<td class=num>{_fmt(before.get(k))} \u2192 <b>{_fmt(after.get(k))}</b></td>"
                    for k in ("auc", "f1", "accuracy", "loss")
                )
                self.add(
                    f"<tr><td class=num>{rd.info.id}</td>{cells}"
                    f"<td class=num>{_fmt(rd.log['validation']['images'], 0)}</td></tr>"
                )
            self.add("</tbody></table>")
        self.add("</section>")

    def weights_section(self) -> None:
        self.add('<section id="weights"><h2>Per-site weights per round</h2>')
        self.figure(
            self.plots.weights(),
            "Stacked bar chart of each site's on-chain weight per valued round",
            "Each bar is one valued or finalized round; each segment is a site's normalized "
            "weight w_i = n_i\u00b7s_i / \u03a3 n_j\u00b7s_j as stored by the contract (sums to "
            "exactly 1e18). Open and cancelled rounds have no weights.",
            "No valued round yet: no weights to plot.",
        )
        self.add("</section>")

    def reputation_section(self) -> None:
        fed = self.fed
        self.add('<section id="reputation"><h2>Site reputation</h2>')
        self.figure(
            self.plots.reputation(),
            "Line plot of each site's reputation after every valued round",
            "The contract's reputation of each site: an exponential moving average of its "
            "scores, as emitted in the UpdateValued event of every valued round.",
            "No valued round yet: no reputation history.",
        )
        if fed.sites:
            self.add(
                "<table><thead><tr><th>Site</th><th>Registered</th>"
                "<th class=num>Reputation now</th><th class=num>Valued rounds</th>"
                "</tr></thead><tbody>"
            )
            for s in fed.sites:
                self.add(
                    f"<tr><td>{self.site_cell(s.address)}</td>"
                    f"<td>{'yes' if s.registered else 'removed'}</td>"
                    f"<td class=num>{s.reputation / SCORE_SCALE:.3f}</td>"
                    f"<td class=num>{s.valued_rounds}</td></tr>"
                )
            self.add("</tbody></table>")
        self.add("</section>")

    def reasons_section(self) -> None:
        self.add(
            '<section id="reasons"><h2>Reasons: why each site got its weight</h2>'
            '<p class="note">Samples, score and weight from the contract; reason label and '
            "explanation from the round's explanation log (codes from the aggregator's reason "
            "table where no log exists yet).</p>"
        )
        if not any(rd.submissions for rd in self.fed.rounds):
            self.add('<p class="note">No update has been submitted yet.</p>')
        for rd in self.fed.rounds:
            info = rd.info
            self.add(
                f'<h3>Round {info.id} <span class="badge phase">{esc(info.phase.label)}</span></h3>'
            )
            if rd.log_problem and info.phase == Phase.FINALIZED:
                self.add(f'<p class="note problem">{esc(rd.log_problem, 1000)}</p>')
            if not rd.submissions:
                self.add('<p class="note">No updates submitted.</p>')
                continue
            valued = info.phase in (Phase.VALUED, Phase.FINALIZED)
            self.add(
                "<table><thead><tr><th>Site</th><th class=num>Samples</th><th class=num>Score</th>"
                "<th>Reason</th><th class=num>Weight</th><th>Explanation</th></tr></thead><tbody>"
            )
            for sub in rd.submissions:
                entry = rd.log_entry(sub.site)
                label = self.reason_label(rd, sub) if valued else ""
                if entry is not None:
                    expl = esc(entry.get("explanation", ""), 2000)
                    comps = entry.get("components")
                    if isinstance(comps, dict) and comps:
                        items = sorted(comps.items())[:MAX_COMPONENTS]
                        text = ", ".join(f"{clean_text(k, 40)}={_value(v)}" for k, v in items)
                        expl += f'<div class="comp">{html.escape(text)}</div>'
                elif info.phase == Phase.VALUED:
                    expl = (
                        '<span class="muted">no explanation log until the round is finalized</span>'
                    )
                elif valued:
                    expl = '<span class="problem">explanation log unusable (see above)</span>'
                else:
                    expl = '<span class="muted">not valued yet</span>'
                cls = "ok" if sub.reason == 0 else "bad"
                self.add(
                    f"<tr><td>{self.site_cell(sub.site)}</td>"
                    f"<td class=num>{sub.num_samples}</td>"
                    + (
                        f"<td class=num>{sub.score / SCORE_SCALE:.3f}</td>"
                        f'<td><span class="reason {cls}">{esc(label, 60)}</span></td>'
                        f'<td class=num title="{sub.weight}">{sub.weight / WEIGHT_SCALE:.2%}</td>'
                        if valued
                        else "<td class=num>\u2014</td><td>\u2014</td><td class=num>\u2014</td>"
                    )
                    + f'<td class="expl">{expl}</td></tr>'
                )
            self.add("</tbody></table>")
        if self.reasons:
            self.add(
                "<h3>Reason codes</h3><table><thead><tr><th class=num>Code</th><th>Label</th>"
                "<th>Meaning</th></tr></thead><tbody>"
            )
            for code, (label, desc) in sorted(self.reasons.items()):
                self.add(
                    f"<tr><td class=num>{code}</td><td>{esc(label)}</td><td>{esc(desc)}</td></tr>"
                )
            self.add("</tbody></table>")
        self.add("</section>")

    def verification_section(self) -> None:
        self.add(
            '<section id="verification"><h2>Verification results</h2>'
            '<p class="note">Each check of <code>fedtrail audit verify</code>: blob hashes against '
            "the chain, the explanation log against the chain, weights recomputed with the "
            "shared rule, and the global model re-aggregated bit for bit. Rounds that are not "
            "finalized have nothing to replay.</p>"
        )
        if not self.fed.audits:
            self.add('<p class="note">No verification results.</p></section>')
            return
        self.add(
            "<table><thead><tr><th class=num>Round</th><th>Check</th><th>Result</th>"
            "<th>Detail</th></tr></thead><tbody>"
        )
        for audit in self.fed.audits:
            for c in audit.checks:
                row = "" if c.passed else ' class="failrow"'
                self.add(
                    f"<tr{row}><td class=num>{c.round}</td><td><code>{esc(c.name, 80)}</code>"
                    f"{self.check_site(c.name)}</td>"
                    f"<td>{self.badge(c.passed)}</td>"
                    f'<td class="expl">{esc(c.detail, 2000)}</td></tr>'
                )
        self.add("</tbody></table></section>")

    def heatmaps_section(self) -> None:
        self.add('<section id="heatmaps"><h2>Explanation heatmaps</h2>')
        with_maps = [rd for rd in self.fed.rounds if rd.heatmaps or rd.heatmap_method]
        if not with_maps:
            self.add(
                '<p class="note">No explanation log carries heatmaps (the logs\' optional '
                "<code>explanations</code> block).</p></section>"
            )
            return
        self.add(
            '<p class="note">Heatmap overlays of the global model on the probe images, as named '
            "by each round's log; each image was fetched by CID and its bytes checked against "
            "the sha256 the (hash-verified) log gives.</p>"
        )
        for rd in with_maps:
            method = f" \u2014 {esc(rd.heatmap_method, 80)}" if rd.heatmap_method else ""
            self.add(f"<h3>Round {rd.info.id}{method}</h3>")
            if not rd.heatmaps:
                self.add('<p class="note">The log lists no images.</p>')
            self.add('<div class="heatmaps">')
            for hm in rd.heatmaps:
                if hm.png is not None:
                    uri = "data:image/png;base64," + base64.b64encode(hm.png).decode("ascii")
                    self.add(
                        f'<figure><img src="{uri}" alt="{esc(hm.caption, 200)}">'
                        f"<figcaption>{esc(hm.caption, 300)}<br>"
                        f'<code title="{esc(hm.cid)}">{esc(short_hex(hm.cid, 14, 4))}</code> '
                        "sha256 verified</figcaption></figure>"
                    )
                else:
                    self.add(
                        f'<figure><div class="missing"><b>{esc(hm.caption, 300)}</b><br>'
                        f'<span class="problem">{esc(hm.problem, 500)}</span></div></figure>'
                    )
            self.add("</div>")
            if rd.heatmaps_dropped:
                self.add(
                    f'<p class="note">{rd.heatmaps_dropped} more image(s) not shown '
                    f"(at most {MAX_HEATMAPS_PER_ROUND} per round).</p>"
                )
        self.add("</section>")

    def render(self) -> str:
        self.header()
        self.rounds_table()
        self.metrics_section()
        self.weights_section()
        self.reputation_section()
        self.reasons_section()
        self.verification_section()
        self.heatmaps_section()
        head = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>{esc(self.title, 200)}</title><style>{_CSS}</style></head><body><main>"
        )
        foot = (
            f"<footer>fedtrail {esc(__version__)} \u00b7 ledger {esc(self.fed.address)} on chain "
            f"{self.fed.chain_id} \u00b7 block {self.fed.block}</footer></main></body></html>\n"
        )
        return head + "\n".join(p for p in self.parts if p) + foot


# --------------------------------------------------------------------------- entry point


def render_html(
    fed: Federation, *, title: str = DEFAULT_TITLE, generated_at: str | None = None
) -> str:
    return _Page(fed, title, generated_at).render()


def write_report(
    ledger: Ledger,
    store: ContentStore,
    out_dir: Path,
    *,
    audits: list[RoundAudit] | None = None,
    title: str = DEFAULT_TITLE,
    generated_at: str | None = None,
) -> Path:
    """Writes ``out_dir/index.html`` (one self-contained page) and returns its path.

    ``audits`` are shown as the verification results; when None, ``verify_all`` runs first.
    ``generated_at`` (any text, e.g. an ISO timestamp) is printed in the header; without it the
    page is byte-identical for identical chain state and store content.
    """
    page = render_html(collect(ledger, store, audits), title=title, generated_at=generated_at)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    tmp = path.with_name(f".{REPORT_FILE}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = [
    "DEFAULT_TITLE",
    "Federation",
    "RoundData",
    "clean_text",
    "collect",
    "esc",
    "render_html",
    "write_report",
]
