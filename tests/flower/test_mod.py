"""``ledger_mod`` against a hostile ServerApp: a LedgerStrategy train message is read without
trusting its values, and the site trains only on the round's start model on chain."""

from __future__ import annotations

import math

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.flower.mod import REQUEST, make_ledger_mod
from fedtrail.node.daemon import SiteNode


@pytest.fixture(autouse=True)
def flower_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages are made inside a Flower task (as in a ServerApp): its identity set."""
    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


class Untouched(Exception):
    """Raised by a node factory the mod must not reach."""


def _no_node(context: Context) -> SiteNode:
    raise Untouched


def _no_app(msg: Message, context: Context) -> Message:
    raise Untouched


@pytest.mark.parametrize("wait", [math.nan, math.inf, -1.0])
def test_a_wait_that_is_not_finite_is_refused_before_the_node(wait: float) -> None:
    msg = Message(
        RecordDict(
            {
                "arrays": ArrayRecord(nn.Linear(2, 2).state_dict()),
                REQUEST: ConfigRecord({"round": 1, "wait-seconds": wait}),
            }
        ),
        dst_node_id=1,
        message_type="train",
    )
    with pytest.raises(ConfigError, match="wait-seconds"):
        make_ledger_mod(_no_node)(msg, _context(), _no_app)
