"""`fedtrail audit ...`: read-only queries and bit-for-bit verification; no key needed."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fedtrail.cli.common import (
    ROUND_ID,
    F,
    FiniteFloatRange,
    ledger_options,
    open_checked_store,
    open_ledger,
    store_option,
)
from fedtrail.cli.output import emit, format_option, printable, reason_label
from fedtrail.errors import ConfigError, VerificationFailed
from fedtrail.protocol.cids import bounded
from fedtrail.protocol.names import shown as shown_name
from fedtrail.protocol.privacy import EPSILON_SCALE
from fedtrail.protocol.weights import SCORE_SCALE, WEIGHT_SCALE

if TYPE_CHECKING:  # the ledger (web3) and the store load in seconds: imported where used
    from fedtrail.auditor.privacy import PrivacyAudit
    from fedtrail.auditor.verify import RoundAudit
    from fedtrail.ledger import Ledger, Submission
    from fedtrail.protocol.roundlog import RoundLog
    from fedtrail.storage.store import ContentStore


@click.group()
def audit() -> None:
    """Query the ledger and verify every round from public data."""


def _open(rpc_url: str | None, deployment_path: Path, contract: str | None) -> Ledger:
    return open_ledger(rpc_url, deployment_path, contract)


def round_rows(ledger: Ledger) -> list[dict[str, Any]]:
    rows = []
    for info in ledger.rounds():
        rows.append(
            {
                "round": info.id,
                "phase": info.phase.label,
                "committed": len(ledger.commit_orders(info.id)),
                "revealed": info.submission_count,
                "start_sha256": info.start_sha256[:16],
                "global_sha256": info.global_sha256[:16] if info.global_cid else "",
                "log_cid": bounded(info.log_cid),
            }
        )
    return rows


@audit.command()
@ledger_options
@format_option("table", "json", "csv")
def rounds(rpc_url: str | None, deployment_path: Path, contract: str | None, fmt: str) -> None:
    """Every round with its phase and model hashes."""
    emit(round_rows(_open(rpc_url, deployment_path, contract)), fmt)


def _display_names(ledger: Ledger) -> Callable[[str, str], str]:
    """``(address, name) -> name as a table shows it``: escaped where characters would print
    as nothing or as something else (``fedtrail.protocol.names.shown``, not U+FFFD: two
    names stay apart on screen as in bytes), with the names the site was registered under
    before (``hospital-z (formerly hospital-a)``, as the report; attack a64)."""
    from fedtrail.protocol.names import with_former

    sites = {s.address: s.name for s in ledger.get_sites()}
    former = ledger.registrations().former_names(sites)
    return lambda address, name: with_former(name, former.get(address, []))


def round_doc(ledger: Ledger, round_id: int) -> dict[str, Any]:
    """A round as the chain holds it; a valued peer round adds ``peers``: each validator's
    revealed vector, its distance from the medians and its validator reputation, and the
    medians (:class:`fedtrail.auditor.peers.PeerTable`). Every CID is the chain's text
    :func:`~fedtrail.protocol.cids.bounded` (at most 200 characters, then its length): the
    contract bounds no ``string``, and a site's 200,000-byte CID (a126) filled the output."""
    from fedtrail.auditor.peers import peer_table, read_peer_record

    info = ledger.get_round(round_id)
    names = {s.address: s.name for s in ledger.get_sites()}
    every = ledger.get_submissions(round_id, include_unrevealed=True)
    subs = [s for s in every if s.revealed]
    declines = ledger.declines(round_id) if len(subs) < len(every) else {}
    record = read_peer_record(ledger, round_id) if info.phase.has_scores else None
    table = None if record is None else peer_table(record, subs)
    peers = {} if table is None else {"peers": table.to_json()}
    return {
        "round": info.id,
        "phase": info.phase.label,
        "commit_deadline": info.commit_deadline,
        "reveal_deadline": info.reveal_deadline,
        "opened_at": info.opened_at,
        "active_at_open": info.active_at_open,
        "terms": {"cid": bounded(info.terms_cid), "sha256": info.terms_sha256},
        "start_model": {"cid": bounded(info.start_cid), "sha256": info.start_sha256},
        "global_model": {"cid": bounded(info.global_cid), "sha256": info.global_sha256},
        "log": {"cid": bounded(info.log_cid), "sha256": info.log_sha256},
        "updates": [
            {
                "site": s.site,
                "name": names.get(s.site, ""),
                "cid": bounded(s.cid),
                "sha256": s.sha256,
                "num_samples": s.num_samples,
                "score": s.score,
                "reason": s.reason,
                "reason_label": reason_label(s.reason) if info.phase.has_scores else "",
                "weight": str(s.weight),
            }
            for s in subs
        ],
        # a commitment never opened: the site saw the round and withheld its update, or
        # declared that it refuses the round's terms (``declined``: its reason; a42)
        "unrevealed": [
            {
                "site": s.site,
                "name": names.get(s.site, ""),
                "commit_order": s.commit_order,
                "declined": declines[s.site].label if s.site in declines else "",
            }
            for s in every
            if not s.revealed
        ],
        **peers,
    }


@audit.command("round")
@click.argument("round_id", type=ROUND_ID)
@ledger_options
@format_option("table", "json", "csv")
def round_cmd(
    round_id: int, rpc_url: str | None, deployment_path: Path, contract: str | None, fmt: str
) -> None:
    """One round: models, every update with score, reason and weight, and the sites that
    committed but never revealed."""
    ledger = _open(rpc_url, deployment_path, contract)
    doc = round_doc(ledger, round_id)
    if fmt == "json":
        emit(doc, "json")
        return
    named = _display_names(ledger)
    rows = [
        {
            **u,
            "name": named(u["site"], u["name"]),
            "score": u["score"] / SCORE_SCALE,
            "weight": int(u["weight"]) / WEIGHT_SCALE,
            "sha256": u["sha256"][:16],
        }
        for u in doc["updates"]
    ]
    if fmt == "csv":
        emit(rows, "csv")
        return
    # CIDs are any text the aggregator put in its events: printable, or one rewrites the screen
    cid = {k: printable(doc[k]["cid"]) for k in ("start_model", "global_model", "log")}
    click.echo(f"round {doc['round']}: {doc['phase']}")
    click.echo(f"  start model  {cid['start_model']}  sha256 {doc['start_model']['sha256']}")
    if doc["global_model"]["cid"]:
        click.echo(f"  global model {cid['global_model']}  sha256 {doc['global_model']['sha256']}")
        click.echo(f"  log          {cid['log']}  sha256 {doc['log']['sha256']}")
    emit(
        rows,
        "table",
        columns=["site", "name", "num_samples", "score", "reason_label", "weight", "sha256"],
    )
    if doc["unrevealed"]:
        click.echo(
            "committed, never revealed (not valued, no weight; declined: the terms refused):"
        )
        unrevealed = [{**u, "name": named(u["site"], u["name"])} for u in doc["unrevealed"]]
        emit(unrevealed, "table", columns=["site", "name", "commit_order", "declined"])
    if "peers" in doc:
        _print_peers(doc["peers"])


def _print_peers(peers: dict[str, Any]) -> None:
    """A peer round's vectors: one row per validator, one column per revealed update (its own
    entry in brackets: not counted), then the medians the chain recorded."""
    sites = peers["sites"]
    click.echo("")
    click.echo(
        f"peer scores: {len(peers['validators'])} vector(s) revealed, quorum {peers['quorum']}; "
        "[own entry] never counts; median = the chain's score (an update dropped as WITHHELD "
        "after it scores 0)"
    )
    rows = []
    for v in peers["validators"]:
        row: dict[str, Any] = {"validator": v["validator"]}
        for j, (site, score) in enumerate(zip(sites, v["scores"], strict=True)):
            shown = f"{score / SCORE_SCALE:.3f}"
            row[site[:10]] = f"[{shown}]" if v["self_index"] == j else shown
        row["distance"] = None if v["distance"] is None else v["distance"] / SCORE_SCALE
        rep = v["validator_reputation"]
        row["validator_reputation"] = None if rep is None else rep / SCORE_SCALE
        rows.append(row)
    median: dict[str, Any] = {"validator": "median"}
    for site, m in zip(sites, peers["median"], strict=True):
        median[site[:10]] = f"{m / SCORE_SCALE:.3f}"
    rows.append(median)
    columns = ["validator", *(s[:10] for s in sites), "distance", "validator_reputation"]
    emit(rows, "table", columns=columns)


@audit.command()
@click.argument("address")
@ledger_options
@format_option("table", "json", "csv")
def site(
    address: str, rpc_url: str | None, deployment_path: Path, contract: str | None, fmt: str
) -> None:
    """One site's history: submissions, scores, reasons, weights, reputation over time, and
    its differential privacy as the chain keeps it: its epsilon budget and cumulative spend,
    and per round the epsilon its update declared and the cumulative spend after it
    (``epsilon``, ``epsilon_total``; empty for a plain reveal). ``fedtrail audit privacy``
    checks those declarations against the updates' DP parameters. A site that validated peer
    rounds also shows its validator reputation and rated rounds, and per round its distance
    from the medians and its validator reputation after it (``validator_*``)."""
    ledger = _open(rpc_url, deployment_path, contract)
    from fedtrail.ledger import checksum

    address = checksum(address)
    info = ledger.get_site(address)
    if info is None:
        raise ConfigError(f"{address} was never registered on this ledger")
    # its earlier names (a64): the rounds below were taken part in under them
    former = ledger.registrations().former_names({address: info.name}).get(address, [])
    # the reputation each round left (after a drop, UpdateWithheld's, not the valuation's)
    reputation = dict(ledger.reputation_history(address).get(address, []))
    account = ledger.privacy(address)
    spends = {s.round: s for s in ledger.privacy_spends(site=address)}
    standing = ledger.validator_standing(address)
    rated = {  # peer rounds: its distance from the medians and validator reputation after
        int(e.args["round"]): (int(e.args["distance"]), int(e.args["validatorReputation"]))
        for e in ledger.events("ValidatorRated", argument_filters={"validator": address})
    }
    rows = []
    for r in range(1, ledger.current_round() + 1):
        sub = ledger.get_submission(r, address)
        valued = sub if sub and ledger.get_round(r).phase.has_scores else None
        rows.append(
            {
                "round": r,
                "committed": sub is not None,
                "revealed": bool(sub and sub.revealed),
                "num_samples": sub.num_samples if sub else 0,
                "score": valued.score / SCORE_SCALE if valued else None,
                "reason": reason_label(valued.reason) if valued else None,
                "weight": valued.weight / WEIGHT_SCALE if valued else None,
                "reputation": reputation[r] / SCORE_SCALE if r in reputation else None,
                "epsilon": spends[r].epsilon_micro / EPSILON_SCALE if r in spends else None,
                "epsilon_total": spends[r].total_micro / EPSILON_SCALE if r in spends else None,
            }
        )
        if standing.rated_rounds:
            rows[-1]["validator_distance"] = rated[r][0] / SCORE_SCALE if r in rated else None
            rows[-1]["validator_reputation"] = rated[r][1] / SCORE_SCALE if r in rated else None
    if fmt == "json":
        emit(
            {
                "site": address,
                "name": info.name,
                "former_names": former,
                "registered": info.registered,
                "reputation": info.reputation / SCORE_SCALE,
                "privacy": account.to_json(),
                **(
                    {
                        "validator": {
                            "reputation": standing.reputation / SCORE_SCALE,
                            "rated_rounds": standing.rated_rounds,
                        }
                    }
                    if standing.rated_rounds
                    else {}
                ),
                "rounds": rows,
            },
            "json",
        )
        return
    columns = None
    if fmt == "table":
        click.echo(
            f"site {address} '{printable(shown_name(info.name))}'"
            + (f" (formerly {', '.join(map(shown_name, former))})" if former else "")
            + f" registered={info.registered} "
            f"reputation={info.reputation / SCORE_SCALE:.4f}"
            + (f" privacy: {account.describe()}" if account.used else "")
            + (
                f" validator reputation={standing.reputation / SCORE_SCALE:.4f} "
                f"rated rounds={standing.rated_rounds}"
                if standing.rated_rounds
                else ""
            )
        )
        if not account.used:  # no DP: no empty epsilon columns
            columns = [k for k in rows[0] if not k.startswith("epsilon")] if rows else None
    emit(rows, fmt, columns=columns)


@audit.command("log")
@click.argument("round_id", type=ROUND_ID)
@ledger_options
@store_option
@format_option("table", "json")
def log_cmd(
    round_id: int,
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    store_location: str,
    fmt: str,
) -> None:
    """A round's explanation log, readable: its bytes are checked against the sha256 on chain,
    and every field is marked [chain] (equals the ledger's record), [claimed by the aggregator]
    (the chain holds nothing to compare) or [DIFFERS FROM CHAIN] (exit 1)."""
    from fedtrail.auditor.claims import Mark, SiteMarks, mark_site, registry_at_finalize
    from fedtrail.auditor.report.text import clean_text as shown  # no control chars to a tty
    from fedtrail.protocol.roundlog import MAX_LOG_BYTES, RoundLog, wording_note

    ledger = _open(rpc_url, deployment_path, contract)
    info = ledger.get_round(round_id)
    if not info.log_cid:
        from fedtrail.protocol.codes import Phase

        # a cancelled round is never finalized: "yet" would send an auditor waiting for nothing
        never = info.phase == Phase.CANCELLED
        raise ConfigError(
            f"round {round_id} is {info.phase.label}: "
            + (
                "a cancelled round never gets an explanation log"
                if never
                else "it has no explanation log yet (the aggregator stores it when it "
                "finalizes the round)"
            )
        )
    store = open_checked_store(store_location, reading=True)
    log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES))
    if fmt == "json":
        # sorted keys: the stored bytes are canonical JSON, so this is their order
        click.echo(json.dumps(log.to_json(), indent=2, sort_keys=True))
        return
    subs = {s.site: s for s in ledger.get_submissions(round_id)}
    registry = registry_at_finalize(ledger, round_id)
    tag = {Mark.CHAIN: "[chain]", Mark.CLAIMED: "[claimed]", Mark.MISMATCH: "[DIFFERS FROM CHAIN]"}
    click.echo(
        # the chain's CID text is the aggregator's to choose and no length is bounded on chain:
        # cut as every other audit command cuts chain CIDs (it was printed whole)
        f"log {shown(bounded(info.log_cid))}: bytes match the sha256 on chain "
        f"({info.log_sha256[:16]}…)"
    )
    click.echo("[chain] = equals the ledger's record; [claimed] = the aggregator's word only")
    click.echo("")
    click.echo(f"summary [claimed]: {shown(log.summary)}")
    if not log.settings.valuation.peers:
        click.echo(wording_note(log.settings.valuation.explanation_wording))
    click.echo("")
    mismatches: list[str] = []
    for e in log.sites:
        marks = mark_site(e, subs.get(e.site), registry.get(e.site))

        def t(field: str, marks: SiteMarks = marks) -> str:
            mark = marks.marks[field]
            chain = shown(str(marks.chain_values[field])) if mark is Mark.MISMATCH else ""
            extra = f" (chain: {chain})" if mark is Mark.MISMATCH else ""
            return tag[mark] + extra

        # the fraction shown is the log's; [chain] only when it and the integer weight both are
        shown_weight = "weight_fraction" if "weight_fraction" in marks.mismatches else "weight"

        mismatches += [f"{e.site} {f}" for f in marks.mismatches]
        click.echo(f"{shown(shown_name(e.name) or e.site)} {t('name')} ({e.site})")
        click.echo(
            f"  update {shown(e.update.cid)} {t('cid')}, "
            f"sha256 {e.update.sha256[:16]}… {t('sha256')}"
        )
        click.echo(
            f"  {e.update.num_samples} samples {t('num_samples')}, {shown(e.status)} {t('status')}"
        )
        click.echo(
            f"  score {e.score / SCORE_SCALE:.3f} {t('score')}  reason {shown(e.reason_label)} "
            f"{t('reason_label')}  weight {e.weight_fraction:.2%} {t(shown_weight)}"
        )
        click.echo(f"  why {t('explanation')}: {shown(e.explanation)}")
    for site in sorted(set(subs) - {e.site for e in log.sites}):
        mismatches.append(f"{site} missing from the log")
        click.echo(f"{site}: revealed on chain but MISSING FROM THE LOG")
    mismatches += _print_peer_votes(ledger, log, [s for s in subs.values() if s.revealed])
    m = log.metrics
    click.echo("")
    click.echo(
        "global model on the aggregator's validation set [claimed]: "
        + ", ".join(
            f"{k.upper()} {_num(m.before.get(k))} -> {_num(m.after.get(k))}"
            for k in ("auc", "f1", "loss")
        )
    )
    if m.before.threshold is not None or m.after.threshold is not None:
        click.echo(
            "decision threshold fitted on that set [claimed]: "
            f"{_num(m.before.threshold)} -> {_num(m.after.threshold)}, F1 at it "
            f"{_num(m.before.f1_calibrated)} -> {_num(m.after.f1_calibrated)} "
            "(F1 above: at 0.5)"
        )
    elif (m.after.classes or 2) > 2 and m.after.calibrated:
        recall = m.after.recall_calibrated or ()
        click.echo(
            f"{m.after.classes} classes (AUC and F1 above: macro); calibrated decision "
            "argmax(logits + bias) fitted on that set [claimed]: macro F1 "
            f"{_num(m.before.f1_calibrated)} -> {_num(m.after.f1_calibrated)}, balanced "
            f"accuracy {_num(m.before.balanced_accuracy_calibrated)} -> "
            f"{_num(m.after.balanced_accuracy_calibrated)}, recall per class after "
            + " ".join(_num(r) for r in recall)
        )
    if log.standing is not None:
        _print_standing(log, shown)
    if mismatches:
        raise VerificationFailed(
            f"round {round_id}: the log differs from the chain: " + "; ".join(mismatches)
        )


def _print_peer_votes(ledger: Ledger, log: RoundLog, revealed: Sequence[Submission]) -> list[str]:
    """A peer round's votes as the log repeats them, each marked against the chain's
    ``ScoresRevealed`` vector; returns the mismatches (a peers block on an aggregator round, a
    vector that differs, one missing from the log). Scores as ``audit round`` shows them, on
    the 0..1 scale (all six digits: a vector that differs by one unit must show it), a
    validator's own entry in brackets (its column: the ``revealed`` updates in address
    order)."""
    from fedtrail.auditor.peers import read_peer_record
    from fedtrail.protocol.peers import address_key

    record = read_peer_record(ledger, log.round)
    if record is None and log.peer_votes is None:
        return []
    click.echo("")
    if record is None:
        click.echo("peer votes: the log has a peers block, but the chain holds an aggregator round")
        return ["peers block on an aggregator round"]
    chain = {address_key(v.validator): v.scores for v in record.votes}
    logged = {address_key(v.validator): v for v in log.peer_votes or ()}
    click.echo(
        f"peer votes ({len(chain)} revealed on chain, quorum {record.quorum}; the scores above "
        "are their medians, checked by audit verify: peers.*):"
    )
    sites = sorted((s.site for s in revealed), key=address_key)
    columns = {address_key(site): i for i, site in enumerate(sites)}

    def vector(validator: str, scores: Sequence[int]) -> str:
        own = columns.get(address_key(validator))
        cells = (f"{v / SCORE_SCALE:.6f}" for v in scores)
        return " ".join(f"[{c}]" if j == own else c for j, c in enumerate(cells))

    mismatches = []
    for key, vote in logged.items():
        same = chain.get(key) == vote.scores
        if not same:
            mismatches.append(f"peer vote of {vote.validator}")
        click.echo(
            f"  {vote.validator}  {vector(vote.validator, vote.scores)}  "
            + (
                "[chain]"
                if same
                else f"[DIFFERS FROM CHAIN] (chain: {vector(vote.validator, chain.get(key, ()))})"
            )
        )
    for key in sorted(set(chain) - set(logged)):
        validator = next(v.validator for v in record.votes if address_key(v.validator) == key)
        mismatches.append(f"peer vote of {validator} missing from the log")
        click.echo(f"  {validator}: revealed on chain but MISSING FROM THE LOG")
    return mismatches


def _print_standing(log: RoundLog, shown: Callable[[str], str]) -> None:
    """The log's standing block: accumulated values per site, before and after this round."""
    st = log.standing
    assert st is not None
    names = {e.site: e.name or e.site for e in log.sites}
    click.echo("")
    where = (
        f"continues round {st.previous.round}'s log {shown(st.previous.cid)}"
        if st.previous
        else "first round: nothing carried in"
    )
    click.echo(
        f"standing [checked by audit verify: standing.chain, .accumulated, .scores]: {where}; "
        f"rounds valued before: {st.valued_rounds}"
        + (" (warm-up: nothing accumulated)" if st.valued_rounds == 0 else "")
    )
    normalised = st.normalised or {}
    for site in dict.fromkeys([*st.before, *st.after]):
        this = normalised.get(site)
        change = "-" if this is None else f"{this:+.3f} [claimed: needs --validation]"
        click.echo(
            f"  {shown(names.get(site, site))}: {st.before.get(site, 0.0):+.3f} "
            f"+ {change} = {st.after.get(site, 0.0):+.3f}"
        )


def verify_options(func: F) -> F:
    """``--validation``, ``--metrics-tolerance`` and ``--accept``: what ``audit verify`` and
    ``audit report`` check against, with one meaning in both (:func:`_verify_settings`)."""
    func = click.option(
        "--accept",
        "accept_path",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="The strictest valuation thresholds the sites agreed to: the [accept] table of this "
        "TOML file (a site's config.toml will do); default: the product's (terms.limits).",
    )(func)
    func = click.option(
        "--metrics-tolerance",
        type=FiniteFloatRange(min=0.0),
        default=None,
        help="Largest difference between the log's metrics and the recomputed ones "
        "(metrics.recomputed, with --validation; default 1e-6: last-bit noise of another thread "
        "count). Raise it on other hardware, where a score on a tie can move AUC or F1.",
    )(func)
    return click.option(
        "--validation",
        default=None,
        help="Also re-run the valuation on this validation set (a shipped dataset: pneumonia, "
        "retina; or a MedMNIST .npz) "
        "and compare the scores; it must be the set the aggregator used (its hash is in the log).",
    )(func)


def _verify_settings(
    validation: str | None, metrics_tolerance: float | None, accept_path: Path | None
) -> dict[str, Any]:
    """The keyword arguments of ``verify_round``/``verify_all`` that :func:`verify_options`
    give."""
    from fedtrail.auditor.verify import METRICS_TOLERANCE
    from fedtrail.ml.catalog import load_source
    from fedtrail.valuation.limits import load_limits

    return {
        "validation": None if validation is None else load_source(validation).splits().val,
        "accept": None if accept_path is None else load_limits(accept_path),
        "metrics_tolerance": METRICS_TOLERANCE if metrics_tolerance is None else metrics_tolerance,
    }


@audit.command()
@ledger_options
@store_option
@click.option("--round", "round_id", type=ROUND_ID, default=None, help="Verify one round.")
@click.option("--all", "all_rounds", is_flag=True, help="Verify every round (the default).")
@verify_options
@format_option("table", "json", "csv")
def verify(
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    store_location: str,
    round_id: int | None,
    all_rounds: bool,
    validation: str | None,
    metrics_tolerance: float | None,
    accept_path: Path | None,
    fmt: str,
) -> None:
    """Recompute every weight and global model; exit 0 only when every check passes."""
    from fedtrail.auditor.verify import verify_all, verify_round

    if round_id is not None and all_rounds:
        raise click.UsageError("give --round N or --all, not both")
    options = _verify_settings(validation, metrics_tolerance, accept_path)
    ledger = _open(rpc_url, deployment_path, contract)
    store: ContentStore = open_checked_store(store_location, reading=True)
    if round_id:
        audits = [verify_round(ledger, store, round_id, **options)]
    else:
        audits = verify_all(ledger, store, **options)
        _refuse_no_rounds(ledger, audits)
    rows = [
        {"round": c.round, "check": c.name, "result": c.status, "detail": c.detail}
        for a in audits
        for c in a.checks
    ]
    ok = all(a.passed for a in audits)
    from fedtrail.protocol.names import registry_warning

    warning = registry_warning({s.address: s.name for s in ledger.get_sites()})
    if warning is not None:  # a62: a look-alike registered after the last finalized round
        click.echo(f"warning: {printable(warning)}", err=True)
    if fmt == "json":
        extra = {} if warning is None else {"warnings": [warning]}  # the key only when any
        emit({"passed": ok, "checks": rows, **extra}, "json")
    else:
        emit(rows, fmt)
        if fmt == "table":
            skipped = sum(1 for a in audits for c in a.checks if not c.applicable)
            click.echo(
                f"\n{'PASS' if ok else 'FAIL'}: "
                f"{sum(len(a.checks) for a in audits) - skipped} checks over {len(audits)} "
                "round(s)" + (f", {skipped} not applicable" if skipped else "")
            )
    if not ok:
        click.get_current_context().exit(1)


def _refuse_no_rounds(ledger: Ledger, audits: list[RoundAudit]) -> None:
    """A ledger that has opened no round leaves nothing to verify: not a failed check (exit
    1, as ``FAIL: 0 checks over 0 round(s)`` said before session 58), and not a pass either
    (a deployment file or ``--contract`` naming a fresh ledger must not read as verified):
    the question has no answer yet, exit 2 like the other requests that cannot be carried
    out as given."""
    if not audits:
        raise ConfigError(
            f"nothing to verify: the ledger at {ledger.address} has opened no round yet (is "
            "--deployment / --contract the federation's? verify after its first round)"
        )


@audit.command()
@ledger_options
@store_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write the report into (index.html; created if missing).",
)
@click.option("--title", default=None, help="Title of the page.")
@verify_options
@click.option(
    "--timestamp/--no-timestamp",
    default=True,
    show_default=True,
    help="Print the generation time in the page (off: identical chain state gives identical "
    "bytes).",
)
@format_option("table", "json")
def report(
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    store_location: str,
    out_dir: Path,
    title: str | None,
    timestamp: bool,
    validation: str | None,
    metrics_tolerance: float | None,
    accept_path: Path | None,
    fmt: str,
) -> None:
    """Verify every round (as `audit verify --all` with the same --validation, --accept and
    --metrics-tolerance) and write a self-contained HTML audit report (no network to view);
    exit 1 when a check fails (the report is written either way). JSON: the page's path, the
    verdict, and each valued peer round's vectors, medians and validator ratings."""
    from datetime import UTC, datetime

    from fedtrail.auditor.report import DEFAULT_TITLE, collect, write_report
    from fedtrail.auditor.verify import verify_all

    options = _verify_settings(validation, metrics_tolerance, accept_path)
    ledger = _open(rpc_url, deployment_path, contract)
    store: ContentStore = open_checked_store(store_location, reading=True)
    audits = verify_all(ledger, store, **options)
    _refuse_no_rounds(ledger, audits)
    fed = collect(ledger, store, audits)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if timestamp else None
    path = write_report(
        ledger,
        store,
        out_dir,
        title=title or DEFAULT_TITLE,
        generated_at=stamp,
        federation=fed,
    )
    ok = all(a.passed for a in audits)
    failed_rounds = [str(a.round) for a in audits if not a.passed]
    if fmt == "json":
        peers = [t.to_json() for t in fed.peer_rounds()]
        emit({"report": str(path), "passed": ok, **({"peers": peers} if peers else {})}, "json")
    else:
        failed = sum(1 for a in audits for c in a.checks if c.failed)
        click.echo(f"report written to {path}")
        click.echo(
            f"verification: {'PASS' if ok else 'FAIL'} ({failed} failed check(s) over "
            f"{len(audits)} round(s)); open it in any browser, it needs no network"
        )
    if failed_rounds:
        # the report is written either way; the exit code (1) carries the verdict
        raise VerificationFailed(
            f"verification failed in round(s) {', '.join(failed_rounds)}; see {path}"
        )


@audit.command()
@ledger_options
@store_option
@click.option(
    "--declared-only",
    is_flag=True,
    help="Do not read the update blobs: show what the chain holds without recomputing any "
    "epsilon (then only the accounts are checked).",
)
@format_option("table", "json")
def privacy(
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    store_location: str,
    declared_only: bool,
    fmt: str,
) -> None:
    """Each site's privacy budget and spend, and each round's declared epsilon per update,
    recomputed from the DP parameters in the update blob with the sites' accountant. Exit 1
    when a recomputed epsilon differs from the declared one (a DP update revealed without its
    spend too), a spend has no DP parameters, parameters use another delta than the round's
    terms, the terms require DP and an update has none, a blob cannot be read, or a site's
    account disagrees with its events or its budget."""
    from fedtrail.auditor.privacy import audit_privacy, count_by_status

    ledger = _open(rpc_url, deployment_path, contract)
    store = None if declared_only else open_checked_store(store_location, reading=True)
    result = audit_privacy(ledger, store)
    if fmt == "json":
        emit(result.to_json(), "json")
    else:
        _print_privacy(result, count_by_status(result.updates))
    if not result.passed:
        click.get_current_context().exit(1)


def _print_privacy(result: PrivacyAudit, counts: dict[str, int]) -> None:
    from fedtrail.auditor.report.text import clean_text as shown  # names come from others

    names = {s.site: shown(shown_name(s.name)) for s in result.sites}
    click.echo(
        "sites (epsilon; the chain sums the declared spends: the RDP-composed epsilon under the "
        "composed rule, each update's own under the summed one):"
    )
    emit(
        [
            {
                "site": s.site,
                "name": names[s.site],
                "budget": s.budget_micro / EPSILON_SCALE if s.budget_micro else "none",
                "spent": s.spent_micro / EPSILON_SCALE,
                "rdp_composed": s.composed_epsilon,
                "check": "ok" if not s.problems else "; ".join(s.problems),
            }
            for s in result.sites
        ],
        "table",
    )
    click.echo("")
    click.echo("updates (epsilon per update and the site's total after it):")
    emit(
        [
            {
                "round": u.round,
                "site": u.site,
                "name": names.get(u.site, ""),
                "declared": u.declared_micro / EPSILON_SCALE,
                "total": None if u.total_micro is None else u.total_micro / EPSILON_SCALE,
                "recomputed": (
                    None if u.recomputed_micro is None else u.recomputed_micro / EPSILON_SCALE
                ),
                "check": u.status + (f": {u.detail}" if u.detail and not u.ok else ""),
            }
            for u in result.updates
        ],
        "table",
    )
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo("")
    click.echo(
        f"{'PASS' if result.passed else 'FAIL'}: {len(result.updates)} update(s)"
        + (f" ({summary})" if summary else "")
        + ("" if result.read_blobs else "; blobs not read (--declared-only)")
    )


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"
