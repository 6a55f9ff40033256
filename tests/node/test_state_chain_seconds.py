"""a44: NodeState.load refuses a chain_seconds that is not a whole number of seconds >= 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedtrail.node.daemon import NodeState, NodeStateError


def _write(path: Path, value: object) -> None:
    record = {"round": 1, "phase": "revealed", "chain_seconds": value}
    path.write_text(json.dumps({"rounds": {"1": record}}), encoding="utf-8")


@pytest.mark.parametrize("value", ["x", None, -5, True, 1.5, [30]])
def test_corrupt_chain_seconds_refused(tmp_path: Path, value: object) -> None:
    path = tmp_path / "state.json"
    _write(path, value)
    with pytest.raises(NodeStateError, match="chain_seconds"):
        NodeState.load(path)


@pytest.mark.parametrize("value", [0, 42])
def test_whole_chain_seconds_loaded(tmp_path: Path, value: int) -> None:
    path = tmp_path / "state.json"
    _write(path, value)
    assert NodeState.load(path).rounds[1].chain_seconds == value
