"""a44: NodeState.load refuses a chain_seconds that is not a whole number of seconds >= 0 (and
a declined that is no decline reason's code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedtrail.node.daemon import NodeState, NodeStateError
from fedtrail.protocol.codes import Decline


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


@pytest.mark.parametrize("value", ["x", None, -1, 10, True, 2.0, [2]])
def test_corrupt_declined_refused(tmp_path: Path, value: object) -> None:
    """A dropped decline is committed again with the reason ``declined`` records: a value that
    is no reason's code is refused on load, not found when the decline is re-sent."""
    path = tmp_path / "state.json"
    record = {"round": 1, "phase": "skipped", "declined": value}
    path.write_text(json.dumps({"rounds": {"1": record}}), encoding="utf-8")
    with pytest.raises(NodeStateError, match="declined"):
        NodeState.load(path)


def test_a_record_without_declined_loads_as_none_declared(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _write(path, 0)  # a record written before the field
    assert NodeState.load(path).rounds[1].declined == 0


@pytest.mark.parametrize(
    ("note", "code"),
    [
        ("the round's windows ... [declined on chain (windows) in tx ab12]", Decline.WINDOWS),
        (
            "declined on chain (cap below data) before this node's record of it was saved; "
            "nothing to do",
            Decline.CAP_BELOW_DATA,
        ),
        ("... [not declared on chain: the commit window is closed]", 0),
        ("... [declined on chain (no such reason) in tx ab12]", 0),
        ("committed, but the committed update is lost locally", 0),
    ],
)
def test_a_decline_recorded_before_the_field_takes_its_reason_from_the_note(
    tmp_path: Path, note: str, code: int
) -> None:
    """A decline written before session 62 has no ``declined``: its reason, the one the site
    signed, is in the note, so a decline a reorganisation drops is committed again too."""
    path = tmp_path / "state.json"
    record = {"round": 1, "phase": "skipped", "note": note}
    path.write_text(json.dumps({"rounds": {"1": record}}), encoding="utf-8")
    assert NodeState.load(path).rounds[1].declined == code
    # a record that has the field keeps what it says
    path.write_text(json.dumps({"rounds": {"1": {**record, "declined": 0}}}), encoding="utf-8")
    assert NodeState.load(path).rounds[1].declined == 0
