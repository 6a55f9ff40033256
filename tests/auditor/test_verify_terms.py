"""``audit verify`` against the round's committed terms: a valuation block of another JSON type
(``terms.valuation``, and the standing checks it decides), windows on chain other than the
terms promised (``terms.windows``), and thresholds stricter than the sites accept
(``terms.limits``)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import RoundAudit, _check_limits, verify_round
from fedtrail.chain import advance_time
from fedtrail.ledger import Valuation
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.node.daemon import _unrunnable
from fedtrail.protocol.terms import DuplicateRule, RoundTerms
from fedtrail.valuation import Combiner
from fedtrail.valuation.limits import ACCEPTED_GAMES, ThresholdLimits
from tests.auditor.report import federation as hand
from tests.fixtures.terms import parsed_terms

pytestmark = pytest.mark.anvil


def _open(
    fed: hand.Fed,
    model: tuple[str, str],
    valuation: dict[str, Any],
    windows: tuple[int, int] = (3600, 3600),
) -> int:
    """Opens a round under the hand-run federation's terms with ``valuation`` as their block
    and windows of 3600 s, giving the sites the commit and reveal ``windows`` on chain."""
    terms = RoundTerms(
        round=fed.ledger.current_round() + 1,
        aggregation_rule=asdict(AggregationRule()),
        valuation=valuation,
        model_spec=asdict(hand.SPEC),
        spec_hash=hand.SPEC.spec_hash(),
        seed=0,
        validation_sha256=hand.VALIDATION["sha256"],
        validation_images=hand.VALIDATION["images"],
        commit_seconds=3600,
        reveal_seconds=3600,
    )
    ref = hand.put(fed.store, terms.to_bytes())
    fed.terms[terms.round] = ref
    round_id, _ = fed.ledger.open_round(
        fed.coordinator,
        model[0],
        model[1],
        terms_cid=ref[0],
        terms_sha256=ref[1],
        commit_seconds=windows[0],
        reveal_seconds=windows[1],
    )
    return round_id


HONEST: dict[str, Any] = {"method": "shapley", "metric": "loss", "standing": True}
"""Payment settings every default ``[accept]`` takes (what a test of thresholds leaves alone)."""
PER_ROUND_LOO = ThresholdLimits(per_round=True, methods=(*ACCEPTED_GAMES, "loo"))
"""The ``[accept]`` of sites in a per-round leave-one-out federation (the replayed rounds
here): they opted in to those payment settings, not to the thresholds under test."""


def _parsed_terms(valuation: dict[str, Any], duplicates: DuplicateRule | None = None) -> RoundTerms:
    """Terms with ``valuation`` as their block (and ``duplicates`` as their duplicate rule), as a
    node reads them from their bytes."""
    return parsed_terms(valuation=valuation, duplicates=duplicates)


def _round_logged_as(
    tmp_path: Path,
    anvil_url: str,
    terms_valuation: dict[str, Any],
    logged: dict[str, Any],
    windows: tuple[int, int] = (3600, 3600),
    accept: ThresholdLimits | None = None,
) -> RoundAudit:
    """One hand-run round under terms with ``terms_valuation`` (and windows of 3600 s; the
    chain's are ``windows``), valued with arbitrary scores, whose log says the valuation
    settings were ``logged``; its audit without validation (under ``accept``)."""
    fed = hand.new_federation(tmp_path, anvil_url)
    model = hand.initial(fed)
    r = _open(fed, model, terms_valuation, windows)
    hand.submit_all(fed, r, seed=1)
    sites = fed.sites
    fed.ledger.record_valuation(
        fed.coordinator,
        r,
        [
            Valuation(sites[0].address, 1_000_000, 0),
            Valuation(sites[1].address, 0, 1),
            Valuation(sites[2].address, 300_000, 0),
        ],
    )

    def edit(doc: dict[str, Any]) -> None:
        doc["settings"]["valuation"] = logged

    hand.finalize(fed, r, model, None, edit=edit)
    advance_time(fed.ledger.w3, 1)
    return verify_round(fed.ledger, fed.store, r, accept=accept)


@pytest.mark.parametrize(
    ("terms_valuation", "logged"),
    [
        ({"method": "loo", "metric": "auc", "standing": 1}, {"standing": True}),
        ({"method": "loo", "metric": "auc", "explanation_check": 0}, {"explanation_check": False}),
        ({"method": "loo", "metric": "auc", "seed": 7.0}, {"seed": 7}),
    ],
    ids=["standing_1", "explanation_check_0", "seed_7.0"],
)
def test_terms_whose_valuation_block_has_another_json_type_fail_terms_valuation(
    anvil_url: str, tmp_path: Path, terms_valuation: dict[str, Any], logged: dict[str, Any]
) -> None:
    """Python's ``==`` takes ``1 == 1.0 == True``, so terms saying ``"standing": 1`` (or
    ``"explanation_check": 0``, ``"seed": 7.0``) used to pass against a log saying true (false,
    7); every party parses the block with ValuationSettings.from_json, which refuses them (an
    honest node skips the round). terms.valuation fails, and the standing checks, which cannot
    know whether the round is valued with standing, fail standing.chain (they used to be
    skipped in silence: under ``standing: 1`` the log needed no standing block)."""
    terms = _parsed_terms(terms_valuation)
    assert terms.valuation == terms_valuation  # canonical: the terms themselves parse
    assert _unrunnable(terms) is not None  # every honest node skips the round
    audit = _round_logged_as(
        tmp_path, anvil_url, terms_valuation, {"method": "loo", "metric": "auc", **logged}
    )
    bad = {c.name: c.detail for c in audit.checks if c.failed}
    assert "the terms' valuation block is not valid settings" in bad.pop("terms.valuation")
    assert "cannot check the standing" in bad.pop("standing.chain")
    assert not bad, bad


def test_terms_valuation_passes_the_same_settings_with_the_same_types(
    anvil_url: str, tmp_path: Path
) -> None:
    """The control: the same settings, typed as the parser wants them, pass."""
    valuation = {
        "method": "loo",
        "metric": "auc",
        "seed": 7,
        "explanation_check": False,
        "combiner": asdict(Combiner()),
    }
    audit = _round_logged_as(tmp_path, anvil_url, valuation, valuation)
    check = next(c for c in audit.checks if c.name == "terms.valuation")
    assert check.passed, check.detail
    assert audit.passed, [c for c in audit.checks if c.failed]


@pytest.mark.parametrize(
    ("windows", "needle"),
    [
        ((600, 3600), "the chain's commit window is 600 s from the opening block, the terms' 3600"),
        ((3550, 3600), "the chain's commit window is 3550 s from the opening block, the terms'"),
        ((3599, 3600), "the chain's commit window is 3599 s from the opening block, the terms'"),
        ((3600, 600), "the chain's reveal window is 600 s, the terms' 3600 s"),
        ((7200, 3600), "the chain's commit window is 7200 s from the opening block, the terms'"),
    ],
    ids=["short_commit", "a40_slack", "one_second_short", "short_reveal", "long_commit"],
)
def test_windows_on_chain_other_than_the_terms_promise_fail_terms_windows(
    anvil_url: str, tmp_path: Path, windows: tuple[int, int], needle: str
) -> None:
    """Terms promise sites 3600 s to commit and 3600 s to reveal; an aggregator that opens the
    round with other windows (10 minutes to commit: a site that polls hourly is shut out)
    fails terms.windows and nothing else. The contract sets the deadlines from the opening
    block and the lengths given, so the check is exact: a window 50 s short (a40's ``slack``,
    once inside verify's 60 s slack) or 1 s short fails too."""
    valuation = {"method": "loo", "metric": "auc", "combiner": asdict(Combiner())}
    audit = _round_logged_as(tmp_path, anvil_url, valuation, valuation, windows)
    bad = {c.name: c.detail for c in audit.checks if c.failed}
    assert set(bad) == {"terms.windows"}, bad
    assert needle in bad["terms.windows"]


def test_a_duplicate_rule_that_zeroes_honest_updates_fails_terms_limits() -> None:
    """Terms whose duplicate rule calls every later honest update a copy of the first
    (cosine 0.5, relative_l2 0.9: DUPLICATE, score 0; ``duplicates`` re-derives it bit for bit
    under the same rule) are skipped by honest nodes and fail ``terms.limits``; sites that widened
    their ``[accept]`` train under them, and an auditor given that table passes the check."""
    valuation = {**HONEST, "combiner": asdict(Combiner())}
    terms = _parsed_terms(valuation, DuplicateRule(cosine=0.5, relative_l2=0.9))
    refused = _unrunnable(terms)
    assert refused is not None and "duplicate_cosine 0.5" in refused
    assert "duplicate_relative_l2 0.9" in refused
    audit = RoundAudit(1)
    _check_limits(audit, terms, ThresholdLimits())
    assert [(c.name, c.failed) for c in audit.checks] == [("terms.limits", True)]
    assert "duplicate_cosine 0.5 (accepted: at least 0.9999)" in audit.checks[0].detail
    wide = ThresholdLimits(duplicate_cosine=0.5, duplicate_relative_l2=0.9)
    assert _unrunnable(terms, wide) is None
    audit = RoundAudit(1)
    _check_limits(audit, terms, wide)
    assert audit.passed
    assert _unrunnable(_parsed_terms(valuation)) is None


def test_terms_without_scaled_cosine_fail_terms_limits_unless_the_sites_widened() -> None:
    """Terms whose duplicate rule lacks ``scaled_cosine`` (the rule before it, which paid a
    Sybil's copy scaled by 1.01: attack a1) replay that rule, and the sites refuse them: the
    node does not take part and ``terms.limits`` fails. Sites that accept the old rule
    (``duplicate_scaled_cosine = 1.0`` under ``[accept.loosest]``) take part, and an auditor
    given that table passes the check."""
    valuation = {**HONEST, "combiner": asdict(Combiner())}
    terms = _parsed_terms(valuation, DuplicateRule(scaled_cosine=None))
    assert terms.duplicates.scaled_cosine is None
    refused = _unrunnable(terms)
    assert refused is not None and "duplicate_scaled_cosine 1.0" in refused
    audit = RoundAudit(1)
    _check_limits(audit, terms, ThresholdLimits())
    assert [(c.name, c.failed) for c in audit.checks] == [("terms.limits", True)]
    assert "duplicate_scaled_cosine 1.0 (accepted: at most 0.999995)" in audit.checks[0].detail
    old = ThresholdLimits(loosest={"duplicate_scaled_cosine": 1.0})  # type: ignore[arg-type]
    assert _unrunnable(terms, old) is None
    audit = RoundAudit(1)
    _check_limits(audit, terms, old)
    assert audit.passed
    assert _unrunnable(_parsed_terms(valuation)) is None  # the terms written now


def test_terms_without_support_cosine_fail_terms_limits_unless_the_sites_widened() -> None:
    """Terms whose duplicate rule lacks ``support_cosine`` (the rule before it, which paid a
    Sybil's copy sent through ``topk8`` at fraction 0.5: attack a90) are refused by a node and
    fail ``terms.limits``; sites and an auditor with ``duplicate_support_cosine = 1.0`` under
    ``[accept.loosest]`` take them."""
    valuation = {**HONEST, "combiner": asdict(Combiner())}
    terms = _parsed_terms(valuation, DuplicateRule(support_cosine=None))
    assert terms.duplicates.support_cosine is None
    refused = _unrunnable(terms)
    assert refused is not None and "duplicate_support_cosine 1.0" in refused
    audit = RoundAudit(1)
    _check_limits(audit, terms, ThresholdLimits())
    assert [(c.name, c.failed) for c in audit.checks] == [("terms.limits", True)]
    assert "duplicate_support_cosine 1.0 (accepted: at most 0.999995)" in audit.checks[0].detail
    old = ThresholdLimits(loosest={"duplicate_support_cosine": 1.0})  # type: ignore[arg-type]
    assert _unrunnable(terms, old) is None
    audit = RoundAudit(1)
    _check_limits(audit, terms, old)
    assert audit.passed


def test_terms_without_shared_tensor_fail_terms_limits_unless_the_sites_widened() -> None:
    """Terms whose duplicate rule lacks ``shared_tensor`` (the rule before it, which paid a
    Sybil's copy with noise on every tensor but one: attack a101) are refused by a node and
    fail ``terms.limits``; sites and an auditor with ``duplicate_shared_tensor = 0`` under
    ``[accept.loosest]`` take them."""
    valuation = {**HONEST, "combiner": asdict(Combiner())}
    terms = _parsed_terms(valuation, DuplicateRule(shared_tensor=None))
    assert terms.duplicates.shared_tensor is None
    refused = _unrunnable(terms)
    assert refused is not None and "duplicate_shared_tensor 0.0" in refused
    audit = RoundAudit(1)
    _check_limits(audit, terms, ThresholdLimits())
    assert [(c.name, c.failed) for c in audit.checks] == [("terms.limits", True)]
    assert "duplicate_shared_tensor 0.0 (accepted: at least 1)" in audit.checks[0].detail
    old = ThresholdLimits(loosest={"duplicate_shared_tensor": 0})  # type: ignore[arg-type]
    assert _unrunnable(terms, old) is None
    audit = RoundAudit(1)
    _check_limits(audit, terms, old)
    assert audit.passed
    assert _unrunnable(_parsed_terms(valuation)) is None  # the terms written now


def test_terms_without_either_order_fail_terms_limits_unless_the_sites_widened() -> None:
    """Terms whose duplicate rule lacks ``either_order`` (the one-way sparse tests, which paid
    a sparse copy committed before its original: attack a99) are refused by a node and fail
    ``terms.limits``; sites and an auditor with ``duplicate_either_order = 0`` under
    ``[accept.loosest]`` (README's older-ledger table) take them."""
    valuation = {**HONEST, "combiner": asdict(Combiner())}
    terms = _parsed_terms(valuation, DuplicateRule(either_order=None))
    assert terms.duplicates.either_order is None
    refused = _unrunnable(terms)
    assert refused is not None and "duplicate_either_order 0.0" in refused
    audit = RoundAudit(1)
    _check_limits(audit, terms, ThresholdLimits())
    assert [(c.name, c.failed) for c in audit.checks] == [("terms.limits", True)]
    assert "duplicate_either_order 0.0 (accepted: at least 1)" in audit.checks[0].detail
    old = ThresholdLimits(loosest={"duplicate_either_order": 0})  # type: ignore[arg-type]
    assert _unrunnable(terms, old) is None
    audit = RoundAudit(1)
    _check_limits(audit, terms, old)
    assert audit.passed


@pytest.mark.parametrize(
    ("threshold", "value"),
    [("stale_cosine", 1.0), ("free_rider_norm", 0.0), ("max_sample_ratio", 1e9)],
)
def test_thresholds_looser_than_the_sites_accept_fail_terms_limits(
    anvil_url: str, tmp_path: Path, threshold: str, value: float
) -> None:
    """Attack: an aggregator colluding with some sites commits terms that pay what the
    valuation should not (a resent copy at stale_cosine 1.0, a zero update at free_rider_norm 0,
    an inflated count at max_sample_ratio 1e9); the round replays bit for bit and, before,
    passed every check. terms.limits fails, naming the threshold; honest nodes skip the round;
    an auditor given the sites' wider ``[accept.loosest]`` passes it."""
    thresholds = {**asdict(Combiner()), threshold: value}
    valuation = {"method": "loo", "metric": "auc", "combiner": thresholds}
    terms = _parsed_terms(valuation)
    refused = _unrunnable(terms, PER_ROUND_LOO)
    assert refused is not None and f"{threshold} {value}" in refused and "looser" in refused
    audit = _round_logged_as(tmp_path, anvil_url, valuation, valuation)
    bad = {c.name: c.detail for c in audit.checks if c.failed}
    assert set(bad) == {"terms.limits"}, bad
    assert f"thresholds looser than the sites accept: {threshold} {value}" in bad["terms.limits"]

    agreed = PER_ROUND_LOO.widened(Combiner(**thresholds))
    assert _unrunnable(terms, agreed) is None
    audit = _round_logged_as(tmp_path / "agreed", anvil_url, valuation, valuation, accept=agreed)
    assert audit.passed, [c for c in audit.checks if c.failed]


@pytest.mark.parametrize(
    ("threshold", "value"),
    [("stale_cosine", 0.5), ("max_norm_z", 0.1), ("demote_scale", 1e-9)],
)
def test_thresholds_stricter_than_the_sites_accept_fail_terms_limits(
    anvil_url: str, tmp_path: Path, threshold: str, value: float
) -> None:
    """An aggregator that commits terms whose thresholds flag honest updates (every update a
    "copy" at stale_cosine 0.5, an "outlier" at max_norm_z 0.1, any dip in a site's record
    demoting it to 0 at demote_scale 1e-9) has its round replayed bit for bit under them: every
    other check passes. terms.limits fails, naming the threshold; honest nodes skip the round;
    an auditor given the sites' wider ``[accept]`` passes it."""
    thresholds = {**asdict(Combiner()), threshold: value}
    valuation = {"method": "loo", "metric": "auc", "combiner": thresholds}
    terms = _parsed_terms(valuation)
    refused = _unrunnable(terms, PER_ROUND_LOO)
    assert refused is not None and f"{threshold} {value}" in refused
    audit = _round_logged_as(tmp_path, anvil_url, valuation, valuation)
    bad = {c.name: c.detail for c in audit.checks if c.failed}
    assert set(bad) == {"terms.limits"}, bad
    assert f"{threshold} {value} (accepted: at least " in bad["terms.limits"]

    agreed = PER_ROUND_LOO.widened(Combiner(**thresholds))
    assert _unrunnable(terms, agreed) is None
    audit = _round_logged_as(tmp_path / "agreed", anvil_url, valuation, valuation, accept=agreed)
    assert audit.passed, [c for c in audit.checks if c.failed]


def test_a_reveal_window_below_the_sites_floor_fails_terms_windows() -> None:
    """a50: a round whose chain windows are exactly the terms' but whose reveal window (10 s,
    the contract's default minimum) is below the auditor's ``min_reveal_seconds`` (20 s by
    default) fails ``terms.windows``; an auditor given a table that lowered it passes it."""
    from fedtrail.auditor.verify import _check_windows
    from fedtrail.ledger.records import RoundInfo
    from fedtrail.protocol.codes import Phase

    terms = replace(_parsed_terms(HONEST, DuplicateRule()), commit_seconds=60, reveal_seconds=10)
    info = RoundInfo(
        *(1, Phase.FINALIZED, 1060, 1070, 1000, 3, 3),
        *("cid", "ab" * 32, "cid", "cd" * 32, "cid", "ef" * 32, "cid", "01" * 32),
    )
    name, passed, detail = _check_windows(info, terms, ThresholdLimits())
    assert (name, passed) == ("terms.windows", False)
    assert "reveal window is 10 s, shorter than the 20 s the sites accept" in detail
    assert _check_windows(info, terms, ThresholdLimits(min_reveal_seconds=10))[1] is True
