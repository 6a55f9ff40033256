"""`critical_path.round_to_verify`, the one round that `verify_parts.py` and `verify_ab.py` time
verify on: it hands back the ledger and round `one_round` built, skips `one_round`'s own verify,
and puts that verify back afterwards, also when the round fails."""

from __future__ import annotations

from typing import Any

import pytest

import scripts.bench.critical_path as cp


def test_gives_the_round_and_skips_its_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    timed = cp._verify
    ledger = object()
    seen: dict[str, Any] = {}

    def fake_round(rpc: str, api: str, n: int, clock: Any, **kw: Any) -> dict[str, Any]:
        seen.update(rpc=rpc, api=api, n=n, kw=kw, during=cp._verify)
        return {"verify": cp._verify(ledger, api, 7, 3)}

    monkeypatch.setattr(cp, "one_round", fake_round)
    got = cp.round_to_verify("rpc", "api", 4, large_game="linear_shapley", rounds=2)
    assert got == (ledger, 7)
    assert seen["during"] is not timed  # one_round's verify was not the timed one
    assert (seen["rpc"], seen["api"], seen["n"]) == ("rpc", "api", 4)
    assert seen["kw"] == {"large_game": "linear_shapley", "rounds": 2}
    assert cp._verify is timed


def test_puts_verify_back_when_the_round_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    timed = cp._verify

    def failing(*args: Any, **kw: Any) -> dict[str, Any]:
        raise SystemExit("round 1 was not finalized")

    monkeypatch.setattr(cp, "one_round", failing)
    with pytest.raises(SystemExit, match="not finalized"):
        cp.round_to_verify("rpc", "api", 2)
    assert cp._verify is timed
