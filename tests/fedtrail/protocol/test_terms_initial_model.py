"""Round terms declare how the round-1 start model is seeded: ``initial_model: "deployment"``
binds it to the chain and the contract (attack a23); terms without it keep the legacy rule and
their bytes."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fedtrail.protocol.terms import InvalidTerms, RoundTerms, deployment_seed, seeded_salt

ZERO = "0" * 64
CONTRACT = "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"
OTHER = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
SALT = "ab" * 32


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


def test_legacy_terms_keep_their_bytes_and_the_bare_seed() -> None:
    plain = _terms(seed=7)
    assert "initial_model" not in json.loads(plain.to_bytes())
    back = RoundTerms.from_bytes(plain.to_bytes())
    assert back.initial_model is None and back.to_bytes() == plain.to_bytes()
    assert back.initial_seed(1, CONTRACT) == 7


def test_bound_terms_round_trip_and_seed_by_the_deployment() -> None:
    terms = _terms(initial_model="deployment", initial_salt=SALT)
    blob = terms.to_bytes()
    doc = json.loads(blob)
    assert (doc["initial_model"], doc["initial_salt"]) == ("deployment", SALT)
    back = RoundTerms.from_bytes(blob)
    assert back == terms
    seed = back.initial_seed(31337, CONTRACT)
    assert seed == deployment_seed(0, 31337, CONTRACT, SALT) and 0 <= seed < 2**64
    assert seed != 0


def test_the_deployment_seed_changes_with_chain_contract_seed_and_salt() -> None:
    base = deployment_seed(0, 31337, CONTRACT, SALT)
    assert base == deployment_seed(0, 31337, CONTRACT.lower(), SALT)  # the case is no input
    others = {
        deployment_seed(1, 31337, CONTRACT, SALT),
        deployment_seed(0, 1, CONTRACT, SALT),
        deployment_seed(0, 31337, OTHER, SALT),
        deployment_seed(0, 31337, CONTRACT, "cd" * 32),  # a twin deployment, another salt
    }
    assert len(others) == 4 and base not in others


def test_the_seeded_salt_is_a_salt_that_follows_the_seed() -> None:
    salt = seeded_salt(0)
    assert len(salt) == 64 and set(salt) <= set("0123456789abcdef")
    assert salt == seeded_salt(0) != seeded_salt(1)
    _terms(initial_model="deployment", initial_salt=salt)  # accepted


@pytest.mark.parametrize(
    ("model", "salt"),
    [
        ("deployment", None),  # bound without a salt: twins would share the start model
        ("deployment", "AB" * 32),  # upper case: not the canonical form
        ("deployment", "ab" * 31),
        ("deployment", "zz" * 32),
        (None, SALT),  # a salt under the legacy rule would be read by nobody
    ],
)
def test_an_unusable_salt_is_refused(model: str | None, salt: str | None) -> None:
    with pytest.raises(InvalidTerms):
        _terms(initial_model=model, initial_salt=salt)
    doc = json.loads(_terms().to_bytes())
    doc.update({k: v for k, v in (("initial_model", model), ("initial_salt", salt)) if v})
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(InvalidTerms):
        RoundTerms.from_bytes(blob)


@pytest.mark.parametrize("value", ["", "legacy", 1, None])
def test_other_initial_model_values_are_refused(value: object) -> None:
    doc = json.loads(_terms().to_bytes())
    doc["initial_model"] = value
    doc["initial_salt"] = SALT
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(InvalidTerms):
        RoundTerms.from_bytes(blob)
