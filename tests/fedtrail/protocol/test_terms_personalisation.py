"""Round terms carry the federation's personalisation, only when set, and refuse bad ones."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.errors import ConfigError
from fedtrail.protocol.terms import InvalidTerms, Personalisation, RoundTerms

ZERO = "0" * 64


def _terms(**changes: object) -> RoundTerms:
    base = RoundTerms(
        round=1,
        aggregation_rule={"name": "weighted"},
        valuation={"method": "shapley"},
        model_spec={"arch": "smallcnn"},
        spec_hash=ZERO,
        seed=0,
        validation_sha256=ZERO,
        validation_images=10,
        commit_seconds=60,
        reveal_seconds=60,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _blob(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_terms_without_personalisation_keep_their_bytes() -> None:
    plain = _terms()
    doc = json.loads(plain.to_bytes())
    assert "personalisation" not in doc
    back = RoundTerms.from_bytes(plain.to_bytes())
    assert back.personalisation is None and back.to_bytes() == plain.to_bytes()


def test_terms_round_trip_the_personalisation() -> None:
    terms = _terms(personalisation=Personalisation(method="finetune", steps=50, lr=0.01))
    blob = terms.to_bytes()
    assert json.loads(blob)["personalisation"] == {"method": "finetune", "steps": 50, "lr": 0.01}
    back = RoundTerms.from_bytes(blob)
    assert back == terms and back.to_bytes() == blob
    assert Personalisation(steps=1, lr=1).to_json()["lr"] == 1.0


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"method": "fedper", "steps": 5, "lr": 0.1}, "method"),
        ({"method": "finetune", "steps": -1, "lr": 0.1}, "steps must lie"),
        ({"method": "finetune", "steps": 10_001, "lr": 0.1}, "steps must lie"),
        ({"method": "finetune", "steps": 5.0, "lr": 0.1}, "steps must be an integer"),
        ({"method": "finetune", "steps": True, "lr": 0.1}, "steps must be an integer"),
        ({"method": "finetune", "steps": 5, "lr": 0}, "lr must be positive"),
        ({"method": "finetune", "steps": 5, "lr": -0.5}, "lr must be positive"),
        ({"method": "finetune", "steps": 5, "lr": "0.1"}, "lr must be a finite"),
        ({"method": "finetune", "steps": 5}, "must hold method, steps and lr"),
        ({"method": "finetune", "steps": 5, "lr": 0.1, "x": 1}, "must hold method"),
        ([1, 2], "must hold method"),
    ],
)
def test_bad_personalisation_is_refused(bad: object, match: str) -> None:
    doc = json.loads(_terms().to_bytes())
    doc["personalisation"] = bad
    with pytest.raises(InvalidTerms, match=match):
        RoundTerms.from_bytes(_blob(doc))


def test_a_non_finite_lr_is_refused() -> None:
    with pytest.raises(InvalidTerms, match="finite"):
        Personalisation(lr=float("nan"))
    with pytest.raises(InvalidTerms, match="finite"):
        Personalisation(lr=float("inf"))


def test_aggregator_settings_write_personalisation_only_when_asked() -> None:
    assert AggregatorSettings().personalisation() is None
    got = AggregatorSettings(personalise_steps=20, personalise_lr=0.05).personalisation()
    assert got == Personalisation(method="finetune", steps=20, lr=0.05)
    with pytest.raises(ConfigError, match="steps must lie"):
        AggregatorSettings(personalise_steps=20_000)
    with pytest.raises(ConfigError, match="lr must be positive"):
        AggregatorSettings(personalise_steps=5, personalise_lr=-1.0)


def test_an_aggregator_refuses_a_method_its_model_cannot_use() -> None:
    with pytest.raises(ConfigError, match="'fedbn' needs normalisation layers"):
        AggregatorSettings(personalise_steps=5, personalise_method="fedbn")
    got = AggregatorSettings(personalise_steps=5, personalise_method="fedrep").personalisation()
    assert got is not None and got.method == "fedrep"
