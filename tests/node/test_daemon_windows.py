"""A round whose commit window is too short for this site (attack a43): round 1's window
bounds every later round's (a40), but round 1's own is the aggregator's choice down to the
contract's minimum, and a site slower than it was shut out of every round unseen. The node now
declines on chain (``Decline.SHORT_WINDOW``, ``terms.declined``) a window below its ``[accept]
min_commit_seconds``, or one that leaves less than its training took in an earlier round."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from fedtrail.chain import advance_time
from fedtrail.node.daemon import MEASURE_HORIZON, MEASURE_OWN_SLACK, NodeHooks, RoundRecord
from fedtrail.protocol.codes import Decline
from fedtrail.valuation.limits import (
    DEFAULT_MIN_COMMIT_SECONDS,
    DEFAULT_MIN_REVEAL_SECONDS,
    ThresholdLimits,
)
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_window_below_the_floor_is_declined_before_training(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Terms (and chain) with a 10 s commit window, the contract's default minimum: a node with
    the default floor of 30 s neither trains nor commits an update, and declines on chain; a
    site that lowered its floor to 10 s takes part."""
    assert DEFAULT_MIN_COMMIT_SECONDS == 30
    world = World(embedded, tmp_path, edit={"commit_seconds": 10})
    node = world.node(0)
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert "commit window is 10 s, shorter than the 30 s this site accepts" in record.note
    assert "declined on chain (short window)" in record.note, record.note
    assert world.ledger.declines(world.round) == {node.address: Decline.SHORT_WINDOW}
    opted = world.node(1, accept=ThresholdLimits(min_commit_seconds=10))
    kept = opted.participate(world.round)
    assert kept is not None and kept.phase == "committed", kept
    assert opted.address not in world.ledger.declines(world.round)


def test_a_reveal_window_below_the_floor_is_declined_before_training(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """a50: terms (and chain) with a 10 s reveal window, the contract's default minimum: a
    node with the default reveal floor of 20 s declines on chain before training instead of
    committing an update it may not reveal in time; a site that lowered its floor takes part."""
    assert DEFAULT_MIN_REVEAL_SECONDS == 20
    world = World(embedded, tmp_path, edit={"reveal_seconds": 10})
    node = world.node(0)
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert "reveal window is 10 s, shorter than the 20 s this site accepts" in record.note
    assert "declined on chain (short window)" in record.note, record.note
    assert world.ledger.declines(world.round) == {node.address: Decline.SHORT_WINDOW}
    opted = world.node(1, accept=ThresholdLimits(min_reveal_seconds=10))
    kept = opted.participate(world.round)
    assert kept is not None and kept.phase == "committed", kept
    assert opted.address not in world.ledger.declines(world.round)


def test_a_window_shorter_than_the_sites_measured_training_is_declined(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """A node whose training took 120 s of chain time in its latest trained round (recorded
    as it trained; here a record put in place of an earlier round's) declines a round whose
    60 s window is shorter, before training. The least of its latest measures counts (one
    slow round beside a 45 s one does not make it decline), and a measure older than the
    horizon does not count at all (it trains again and measures again); a round it trains
    records the chain time its training took (7 s, moved by its update hook)."""
    world = World(embedded, tmp_path)
    r = world.round
    node = world.node(0)
    node.state.rounds[r - 1] = RoundRecord(round=r - 1, phase="revealed", chain_seconds=120)
    record = node.participate(r)
    assert record is not None and record.phase == "skipped"
    assert "commit window is 60 s and this site's training took at least 120 s" in record.note
    assert world.ledger.declines(r) == {node.address: Decline.SHORT_WINDOW}

    def slow(delta: Any, round_id: int, context: Any) -> Any:
        advance_time(embedded.w3, 7)  # training that takes 7 s of chain time
        return delta

    other = world.node(1, hooks=NodeHooks(transform_update=slow))
    other.state.rounds[r - 2] = RoundRecord(round=r - 2, phase="revealed", chain_seconds=120)
    other.state.rounds[r - 1] = RoundRecord(round=r - 1, phase="revealed", chain_seconds=45)
    other.state.rounds[r - 1 - MEASURE_HORIZON] = RoundRecord(
        round=r - 1 - MEASURE_HORIZON, phase="revealed", chain_seconds=10_000
    )
    kept = other.participate(r)
    assert kept is not None and kept.phase == "committed", kept
    assert 7 <= kept.chain_seconds < 45, kept.chain_seconds
    assert other.address not in world.ledger.declines(r)


def test_an_old_measure_alone_does_not_decline(embedded: ChainEnv, tmp_path: Path) -> None:
    """A slow measure older than the horizon is no reason to decline: the node trains."""
    world = World(embedded, tmp_path)
    node = world.node(0)
    old = world.round - 1 - MEASURE_HORIZON
    node.state.rounds[old] = RoundRecord(round=old, phase="revealed", chain_seconds=10_000)
    record = node.participate(world.round)
    assert record is not None and record.phase == "committed", record


def test_a_clock_jump_while_training_does_not_shut_the_site_out(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Whoever controls the chain's clock (an aggregator running Anvil) moves it 100000 s while
    the site trains (attack a45). Before, the site recorded that as its training time and
    declined every round's window as too short for MEASURE_HORIZON rounds, a self-exclusion
    verify notes but does not fail. Now the chain-time measure is capped at the node's own
    elapsed time plus MEASURE_OWN_SLACK: the round is still missed (deadlines are chain time),
    but the same window is not declined afterwards."""
    world = World(embedded, tmp_path)
    r = world.round

    def jump(delta: Any, round_id: int, context: Any) -> Any:
        advance_time(embedded.w3, 100_000)  # the chain's clock, not the site's training
        return delta

    node = world.node(0, hooks=NodeHooks(transform_update=jump))
    began = time.monotonic()
    record = node.participate(r)  # the jump passes the deadline: this round is missed
    took = time.monotonic() - began
    assert record is not None
    assert 0 < record.chain_seconds <= math.ceil(took) + MEASURE_OWN_SLACK, (
        record.chain_seconds,
        took,
    )
    # the window this round had (every later round's, a40) is not declined by that measure
    assert node._window_refusal(world.ledger.get_round(r)) is None
