"""The fedtrail ClientApp reads a ServerApp's request without trusting its types or values:
a round that is not a positive integer, or a wait that is not a finite number >= 0, is refused
before the site's node is touched."""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedtrail.errors import ConfigError
from fedtrail.flower.client_app import REQUEST, request_of


@pytest.fixture(autouse=True)
def flower_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages are made inside a Flower task (as in a ServerApp): its identity set."""
    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def _msg(**values: object) -> Message:
    return Message(
        RecordDict({REQUEST: ConfigRecord(values)}),  # type: ignore[arg-type]
        dst_node_id=1,
        message_type="train",
    )


def test_an_honest_request_is_read() -> None:
    assert request_of(_msg(round=3, **{"wait-seconds": 12.5})) == (3, 12.5)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"round": 0}, "round"),
        ({"round": -3}, "round"),
        ({"round": "1"}, "round"),
        ({"round": 1.0}, "round"),
        ({"round": True}, "round"),
        ({"round": 1, "wait-seconds": math.nan}, "wait-seconds"),
        ({"round": 1, "wait-seconds": math.inf}, "wait-seconds"),
        ({"round": 1, "wait-seconds": -5.0}, "wait-seconds"),
        ({"round": 1, "wait-seconds": "60"}, "wait-seconds"),
    ],
)
def test_a_hostile_request_is_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        request_of(_msg(**values))


def test_a_message_without_a_request_is_refused() -> None:
    msg = Message(
        RecordDict({"config": ConfigRecord({"round": 1})}), dst_node_id=1, message_type="train"
    )
    with pytest.raises(ConfigError, match="no 'request'"):
        request_of(msg)
