"""The round terms' free-rider reference rule, ``valuation.references`` (session 62, h-300):
"weighted" only, only with the public screen; the aggregator writes it with the public screen,
and a site at the default ``[accept]`` takes part under terms with or without it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.errors import ConfigError
from fedtrail.protocol.roundlog import InvalidLog, ValuationSettings
from fedtrail.valuation.consent import unrunnable
from tests.fedtrail.protocol.test_terms_schema import full_terms

PEERS = ValuationSettings(
    method="shapley", metric="loss", standing=True, mode="peers", quorum=2, public_screen=True
)


def test_the_rule_round_trips_and_is_written_only_when_set() -> None:
    weighted = replace(PEERS, references="weighted")
    assert weighted.to_json()["references"] == "weighted"
    assert ValuationSettings.from_json(weighted.to_json()) == weighted
    assert "references" not in PEERS.to_json()
    assert ValuationSettings.from_json(PEERS.to_json()).references is None


@pytest.mark.parametrize(
    "changes",
    [
        {"references": "all"},  # an unknown rule (a newer writer's): refused, as an unknown field
        {"references": "weighted", "public_screen": None},  # no screen leaves anything out
    ],
)
def test_a_rule_readers_cannot_apply_is_refused(changes: dict[str, object]) -> None:
    doc = {**PEERS.to_json(), **changes}
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(InvalidLog):
        ValuationSettings.from_json(doc)


def test_the_aggregator_writes_the_rule_with_the_public_screen_only() -> None:
    peers = AggregatorSettings(valuation_mode="peers", standing=True)
    assert peers.valuation_terms(1, quorum=2, probe=None).references == "weighted"
    older = replace(peers, references=None)  # stands in for a writer before session 62
    assert "references" not in older.valuation_terms(1, quorum=2, probe=None).to_json()
    validators = replace(peers, public_screen=False)
    assert validators.valuation_terms(1, quorum=2, probe=None).references is None
    assert (
        AggregatorSettings(standing=True).valuation_terms(1, quorum=None, probe=None).references
        is None
    )
    with pytest.raises(ConfigError):
        AggregatorSettings(references="all")


def test_nodes_take_part_under_terms_with_and_without_the_rule() -> None:
    """A node's consent (:func:`~fedtrail.valuation.consent.unrunnable`) reads the rule as any
    other valuation field: terms with it and terms without it run alike; a rule it does not
    know is refused as unplayable (a newer writer's)."""
    from fedtrail.protocol.terms import DuplicateRule

    terms = replace(full_terms(), duplicates=DuplicateRule())
    base = {
        **{k: v for k, v in terms.valuation.items() if k != "references"},
        "method": "shapley",
        "metric": "loss",
        "validator_game": "linear_shapley",
        "explanation_check": False,
    }
    base.pop("explanation_probe", None)
    old = replace(terms, valuation=base)
    new = replace(terms, valuation={**base, "references": "weighted"})
    assert unrunnable(old) is None and unrunnable(new) is None
    unknown = replace(terms, valuation={**base, "references": "all"})
    refusal = unrunnable(unknown)
    assert refusal is not None and "reference rule" in refusal, refusal
