"""``terms.limits`` names the payment settings a site's default ``[accept]`` refuses (attacks
a18, a20, a21: standing off, a freezing clip norm, leave-one-out) without failing on them: only
a site's own table says whether it opted in."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fedtrail.auditor.verify import RoundAudit, _check_limits
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.node.daemon import _unrunnable
from fedtrail.protocol.terms import RoundTerms
from fedtrail.valuation import Combiner
from fedtrail.valuation.limits import ThresholdLimits
from tests.fixtures.terms import parsed_terms

HONEST: dict[str, Any] = {
    "method": "shapley",
    "metric": "balanced_loss",
    "standing": True,
    "combiner": asdict(Combiner()),
}
CLEAN = "no valuation threshold is stricter or looser than the sites accept"


def _limits(terms: RoundTerms, accept: ThresholdLimits) -> tuple[bool, str]:
    audit = RoundAudit(1)
    _check_limits(audit, terms, accept)
    [check] = audit.checks
    return check.passed, check.detail


def test_payment_settings_outside_the_default_table_are_noted_not_failed() -> None:
    freeze = AggregationRule(name="norm_clip", max_norm=1e-12).to_terms(statistics=False)
    terms = parsed_terms(
        valuation={**HONEST, "standing": False, "method": "loo"}, aggregation_rule=freeze
    )
    passed, detail = _limits(terms, ThresholdLimits())
    assert passed
    assert detail.startswith(CLEAN + "; noted, not failed: payment settings an honest site's")
    for named in ("standing off", "valuation game 'loo'", "norm_clip max_norm 1e-12"):
        assert named in detail, detail
    why = _unrunnable(terms)  # the node under the same table refuses the round
    assert why is not None and "payment settings this site does not accept" in why
    # under the sites' table that opted in, nothing to note, and the node takes part
    opted = ThresholdLimits(per_round=True, methods=("shapley", "loo"), min_clip_norm=1e-12)
    assert _limits(terms, opted) == (True, CLEAN)
    assert _unrunnable(terms, opted) is None


def test_the_default_aggregators_terms_draw_no_note() -> None:
    terms = parsed_terms(
        valuation=HONEST, aggregation_rule=AggregationRule().to_terms(statistics=False)
    )
    assert _limits(terms, ThresholdLimits()) == (True, CLEAN)
