"""The report page: escaping rules and one function per section.

Every string that is not a constant of this module is untrusted (site names, everything in an
explanation log, check details, CIDs) and goes through ``esc``: cleaned (``text.clean_text``),
cut and HTML-escaped with quotes, so it is safe in text and in attribute values alike. Numbers are
formatted by this module. The page has no script, loads nothing (plots and heatmaps are
``data:`` URIs, the CSS is inline) and its Content-Security-Policy forbids everything else.

Sections are generators of HTML chunks; the page joins the chunks with newlines into a
``string.Template`` document, so the output is deterministic for given records.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from string import Template
from typing import TYPE_CHECKING, Any

from fedtrail import __version__
from fedtrail.auditor.report import plots
from fedtrail.auditor.report.collect import (
    FAITHFULNESS_AREAS,
    MAX_HEATMAPS_PER_ROUND,
    Federation,
    RoundData,
    read_faithfulness,
    reason_codes,
)
from fedtrail.auditor.report.style import CSS
from fedtrail.auditor.report.text import clean_text, number, short_hex
from fedtrail.ledger import Submission
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.names import registry_warning
from fedtrail.protocol.privacy import EPSILON_SCALE
from fedtrail.protocol.roundlog import wording_note
from fedtrail.protocol.weights import SCORE_SCALE, WEIGHT_SCALE

if TYPE_CHECKING:
    from fedtrail.auditor.verify import Check

DEFAULT_TITLE = "fedtrail federation audit report"
MAX_COMPONENTS = 12
MAX_RECALL_COLUMNS = 32
"""Per-class recall columns shown at most (the count comes from an untrusted log)."""

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)

_DOCUMENT = Template(
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta http-equiv="Content-Security-Policy" content="$csp">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<meta name="referrer" content="no-referrer">'
    "<title>$title</title><style>$css</style></head><body><main>"
    "$body"
    "<footer>fedtrail $version \u00b7 ledger $ledger on chain $chain_id \u00b7 block $block"
    "</footer></main></body></html>\n"
)


# --------------------------------------------------------------------------- escaping


def esc(value: object, limit: int = 500) -> str:
    """Cleaned and HTML-escaped (quotes too, so it is safe inside attributes)."""
    return html.escape(clean_text(value, limit), quote=True)


def _code(value: str, head: int, tail: int) -> str:
    """A (long, untrusted) hash or CID shortened in a <code>, the full text as its tooltip."""
    return f'<code title="{esc(value)}">{esc(short_hex(value, head, tail))}</code>'


def _fmt(value: object, digits: int = 3) -> str:
    x = number(value)
    return "\u2014" if x != x else f"{x:.{digits}f}"


def _value(value: object) -> str:
    """A log component's value as plain (unescaped) text."""
    return _fmt(value, 4) if isinstance(value, float) else clean_text(value, 40)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _badge(passed: bool) -> str:
    word = "PASS" if passed else "FAIL"
    return f'<span class="badge {word.lower()}">{word}</span>'


def _check_badge(check: Check) -> str:
    """PASS, FAIL, or N/A for a check that does not apply to its round."""
    if not check.applicable:
        return '<span class="badge na">N/A</span>'
    return _badge(check.passed)


def _figure(png: bytes | None, alt: str, caption: str, empty: str) -> str:
    if png is None:
        return f'<p class="note">{esc(empty)}</p>'
    return (
        f'<figure><img src="{_data_uri(png)}" alt="{esc(alt)}">'
        f"<figcaption>{esc(caption, 1000)}</figcaption></figure>"
    )


# --------------------------------------------------------------------------- page


@dataclass(frozen=True)
class _Page:
    """What every section needs: the records, the site colours and the reason table."""

    fed: Federation
    title: str
    generated_at: str | None
    style: plots.SiteStyle
    reasons: dict[int, tuple[str, str]] = field(default_factory=reason_codes)

    def site_cell(self, address: str, *, with_address: bool = True) -> str:
        name = self.fed.site_name(address)
        colour = self.style.colour.get(address, "#999999")
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

    def check_site(self, check: str) -> str:
        """For ``update.<address prefix>`` checks: the site's name, so a reader knows whose."""
        if not check.startswith("update."):
            return ""
        prefix = check.removeprefix("update.").lower()
        for address in self.style.colour:
            if address.lower().startswith(prefix):
                return f"<br>{self.site_cell(address, with_address=False)}"
        return ""

    def reason_label(self, rd: RoundData, sub: Submission) -> str:
        entry = rd.log_entry(sub.site)
        if entry is not None:
            return clean_text(entry.get("reason_label", ""), 60)
        known = self.reasons.get(sub.reason)
        return known[0] if known else f"code {sub.reason}"


def _header(page: _Page) -> Iterator[str]:
    fed = page.fed
    phases: dict[str, int] = defaultdict(int)
    for rd in fed.rounds:
        phases[rd.info.phase.label] += 1
    phase_text = ", ".join(f"{n} {p}" for p, n in sorted(phases.items())) or "none yet"
    checks = [c for a in fed.audits for c in a.checks if c.applicable]
    skipped = sum(1 for a in fed.audits for c in a.checks if not c.applicable)
    failed = [c for c in checks if c.failed]
    ok = bool(fed.audits) and not failed
    if not fed.audits:
        verdict = "No rounds to verify yet."
    elif ok:
        verdict = f"Verification PASSED: all {len(checks)} checks over {len(fed.audits)} round(s)."
    else:
        names = ", ".join(sorted({f"round {c.round}: {c.name}" for c in failed}))
        verdict = f"Verification FAILED: {len(failed)} of {len(checks)} checks failed ({names})."
    if skipped and fed.audits:
        verdict += f" {skipped} check(s) not applicable (peer rounds: no validation replay)."
    registered = sum(1 for s in fed.sites if s.registered)
    yield "<header>"
    yield f"<h1>{esc(page.title, 200)}</h1>"
    yield f'<p class="verdict {"pass" if ok else "fail"}">{esc(verdict, 2000)}</p>'
    warning = registry_warning({s.address: s.name for s in fed.sites})
    if warning is not None:  # a62: no finalized round holds the look-alike yet
        yield f'<p class="verdict fail">Warning: {esc(warning, 2000)}</p>'
    yield '<dl class="facts">'
    yield f"<dt>Ledger</dt><dd><code>{esc(fed.address)}</code></dd>"
    yield f"<dt>Chain id</dt><dd>{fed.chain_id}</dd>"
    yield f"<dt>Chain state</dt><dd>as of block {fed.block}</dd>"
    yield f"<dt>Coordinator</dt><dd><code>{esc(fed.coordinator)}</code></dd>"
    yield f"<dt>Aggregator</dt><dd><code>{esc(fed.aggregator)}</code></dd>"
    yield f"<dt>Rounds</dt><dd>{len(fed.rounds)} ({esc(phase_text)})</dd>"
    yield f"<dt>Sites</dt><dd>{registered} registered, {len(fed.sites)} ever</dd>"
    if page.generated_at:
        yield f"<dt>Generated</dt><dd>{esc(page.generated_at)}</dd>"
    yield "</dl>"
    yield (
        '<p class="note">Generated by <code>fedtrail audit report</code> '
        f"(fedtrail {esc(__version__)}) from public data only. Scores, weights, sample counts "
        "and reputations are read from the contract; every explanation log and heatmap shown "
        "was fetched by CID and checked against the sha256 recorded on chain. Reason labels, "
        "explanations and metrics come from those logs. Site names and log texts are "
        "supplied by the participants and shown escaped. Verification recomputes every "
        "weight and every global model bit for bit (<code>fedtrail audit verify</code>).</p>"
    )
    yield (
        "<nav>"
        '<a href="#rounds">Rounds</a><a href="#metrics">Global metrics</a>'
        '<a href="#weights">Weights</a><a href="#reputation">Reputation</a>'
        '<a href="#reasons">Reasons</a><a href="#verification">Verification</a>'
        + ('<a href="#peers">Peer scores</a>' if fed.peer_rounds() else "")
        + ('<a href="#privacy">Privacy</a>' if fed.privacy is not None else "")
        + '<a href="#heatmaps">Heatmaps</a>'
        "</nav>"
    )
    yield "</header>"


def _rounds(page: _Page) -> Iterator[str]:
    fed = page.fed
    by_round = {a.round: a for a in fed.audits}
    yield '<section id="rounds"><h2>Rounds</h2>'
    if not fed.rounds:
        yield '<p class="note">No round has been opened yet.</p></section>'
        return
    yield (
        "<table><thead><tr><th class=num>Round</th><th>Phase</th><th class=num>Updates</th>"
        "<th>Start model sha256</th><th>Global model sha256</th><th>Explanation log</th>"
        "<th>Verified</th></tr></thead><tbody>"
    )
    for rd in fed.rounds:
        info = rd.info
        audit = by_round.get(info.id)
        verified = _badge(audit.passed) if audit else '<span class="muted">not run</span>'
        glob = (
            _code(info.global_sha256, 16, 0)
            if info.phase == Phase.FINALIZED
            else '<span class="muted">\u2014</span>'
        )
        if rd.log is not None:
            log = _code(info.log_cid, 14, 4)
        else:
            log = f'<span class="muted">{esc(rd.log_problem)}</span>'
        yield (
            f"<tr><td class=num>{info.id}</td>"
            f'<td><span class="badge phase">{esc(info.phase.label)}</span></td>'
            f"<td class=num>{info.submission_count}</td>"
            f"<td>{_code(info.start_sha256, 16, 0)}</td>"
            f"<td>{glob}</td><td>{log}</td><td>{verified}</td></tr>"
        )
    yield "</tbody></table>"
    summaries = [(rd.info.id, rd.log["summary"]) for rd in fed.rounds if rd.log]
    if summaries:
        yield "<h3>Aggregator's summaries (from the logs)</h3><ul>"
        for r, text in summaries:
            yield f"<li><b>Round {r}.</b> {esc(text, 1000)}</li>"
        yield "</ul>"
    yield "</section>"


def _metrics(page: _Page) -> Iterator[str]:
    yield '<section id="metrics"><h2>Global model metrics per round</h2>'
    yield _figure(
        plots.metrics_png(page.fed),
        "Line plot of AUC, F1 and accuracy of the global model per finalized round",
        "AUC, F1 (at 0.5 and at the round's calibrated threshold) and accuracy of each "
        "round's new global model on the aggregator's validation set (metrics.after of the "
        "round's explanation log). Only finalized rounds have a log.",
        "No finalized round yet: no metrics to plot.",
    )
    rows = [rd for rd in page.fed.rounds if rd.log is not None]
    if rows:
        yield f'<p class="note">{_metrics_provenance(page, rows)}</p>'
    classes = min(max((_classes(rd.metrics_after()) for rd in rows), default=0), MAX_RECALL_COLUMNS)
    if rows and classes > 2:
        yield from _metrics_multiclass(rows, classes)
    elif rows:
        yield (
            "<table><thead><tr><th class=num>Round</th>"
            "<th class=num>AUC before \u2192 after</th>"
            "<th class=num>F1 before \u2192 after</th>"
            "<th class=num>Threshold before \u2192 after</th>"
            "<th class=num>F1 at threshold before \u2192 after</th>"
            "<th class=num>Accuracy before \u2192 after</th>"
            "<th class=num>Loss before \u2192 after</th><th class=num>Validation images</th>"
            "</tr></thead><tbody>"
        )
        for rd in rows:
            assert rd.log is not None
            before, after = rd.log["metrics"]["before"], rd.log["metrics"]["after"]
            cells = "".join(
                f"<td class=num>{_fmt(before.get(k))} \u2192 <b>{_fmt(after.get(k))}</b></td>"
                for k in ("auc", "f1", "threshold", "f1_calibrated", "accuracy", "loss")
            )
            yield (
                f"<tr><td class=num>{rd.info.id}</td>{cells}"
                f"<td class=num>{_fmt(rd.log['validation']['images'], 0)}</td></tr>"
            )
        yield "</tbody></table>"
    yield "</section>"


def _metrics_provenance(page: _Page, rows: list[RoundData]) -> str:
    """Whether this audit recomputed the figures below or shows them as the aggregator's word:
    the report takes ``--validation`` since session 56, so the page says which it was."""
    checked = {
        c.round
        for a in page.fed.audits
        for c in a.checks
        if c.name == "metrics.recomputed" and c.applicable and not c.failed
    }
    done = [rd.info.id for rd in rows if rd.info.id in checked]
    if len(done) == len(rows):
        return (
            "This audit recomputed these figures from the start and global models on the "
            "validation set (<code>metrics.recomputed</code>, <code>--validation</code>)."
        )
    if not done:
        return (
            "These figures are the aggregator's claim: this audit did not recompute them "
            "(no <code>--validation</code>; the split's sha256 is in the round terms)."
        )
    return (
        f"This audit recomputed the figures of {len(done)} of {len(rows)} round(s) "
        "(<code>metrics.recomputed</code>); the others are the aggregator's claim."
    )


def _classes(metrics: dict[str, Any] | None) -> int:
    """The number of classes a log's (untrusted) metrics record per-class figures for."""
    recall = (metrics or {}).get("recall")
    return len(recall) if isinstance(recall, list) else 0


def _metrics_multiclass(rows: list[RoundData], classes: int) -> Iterator[str]:
    """The metrics table of a task with more than two classes: macro figures, and the recall of
    every class at the calibrated decision (argmax of logits + bias; no threshold)."""
    yield (
        "<p>More than two classes: AUC is the macro one-vs-rest AUC, F1 the macro F1; the "
        "calibrated decision is the class maximising logits + the fitted per-class bias.</p>"
        "<table><thead><tr><th class=num>Round</th>"
        "<th class=num>Macro AUC before \u2192 after</th>"
        "<th class=num>Macro F1 before \u2192 after</th>"
        "<th class=num>Macro F1 calibrated before \u2192 after</th>"
        "<th class=num>Balanced accuracy calibrated before \u2192 after</th>"
        "<th class=num>Loss before \u2192 after</th>"
        + "".join(f"<th class=num>Recall class {c} (after)</th>" for c in range(classes))
        + "<th class=num>Validation images</th></tr></thead><tbody>"
    )
    for rd in rows:
        assert rd.log is not None
        before, after = rd.log["metrics"]["before"], rd.log["metrics"]["after"]
        cells = "".join(
            f"<td class=num>{_fmt(before.get(k))} \u2192 <b>{_fmt(after.get(k))}</b></td>"
            for k in ("auc", "f1", "f1_calibrated", "balanced_accuracy_calibrated", "loss")
        )
        recall = after.get("recall_calibrated")
        recall = recall if isinstance(recall, list) else []
        cells += "".join(
            f"<td class=num>{_fmt(recall[c] if c < len(recall) else None)}</td>"
            for c in range(classes)
        )
        yield (
            f"<tr><td class=num>{rd.info.id}</td>{cells}"
            f"<td class=num>{_fmt(rd.log['validation']['images'], 0)}</td></tr>"
        )
    yield "</tbody></table>"


def _weights(page: _Page) -> Iterator[str]:
    yield '<section id="weights"><h2>Per-site weights per round</h2>'
    yield _figure(
        plots.weights_png(page.fed, page.style),
        "Stacked bar chart of each site's on-chain weight per valued round",
        "Each bar is one valued or finalized round; each segment is a site's normalized "
        "weight w_i = n_i\u00b7s_i / \u03a3 n_j\u00b7s_j as stored by the contract (sums to "
        "exactly 1e18). Open and cancelled rounds have no weights.",
        "No valued round yet: no weights to plot.",
    )
    yield "</section>"


def _reputation(page: _Page) -> Iterator[str]:
    fed = page.fed
    yield '<section id="reputation"><h2>Site reputation</h2>'
    yield _figure(
        plots.reputation_png(fed, page.style),
        "Line plot of each site's reputation after every valued round",
        "The contract's reputation of each site: an exponential moving average of its "
        "scores, as emitted in the UpdateValued event of every valued round (after a "
        "dropped update, the UpdateWithheld event's, which takes the round's credit back).",
        "No valued round yet: no reputation history.",
    )
    if fed.sites:
        rated = bool(fed.validators)
        yield (
            "<table><thead><tr><th>Site</th><th>Registered</th>"
            "<th class=num>Reputation now</th><th class=num>Valued rounds</th>"
            + (
                "<th class=num>Validator reputation</th><th class=num>Rated rounds</th>"
                if rated
                else ""
            )
            + "</tr></thead><tbody>"
        )
        for s in fed.sites:
            validator = ""
            if rated:
                rep, rounds = fed.validators.get(s.address, (0, 0))
                shown = f"{rep / SCORE_SCALE:.3f}" if rounds else "\u2014"
                validator = f"<td class=num>{shown}</td><td class=num>{rounds}</td>"
            yield (
                f"<tr><td>{page.site_cell(s.address)}</td>"
                f"<td>{'yes' if s.registered else 'removed'}</td>"
                f"<td class=num>{s.reputation / SCORE_SCALE:.3f}</td>"
                f"<td class=num>{s.valued_rounds}</td>{validator}</tr>"
            )
        yield "</tbody></table>"
    yield "</section>"


def _explanation(rd: RoundData, sub: Submission) -> str:
    """The log's sentence and components for one update, or why there is none."""
    entry = rd.log_entry(sub.site)
    phase = rd.info.phase
    if entry is not None:
        expl = esc(entry.get("explanation", ""), 2000)
        comps = entry.get("components")
        if isinstance(comps, dict) and comps:
            items = sorted(comps.items())[:MAX_COMPONENTS]
            text = ", ".join(f"{clean_text(k, 40)}={_value(v)}" for k, v in items)
            expl += f'<div class="comp">{html.escape(text)}</div>'
        return expl
    if phase == Phase.VALUED:
        return '<span class="muted">no explanation log until the round is finalized</span>'
    if phase == Phase.FINALIZED:
        return '<span class="problem">explanation log unusable (see above)</span>'
    return '<span class="muted">not valued yet</span>'


def _wording_note(rd: RoundData) -> str:
    """What an aggregator round's explanation texts are held to (session 57): the wording its
    terms name, which ``audit verify --validation`` re-derives each usable update's text in,
    or none (an older writer's log: the text beyond its reason label is the aggregator's word).
    Empty for a peer round (its text is the chain's sentence) and a round without a log."""
    valuation = ((rd.log or {}).get("settings") or {}).get("valuation")
    if not isinstance(valuation, dict) or valuation.get("mode") == "peers":
        return ""
    return wording_note(valuation.get("explanation_wording"))


def _reasons(page: _Page) -> Iterator[str]:
    yield (
        '<section id="reasons"><h2>Reasons: why each site got its weight</h2>'
        '<p class="note">Samples, score and weight from the contract; reason label and '
        "explanation from the round's explanation log (codes from the aggregator's reason "
        "table where no log exists yet).</p>"
    )
    if not any(rd.submissions for rd in page.fed.rounds):
        yield '<p class="note">No update has been submitted yet.</p>'
    for rd in page.fed.rounds:
        info = rd.info
        yield f'<h3>Round {info.id} <span class="badge phase">{esc(info.phase.label)}</span></h3>'
        if rd.log_problem and info.phase == Phase.FINALIZED:
            yield f'<p class="note problem">{esc(rd.log_problem, 1000)}</p>'
        if not rd.submissions:
            yield '<p class="note">No updates submitted.</p>'
            continue
        wording = _wording_note(rd)
        if wording:
            yield f'<p class="note">{esc(wording, 400)}</p>'
        valued = info.phase in (Phase.VALUED, Phase.FINALIZED)
        yield (
            "<table><thead><tr><th>Site</th><th class=num>Samples</th><th class=num>Score</th>"
            "<th>Reason</th><th class=num>Weight</th><th>Explanation</th></tr></thead><tbody>"
        )
        for sub in rd.submissions:
            if valued:
                cls = "ok" if sub.reason == 0 else "bad"
                label = page.reason_label(rd, sub)
                valuation = (
                    f"<td class=num>{sub.score / SCORE_SCALE:.3f}</td>"
                    f'<td><span class="reason {cls}">{esc(label, 60)}</span></td>'
                    f'<td class=num title="{sub.weight}">{sub.weight / WEIGHT_SCALE:.2%}</td>'
                )
            else:
                valuation = "<td class=num>\u2014</td><td>\u2014</td><td class=num>\u2014</td>"
            yield (
                f"<tr><td>{page.site_cell(sub.site)}</td>"
                f"<td class=num>{sub.num_samples}</td>{valuation}"
                f'<td class="expl">{_explanation(rd, sub)}</td></tr>'
            )
        yield "</tbody></table>"
    if page.reasons:
        yield (
            "<h3>Reason codes</h3><table><thead><tr><th class=num>Code</th><th>Label</th>"
            "<th>Meaning</th></tr></thead><tbody>"
        )
        for code, (label, desc) in sorted(page.reasons.items()):
            yield f"<tr><td class=num>{code}</td><td>{esc(label)}</td><td>{esc(desc)}</td></tr>"
        yield "</tbody></table>"
    yield "</section>"


def _scaled(value: int | None) -> str:
    """An on-chain score-scaled integer as a fraction, or a dash when there is none."""
    return "\u2014" if value is None else f"{value / SCORE_SCALE:.3f}"


def _peers(page: _Page) -> Iterator[str]:
    """Each valued peer round: every validator's revealed vector (rows) over the revealed
    updates (columns), the median row the contract recorded, each validator's distance from it
    and its validator reputation after the round; a validator's entry for its own update is
    shown struck through: it never counts."""
    tables = page.fed.peer_rounds()
    if not tables:
        return
    yield (
        '<section id="peers"><h2>Peer scores: each validator\'s vector and the median</h2>'
        '<p class="note">In a peer round every site registered at the round\'s opening may '
        "score the other sites' updates on its own validation split, commit to its score "
        "vector and reveal it (<code>ScoresRevealed</code> events, each checked against the "
        "hash the contract stores). Each update's score is the high median of the other "
        "validators' entries (the higher of the two middle values for an even count, so a "
        "score is lowered only when more than half of them are lower; 0 when no one else "
        "scored it); a validator's own entry (struck through) never counts, nor do the "
        "entries of a validator whose reputation earlier rounds left below 0.5 (unless too "
        "few validators pass that gate to meet the quorum or to be a majority of the "
        "revealed validators). A validator that commits a vector "
        "and never reveals it is rated at the largest distance. "
        "Distance: the mean absolute difference between the validator's entries and the "
        "medians over the other sites; the validator reputation is the contract's moving "
        "average of 1 \u2212 distance (<code>ValidatorRated</code>). <code>fedtrail audit "
        "verify</code> recomputes all of it (<code>peers.*</code> checks).</p>"
    )
    for t in tables:
        yield (
            f"<h3>Round {t.round}</h3><p class=note>{len(t.validators)} vector(s) revealed, "
            f"quorum {t.quorum}.</p>"
        )
        head = "".join(f"<th class=num>{page.site_cell(site)}</th>" for site in t.sites)
        yield (
            f"<table class=peers><thead><tr><th>Validator</th>{head}"
            "<th class=num>Distance from the median</th>"
            "<th class=num>Validator reputation</th></tr></thead><tbody>"
        )
        for i, validator in enumerate(t.validators):
            cells = []
            for j, score in enumerate(t.vectors[i]):
                if t.own[i] == j:
                    cells.append(
                        '<td class="num self" title="its own update: not counted">'
                        f"<s>{score / SCORE_SCALE:.3f}</s> "
                        '<span class="muted">self, not counted</span></td>'
                    )
                else:
                    cells.append(f"<td class=num>{score / SCORE_SCALE:.3f}</td>")
            gated = (
                ""
                if not t.counted or t.counted[i]
                else '<br><span class="muted">below the reputation gate: not counted</span>'
            )
            yield (
                f"<tr><td>{page.site_cell(validator)}{gated}</td>{''.join(cells)}"
                f"<td class=num>{_scaled(t.distances[i])}</td>"
                f"<td class=num>{_scaled(t.reputations[i])}</td></tr>"
            )
        medians = "".join(
            f"<td class=num><b>{m / SCORE_SCALE:.3f}</b><br>"
            f'<span class="reason {"ok" if r == 0 else "bad"}">'
            f"{esc(page.reasons.get(r, (f'code {r}', ''))[0], 40)}</span>"
            f'<br><span class="muted">{n} peer(s)</span></td>'
            for m, r, n in zip(t.medians, t.reasons, t.peer_counts, strict=True)
        )
        yield (
            f'<tr class="median"><td><b>Median (on chain)</b></td>{medians}'
            "<td></td><td></td></tr></tbody></table>"
        )
        if t.withheld:
            yield (
                "<p class=note>Committed a vector and never revealed it (rated at distance "
                "1.000): " + ", ".join(page.site_cell(w) for w in t.withheld) + ".</p>"
            )
    yield "</section>"


def _verification(page: _Page) -> Iterator[str]:
    yield (
        '<section id="verification"><h2>Verification results</h2>'
        '<p class="note">Each check of <code>fedtrail audit verify</code>: blob hashes against '
        "the chain, the explanation log against the chain, weights recomputed with the "
        "shared rule, and the global model re-aggregated bit for bit. Rounds that are not "
        "finalized have nothing to replay.</p>"
    )
    if not page.fed.audits:
        yield '<p class="note">No verification results.</p></section>'
        return
    yield (
        "<table><thead><tr><th class=num>Round</th><th>Check</th><th>Result</th>"
        "<th>Detail</th></tr></thead><tbody>"
    )
    for audit in page.fed.audits:
        for c in audit.checks:
            row = ' class="failrow"' if c.failed else ""
            yield (
                f"<tr{row}><td class=num>{c.round}</td><td><code>{esc(c.name, 80)}</code>"
                f"{page.check_site(c.name)}</td>"
                f"<td>{_check_badge(c)}</td>"
                f'<td class="expl">{esc(c.detail, 2000)}</td></tr>'
            )
    yield "</tbody></table></section>"


def _heatmaps(page: _Page) -> Iterator[str]:
    yield '<section id="heatmaps"><h2>Explanation heatmaps</h2>'
    with_maps = [rd for rd in page.fed.rounds if rd.heatmaps or rd.heatmap_method]
    if not with_maps:
        yield (
            '<p class="note">No explanation log carries heatmaps (the logs\' optional '
            "<code>explanations</code> block).</p></section>"
        )
        return
    yield (
        '<p class="note">Heatmap overlays of the global model on the probe images, as named '
        "by each round's log; each image was fetched by CID and its bytes checked against "
        "the sha256 the (hash-verified) log gives.</p>"
    )
    for rd in with_maps:
        method = f" \u2014 {esc(rd.heatmap_method, 80)}" if rd.heatmap_method else ""
        yield f"<h3>Round {rd.info.id}{method}</h3>"
        yield from _faithfulness(rd.log)
        if not rd.heatmaps:
            yield '<p class="note">The log lists no images.</p>'
        yield '<div class="heatmaps">'
        for hm in rd.heatmaps:
            if hm.png is not None:
                yield (
                    f'<figure><img src="{_data_uri(hm.png)}" alt="{esc(hm.caption, 200)}">'
                    f"<figcaption>{esc(hm.caption, 300)}<br>"
                    f'<code title="{esc(hm.cid)}">{esc(short_hex(hm.cid, 14, 4))}</code> '
                    "sha256 verified</figcaption></figure>"
                )
            else:
                yield (
                    f'<figure><div class="missing"><b>{esc(hm.caption, 300)}</b><br>'
                    f'<span class="problem">{esc(hm.problem, 500)}</span></div></figure>'
                )
        yield "</div>"
        if rd.heatmaps_dropped:
            yield (
                f'<p class="note">{rd.heatmaps_dropped} more image(s) not shown '
                f"(at most {MAX_HEATMAPS_PER_ROUND} per round).</p>"
            )
    yield "</section>"


def _faithfulness(log: dict[str, Any] | None) -> Iterator[str]:
    """One line: how faithful the round's heatmaps are (deletion/insertion areas vs random)."""
    scores = read_faithfulness(log) if log is not None else {}
    if len(scores) < len(FAITHFULNESS_AREAS):
        return
    yield (
        '<p class="note faithfulness">Faithfulness on the probe images: deletion AUC '
        f"<b>{scores['deletion_auc']:.3f}</b> (random ordering "
        f"{scores['random_deletion_auc']:.3f}; lower is better), insertion AUC "
        f"<b>{scores['insertion_auc']:.3f}</b> (random {scores['random_insertion_auc']:.3f}; "
        "higher is better). Stated by the aggregator: the probe set is private, so the audit "
        "does not recompute it.</p>"
    )


def _epsilon(micro: int | None) -> str:
    """An on-chain micro-epsilon as epsilon (6 decimals: exact), the integer as its tooltip."""
    if micro is None:
        return '<span class="muted">\u2014</span>'
    return f'<span title="{micro} micro-epsilon">{micro / EPSILON_SCALE:.6f}</span>'


def _privacy(page: _Page) -> Iterator[str]:
    """Where the federation used DP: each site's budget and spend, and each update's declared
    spend, its DP parameters (from the update blob the chain pins) and the epsilon the audit
    recomputes from them (``fedtrail audit privacy``)."""
    result = page.fed.privacy
    if result is None:
        return
    yield (
        '<section id="privacy"><h2>Differential privacy</h2>'
        '<p class="note">Budgets, spends and the cumulative spend after each update are read '
        "from the contract (<code>privacyAccount</code> and the <code>PrivacySpent</code> "
        "events, in epsilon; the chain sums the declared spends). The DP parameters come from "
        "each update blob, fetched by CID and checked against the sha256 the chain records, "
        "with the accounting rule the site declared by: <em>composed</em>, the increment of "
        "the RDP composition of the site's updates so far (the chain's total is then that "
        "epsilon, rounded up to a micro-epsilon), or <em>summed</em> (blobs without the "
        "field), the update's own epsilon. The audit recomputes each spend under its rule with "
        "the sites' RDP accountant and compares it with the declared one "
        "(<code>fedtrail audit privacy</code>). The RDP composition of a site's updates is the "
        "tight epsilon of all its rounds together. "
        "What the audit cannot check: that the noise was really added.</p>"
    )
    yield (
        f"<p>{_badge(result.passed)} "
        + (
            f"every declared spend agrees with its update's DP parameters "
            f"({len(result.updates)} update(s), {len(result.sites)} site(s))."
            if result.passed
            else esc("; ".join(result.problems), 3000)
        )
        + "</p>"
    )
    if result.sites:
        yield (
            "<table><thead><tr><th>Site</th><th class=num>Budget \u03b5</th>"
            "<th class=num>Spent \u03b5 (on chain)</th><th class=num>Sum of spends</th>"
            "<th class=num>RDP-composed \u03b5</th><th>Check</th></tr></thead><tbody>"
        )
        for s in result.sites:
            budget = (
                _epsilon(s.budget_micro) if s.budget_micro else '<span class="muted">none</span>'
            )
            composed = "\u2014" if s.composed_epsilon is None else f"{s.composed_epsilon:.3f}"
            check = (
                _badge(True)
                if not s.problems
                else f'{_badge(False)} <span class="problem">'
                f"{esc('; '.join(s.problems), 1000)}</span>"
            )
            row = "" if not s.problems else ' class="failrow"'
            yield (
                f"<tr{row}><td>{page.site_cell(s.site)}</td><td class=num>{budget}</td>"
                f"<td class=num>{_epsilon(s.spent_micro)}</td>"
                f"<td class=num>{_epsilon(s.events_micro)}</td>"
                f"<td class=num>{composed}</td><td>{check}</td></tr>"
            )
        yield "</tbody></table>"
    if not result.updates:
        yield '<p class="note">No update has been revealed yet.</p></section>'
        return
    yield (
        "<h3>Spend per round</h3><table><thead><tr><th class=num>Round</th><th>Site</th>"
        "<th class=num>Declared \u03b5</th><th class=num>Cumulative \u03b5</th>"
        "<th class=num>Noise multiplier</th><th class=num>Clip</th>"
        "<th class=num>Sample rate</th><th class=num>Steps</th><th class=num>\u03b4</th>"
        "<th class=num>Recomputed \u03b5</th><th>Check</th></tr></thead><tbody>"
    )
    for u in result.updates:
        p = u.params
        dp = (
            f"<td class=num>{p.noise_multiplier:g}</td><td class=num>{p.max_grad_norm:g}</td>"
            f"<td class=num>{p.sample_rate:g}</td><td class=num>{p.steps}</td>"
            f"<td class=num>{p.delta:g}</td>"
            if p is not None
            else '<td class=num colspan=5><span class="muted">no DP parameters</span></td>'
        )
        detail = f" {esc(u.detail, 1000)}" if u.detail else ""
        status = f'<span class="reason {"ok" if u.ok else "bad"}">{esc(u.status)}</span>'
        row = "" if u.ok else ' class="failrow"'
        yield (
            f"<tr{row}><td class=num>{u.round}</td><td>{page.site_cell(u.site)}</td>"
            f"<td class=num>{_epsilon(u.declared_micro)}</td>"
            f"<td class=num>{_epsilon(u.total_micro)}</td>{dp}"
            f"<td class=num>{_epsilon(u.recomputed_micro)}</td>"
            f'<td class="expl">{status}{detail}</td></tr>'
        )
    yield "</tbody></table></section>"


_SECTIONS: tuple[Callable[[_Page], Iterator[str]], ...] = (
    _header,
    _rounds,
    _metrics,
    _weights,
    _reputation,
    _reasons,
    _peers,
    _verification,
    _privacy,
    _heatmaps,
)


def render_html(
    fed: Federation, *, title: str = DEFAULT_TITLE, generated_at: str | None = None
) -> str:
    """The whole page for ``fed``; byte-identical for identical records and arguments."""
    page = _Page(fed, title, generated_at, plots.SiteStyle.of(fed))
    body = "\n".join(chunk for section in _SECTIONS for chunk in section(page) if chunk)
    return _DOCUMENT.substitute(
        csp=CSP,
        title=esc(title, 200),
        css=CSS,
        body=body,
        version=esc(__version__),
        ledger=esc(fed.address),
        chain_id=fed.chain_id,
        block=fed.block,
    )
