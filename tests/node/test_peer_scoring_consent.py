"""A validator lends its votes only to a round it would train in: a peer round whose terms
average a BatchNorm model's running statistics (or carry thresholds outside its ``[accept]``)
is skipped before anything is fetched or scored."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import pytest
from eth_account import Account

from fedtrail.ledger import Ledger
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.catalog import load_source
from fedtrail.ml.models import ModelSpec
from fedtrail.node.scoring import PeerScorer
from fedtrail.protocol.terms import RoundTerms
from fedtrail.storage.store import ContentStore
from fedtrail.valuation import HISTORY_COMBINER
from fedtrail.valuation.limits import limits_from
from tests.fixtures.terms import parsed_terms

RESNET = ModelSpec(arch="resnet10")


def _terms(statistics: str) -> RoundTerms:
    valuation: dict[str, Any] = {
        "method": "shapley",
        "metric": "balanced_loss",
        "standing": True,
        "combiner": asdict(HISTORY_COMBINER),
    }
    return parsed_terms(
        valuation=valuation,
        aggregation_rule=AggregationRule(statistics=statistics).to_terms(statistics=True),
        model_spec=RESNET.to_json(),
        spec_hash=RESNET.spec_hash(),
    )


class Fetched(Exception):
    """The validator went past the terms and fetched the round's start model."""


class _Store:
    def get(self, *args: object, **kwargs: object) -> bytes:
        raise Fetched


def _scorer(tmp_path: Path, terms: RoundTerms, **kwargs: Any) -> PeerScorer:
    """A validator whose first fetch, after the terms, raises :class:`Fetched`."""
    val = load_source("pneumonia").splits().val
    scorer = PeerScorer(
        ledger=cast(Ledger, None),
        store=cast(ContentStore, _Store()),
        account=Account.create(),
        spec=RESNET,
        folder=tmp_path,
        val=val.subset(list(range(8))),
        **kwargs,
    )
    scorer._terms = lambda round_id: terms  # type: ignore[method-assign]
    return scorer


def test_a_validator_skips_a_round_that_averages_running_statistics(tmp_path: Path) -> None:
    record = _scorer(tmp_path, _terms("weighted"))._score(1, "cid", "ab" * 32)  # no fetch
    assert record.phase == "skipped"
    assert "running statistics combined by 'weighted'" in record.note


def test_a_validator_that_consented_goes_on_to_score(tmp_path: Path) -> None:
    consented = limits_from({"statistics": ["median", "weighted"]})
    scorer = _scorer(tmp_path, _terms("weighted"), accept=consented)
    with pytest.raises(Fetched):  # past the terms, it fetches the start model
        scorer._score(1, "cid", "ab" * 32)


def _loo_peer_terms(*, standing: bool) -> RoundTerms:
    """A peer round whose validators play leave-one-out (attack a21's game), with or without
    standing (a18's)."""
    valuation: dict[str, Any] = {
        "method": "shapley",
        "metric": "balanced_loss",
        "standing": standing,
        "combiner": asdict(HISTORY_COMBINER),
    }
    aggregator_round = parsed_terms(
        valuation=valuation,
        aggregation_rule=AggregationRule().to_terms(statistics=True),
        model_spec=RESNET.to_json(),
        spec_hash=RESNET.spec_hash(),
    )
    peers = {"mode": "peers", "quorum": 2, "validator_game": "loo"}
    return replace(
        aggregator_round,
        valuation={**valuation, **peers},
        score_commit_seconds=1,
        score_reveal_seconds=1,
    )


def test_a_validator_skips_payment_settings_outside_its_table_until_it_opts_in(
    tmp_path: Path,
) -> None:
    terms = _loo_peer_terms(standing=False)
    record = _scorer(tmp_path, terms)._score(1, "cid", "ab" * 32)  # no fetch
    assert record.phase == "skipped"
    assert "standing off" in record.note and "valuation game 'loo'" in record.note
    opted = limits_from({"per_round": True, "methods": ["linear_shapley", "loo"]})
    with pytest.raises(Fetched):
        _scorer(tmp_path, terms, accept=opted)._score(1, "cid", "ab" * 32)
