"""Replay and verify rounds from public data only: the chain, the content hashes and this code.

The auditor trusts neither the aggregator nor the sites. For each finalized round it fetches every
blob by the CID the chain's events name and checks it against the sha256 in contract storage,
recomputes the weights from the on-chain sample counts and scores with the shared rule,
re-aggregates the stored updates and compares the result's sha256 with the finalized one, and
checks that the explanation log agrees with the chain.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from fedtrail.errors import ConfigError, FedtrailError, HashMismatch, InvalidUpdate, StoreError
from fedtrail.ledger import Ledger, RoundInfo, Submission
from fedtrail.ml.aggregation import AggregationRule, aggregate, apply_delta
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol import roundlog
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.weights import ZeroTotalWeight, onchain_weights
from fedtrail.storage.codec import decode_model, decode_update, encode_model
from fedtrail.storage.store import ContentStore

# Scores are recomputed from floating-point model evaluations, whose last bits depend on the CPU
# and thread count; weights and global models are compared exactly, scores within this (1e-3).
SCORE_TOLERANCE = 1_000

# Reason codes (aggregator.valuation.base.Reason) for updates that could not be read at valuation.
UNUSABLE_REASONS = frozenset({Reason.TAMPERED, Reason.MALFORMED})


@dataclass(frozen=True)
class Check:
    """One verification step of one round."""

    round: int
    name: str
    passed: bool
    detail: str

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"


@dataclass
class RoundAudit:
    round: int
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def add(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(self.round, name, passed, detail))
        return passed


class _Timer:
    def __init__(self, audit: RoundAudit, key: str) -> None:
        self.audit, self.key = audit, key

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.audit.seconds[self.key] = self.audit.seconds.get(self.key, 0.0) + (
            time.perf_counter() - self.t
        )


def _fetch(store: ContentStore, cid: str, sha256: str) -> tuple[bytes | None, str]:
    try:
        return store.get(cid, sha256), ""
    except HashMismatch as exc:
        return None, f"bytes do not match the on-chain sha256: {exc}"
    except StoreError as exc:
        return None, f"cannot fetch {cid}: {exc}"


def verify_round(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    *,
    validation: ImageDataset | None = None,
    score_tolerance: int = SCORE_TOLERANCE,
) -> RoundAudit:
    """Every check of one round. A round that is not finalized is reported, not failed."""
    audit = RoundAudit(round_id)
    info = ledger.get_round(round_id)
    if info.phase != Phase.FINALIZED:
        audit.add(
            "phase", info.phase != Phase.NONE, f"round is {info.phase.label}; nothing to replay"
        )
        return audit
    subs = ledger.get_submissions(round_id)

    # the explanation log: hash, schema, and agreement with the chain
    with _Timer(audit, "fetch"):
        log_blob, why = _fetch(store, info.log_cid, info.log_sha256)
    doc: dict[str, Any] | None = None
    if log_blob is None:
        audit.add("log.hash", False, why)
    else:
        audit.add("log.hash", True, f"{info.log_cid} matches its on-chain sha256")
        try:
            doc = roundlog.from_bytes(log_blob)
            audit.add("log.schema", True, "valid explanation-log/1")
        except FedtrailError as exc:
            audit.add("log.schema", False, str(exc))
    if doc is not None:
        _check_log(audit, doc, info, subs)

    # the weights, recomputed from the on-chain counts and scores
    try:
        expected = onchain_weights([s.num_samples for s in subs], [s.score for s in subs])
    except ZeroTotalWeight:
        expected = []
    got = [s.weight for s in subs]
    audit.add(
        "weights",
        expected == got,
        "on-chain weights equal the shared rule over on-chain samples x scores"
        if expected == got
        else f"chain {got} != recomputed {expected}",
    )

    # every blob against its on-chain hash
    spec = _spec_from(doc)
    with _Timer(audit, "fetch"):
        start_blob, why = _fetch(store, info.start_cid, info.start_sha256)
    audit.add("start_model.hash", start_blob is not None, why or info.start_cid)
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    unusable: dict[str, Reason] = {}
    for sub in subs:
        with _Timer(audit, "fetch"):
            blob, why = _fetch(store, sub.cid, sub.sha256)
        if blob is None:
            unusable[sub.site] = Reason.TAMPERED if "sha256" in why else Reason.MALFORMED
            # Acceptable only for an update the aggregator itself found unusable and excluded.
            excluded = sub.weight == 0 and sub.reason in UNUSABLE_REASONS
            audit.add(
                f"update.{sub.site[:10]}",
                excluded,
                f"{why}"
                + (
                    " (scored 0 as unusable at valuation: consistent)"
                    if excluded
                    else f" (reason code {sub.reason}, weight {sub.weight})"
                ),
            )
            continue
        try:
            with _Timer(audit, "decode"):
                deltas[sub.site], _ = decode_update(blob, spec=spec, expected_round=round_id)
            audit.add(f"update.{sub.site[:10]}", True, f"{sub.cid} hash ok, decodes")
        except InvalidUpdate as exc:
            unusable[sub.site] = Reason.MALFORMED
            excluded = sub.weight == 0 and sub.reason in UNUSABLE_REASONS
            audit.add(f"update.{sub.site[:10]}", excluded, f"malformed: {exc.reason}")

    # the global model, recomputed bit for bit
    if start_blob is not None and doc is not None:
        try:
            with _Timer(audit, "recompute"):
                start, _ = decode_model(start_blob, spec=spec)
                rule = AggregationRule(**doc["settings"]["aggregation_rule"])
                included = [s for s in subs if s.weight > 0]
                if any(s.site not in deltas for s in included):
                    raise FedtrailError("an update with weight > 0 is unavailable")
                delta = aggregate(
                    rule, [deltas[s.site] for s in included], [s.weight for s in included]
                )
                blob = encode_model(apply_delta(start, delta), spec=spec, round=round_id)
                digest = hashlib.sha256(blob).hexdigest()
            audit.add(
                "global.recomputed",
                digest == info.global_sha256,
                f"replayed '{rule.name}' aggregate sha256 {digest[:16]}… "
                + ("equals" if digest == info.global_sha256 else "DIFFERS FROM")
                + f" the finalized {info.global_sha256[:16]}…",
            )
        except (FedtrailError, TypeError, ValueError) as exc:
            audit.add("global.recomputed", False, f"cannot replay: {exc}")
    with _Timer(audit, "fetch"):
        gblob, why = _fetch(store, info.global_cid, info.global_sha256)
    audit.add("global.hash", gblob is not None, why or f"{info.global_cid} matches")

    if validation is not None and doc is not None and start_blob is not None:
        with _Timer(audit, "rescore"):
            _check_scores(
                audit,
                doc,
                spec,
                decode_model(start_blob, spec=spec)[0],
                subs,
                deltas,
                unusable,
                validation,
                score_tolerance,
            )
    return audit


def _check_scores(
    audit: RoundAudit,
    doc: dict[str, Any],
    spec: ModelSpec,
    start: dict[str, torch.Tensor],
    subs: list[Submission],
    deltas: dict[str, dict[str, torch.Tensor]],
    unusable: dict[str, Reason],
    validation: ImageDataset,
    tolerance: int,
) -> None:
    """Re-runs the aggregator's valuation with the settings its log names."""
    from fedtrail.valuation import Candidate, value_round

    settings = doc["settings"]["valuation"]
    if validation.content_sha256() != doc["validation"]["sha256"]:
        audit.add(
            "scores.recomputed",
            False,
            "the given validation set is not the one the aggregator used (sha256 differs)",
        )
        return
    candidates = [
        Candidate(
            site=s.site,
            num_samples=s.num_samples,
            delta=deltas.get(s.site),
            status=unusable.get(s.site, Reason.OK),
        )
        for s in subs
    ]
    try:
        recomputed = value_round(
            global_state=start,
            spec=spec,
            candidates=candidates,
            validation=validation,
            method=settings["method"],
            metric=settings["metric"],
            seed=int(settings.get("seed", doc["settings"]["seed"] + doc["round"])),
            explanation_check=bool(settings.get("explanation_check", False)),
        ).sites
    except (FedtrailError, KeyError, TypeError, ValueError) as exc:
        audit.add("scores.recomputed", False, f"cannot re-run the valuation: {exc}")
        return
    by_site = {v.site: v for v in recomputed}
    diffs = [abs(by_site[s.site].score - s.score) for s in subs]
    reasons_equal = all(int(by_site[s.site].reason) == s.reason for s in subs)
    worst = max(diffs, default=0)
    passed = reasons_equal and worst <= tolerance
    audit.add(
        "scores.recomputed",
        passed,
        f"re-ran {settings['method']} on the {settings['metric']}: reasons "
        + ("equal" if reasons_equal else "DIFFER")
        + f", largest score difference {worst} (tolerance {tolerance}: floating-point "
        "evaluation may differ in the last bits across machines)",
    )


def _spec_from(doc: dict[str, Any] | None) -> ModelSpec:
    if doc is None:
        return ModelSpec()
    try:
        return ModelSpec(**doc["settings"]["model_spec"])
    except (TypeError, ConfigError):
        return ModelSpec()


def _check_log(
    audit: RoundAudit, doc: dict[str, Any], info: RoundInfo, subs: list[Submission]
) -> None:
    problems = []
    if doc["round"] != info.id:
        problems.append(f"log is for round {doc['round']}")
    if doc["aggregation"]["global_sha256"] != info.global_sha256:
        problems.append("log names another global model")
    if doc["start_model"]["sha256"] != info.start_sha256:
        problems.append("log names another start model")
    by_site = {e["site"]: e for e in doc["sites"]}
    if set(by_site) != {s.site for s in subs}:
        problems.append("log lists other sites than the chain")
    for s in subs:
        e = by_site.get(s.site)
        if e is None:
            continue
        if int(e["weight"]) != s.weight:
            problems.append(f"{s.site[:10]} weight {e['weight']} != chain {s.weight}")
        if e["score"] != s.score or e["reason"] != s.reason:
            problems.append(f"{s.site[:10]} score/reason differ from the chain")
        if e["update"]["sha256"] != s.sha256:
            problems.append(f"{s.site[:10]} update hash differs from the chain")
    audit.add(
        "log.agrees",
        not problems,
        "; ".join(problems) or "log's sites, scores, weights and hashes equal the chain's",
    )


def verify_all(ledger: Ledger, store: ContentStore, **kwargs: Any) -> list[RoundAudit]:
    return [verify_round(ledger, store, r, **kwargs) for r in range(1, ledger.current_round() + 1)]
