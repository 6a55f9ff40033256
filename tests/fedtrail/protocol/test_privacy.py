"""The on-chain unit of epsilon and the validation of untrusted DP parameters."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from fedtrail.errors import FedtrailError
from fedtrail.protocol.privacy import (
    EPSILON_SCALE,
    MAX_EPSILON_MICRO,
    DpParams,
    InvalidPrivacy,
    from_micro,
    to_micro,
)


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "sample_rate": 0.02,
        "steps": 50,
        "delta": 1e-5,
        "accountant": "rdp",
    }
    doc.update(changes)
    return doc


def test_scale_is_micro_epsilon() -> None:
    assert EPSILON_SCALE == 1_000_000


def test_to_micro_rounds_up_never_down() -> None:
    assert to_micro(8) == 8_000_000
    assert to_micro(0.0) == 0
    assert to_micro(1.2345671) == 1_234_568
    assert to_micro(1e-9) == 1
    assert to_micro(2.0000000001) == 2_000_001


def test_from_micro_inverts_whole_micro_values() -> None:
    assert from_micro(8_000_000) == 8.0
    assert from_micro(1) == 1e-6
    assert to_micro(from_micro(3_141_593)) == 3_141_593


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, True, "1", 2e13])
def test_to_micro_refuses_what_cannot_be_on_chain(bad: Any) -> None:
    with pytest.raises(InvalidPrivacy):
        to_micro(bad)


@pytest.mark.parametrize("bad", [-1, MAX_EPSILON_MICRO + 1, 1.5, True, "5"])
def test_from_micro_refuses_non_uint64(bad: Any) -> None:
    with pytest.raises(InvalidPrivacy):
        from_micro(bad)


def test_dp_params_round_trip_through_json() -> None:
    params = DpParams.from_json(_doc())
    assert params == DpParams(
        noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.02, steps=50, delta=1e-5
    )
    assert DpParams.from_json(json.loads(json.dumps(params.to_json()))) == params
    assert params.to_json() == _doc()


def test_dp_params_store_ints_as_floats() -> None:
    params = DpParams.from_json(_doc(noise_multiplier=2, max_grad_norm=1, sample_rate=1))
    assert isinstance(params.noise_multiplier, float)
    assert params.to_json()["sample_rate"] == 1.0


@pytest.mark.parametrize(
    "change",
    [
        {"noise_multiplier": 0.0},
        {"noise_multiplier": -1.0},
        {"noise_multiplier": math.nan},
        {"noise_multiplier": 1e9},
        {"noise_multiplier": True},
        {"max_grad_norm": 0},
        {"max_grad_norm": math.inf},
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"sample_rate": "0.1"},
        {"steps": 0},
        {"steps": 2.0},
        {"steps": True},
        {"steps": 10**9},
        {"delta": 0.0},
        {"delta": 1.0},
        {"delta": None},
        {"accountant": "prv"},
        {"accountant": 1},
    ],
)
def test_dp_params_refuse_each_bad_field(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidPrivacy):
        DpParams.from_json(_doc(**change))


def test_dp_params_refuse_missing_and_unknown_fields() -> None:
    doc = _doc()
    del doc["steps"]
    with pytest.raises(InvalidPrivacy, match="missing \\['steps'\\]"):
        DpParams.from_json(doc)
    with pytest.raises(InvalidPrivacy, match="unknown \\['epsilon'\\]"):
        DpParams.from_json(_doc(epsilon=0.1))
    with pytest.raises(InvalidPrivacy):
        DpParams.from_json([1, 2])


def test_invalid_privacy_is_a_fedtrail_error() -> None:
    assert issubclass(InvalidPrivacy, FedtrailError)
