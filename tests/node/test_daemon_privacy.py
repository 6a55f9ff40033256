"""The site daemon with DP-SGD: trains privately, keeps the DP parameters in the update, declares
the spend at reveal (charged on chain), and refuses rounds its budget or the terms forbid."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedtrail.aggregator.service import AggregatorService
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.privacy import epsilon_spent
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import PrivacyConfig
from fedtrail.protocol.codes import Decline
from fedtrail.protocol.privacy import from_micro, to_micro
from fedtrail.protocol.terms import PrivacyTerms, RoundTerms
from fedtrail.storage.codec import decode_update
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ModelSpec()
DP_ON = PrivacyConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0)


@pytest.fixture
def world(embedded: ChainEnv, tmp_path: Path) -> World:
    return World(embedded, tmp_path)


def _require_dp(monkeypatch: pytest.MonkeyPatch, delta: float) -> None:
    """The aggregator's terms ask every site for DP-SGD at ``delta``."""
    offer = AggregatorService.round_terms

    def with_privacy(self: AggregatorService, round_id: int) -> RoundTerms:
        return replace(offer(self, round_id), privacy=PrivacyTerms(delta=delta, required=True))

    monkeypatch.setattr(AggregatorService, "round_terms", with_privacy)


def test_a_dp_node_declares_its_spend_and_the_chain_charges_it(world: World) -> None:
    node = world.node(0, privacy=DP_ON)
    world.ledger.set_privacy_budget(world.env.coordinator, node.address, to_micro(100.0))
    record = world.full(node)
    assert record is not None and record.phase == "revealed"
    sub = world.ledger.get_submission(world.round, node.address)
    assert sub is not None
    _, meta = decode_update(world.store.get(sub.cid, sub.sha256), spec=SPEC)
    assert meta.dp is not None
    assert (meta.dp.noise_multiplier, meta.dp.max_grad_norm) == (1.0, 1.0)
    assert meta.dp.delta == 1e-5  # the terms set none: the node's [privacy] delta
    # DP-SGD's own expected batch ([privacy] batch_size), not [training]'s, sets the rate
    assert DP_ON.batch_size != node.config.training.batch_size
    assert meta.dp.sample_rate == min(1.0, DP_ON.batch_size / len(world.train[0]))
    assert record.epsilon_micro == to_micro(epsilon_spent(meta.dp)) > 0
    account = world.ledger.privacy(node.address)
    assert account.spent_micro == record.epsilon_micro
    spends = world.ledger.privacy_spends(world.round)
    assert [(s.site, s.epsilon_micro) for s in spends] == [(node.address, record.epsilon_micro)]


def test_a_non_dp_node_reveals_as_before(world: World) -> None:
    node = world.node(1)
    record = world.full(node)
    assert record is not None and record.phase == "revealed" and record.epsilon_micro == 0
    sub = world.ledger.get_submission(world.round, node.address)
    assert sub is not None
    assert decode_update(world.store.get(sub.cid, sub.sha256), spec=SPEC)[1].dp is None
    assert world.ledger.privacy_spends(world.round) == []


def test_a_round_past_the_budget_is_refused_before_training(world: World) -> None:
    node = world.node(0, privacy=DP_ON)
    world.ledger.set_privacy_budget(world.env.coordinator, node.address, to_micro(0.01))
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert "privacy budget" in record.note and "0.01" in record.note
    assert record.epsilon_micro > to_micro(0.01)
    assert world.ledger.get_submission(world.round, node.address) is None
    assert node.participate(world.round) == record  # recorded, not retried
    assert world.ledger.privacy(node.address).spent_micro == 0


def test_a_site_with_a_budget_but_privacy_off_does_not_train(world: World) -> None:
    node = world.node(0)
    world.ledger.set_privacy_budget(world.env.coordinator, node.address, to_micro(8.0))
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert "privacy budget on chain" in record.note and "[privacy] is not enabled" in record.note
    assert world.ledger.get_submission(world.round, node.address) is None


def test_terms_requiring_dp_set_the_delta_and_skip_a_node_without_it(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_dp(monkeypatch, 1e-6)
    world = World(embedded, tmp_path)
    plain = world.node(1).participate(world.round)
    assert plain is not None and plain.phase == "skipped"
    assert "terms require DP-SGD" in plain.note
    private = world.full(world.node(0, privacy=DP_ON))
    assert private is not None and private.phase == "revealed"
    sub = world.ledger.get_submission(world.round, world.node(0).address)
    assert sub is not None
    meta = decode_update(world.store.get(sub.cid, sub.sha256), spec=SPEC)[1]
    assert meta.dp is not None and meta.dp.delta == 1e-6
    assert from_micro(private.epsilon_micro) >= epsilon_spent(meta.dp)


def test_privacy_config_refuses_bad_values() -> None:
    from fedtrail.errors import ConfigError

    for bad in (
        {"enabled": 1},
        {"noise_multiplier": 0.0},
        {"target_epsilon": -1.0},
        {"max_grad_norm": -1.0},
        {"delta": 1.0},
        {"min_delta": 0.0},
        {"min_delta": 2e-5},  # above its delta: no delta would be accepted
        {"batch_size": 0},
        {"batch_size": 64.0},
        {"lr": 0.0},
        {"momentum": 1.0},
    ):
        with pytest.raises(ConfigError):
            PrivacyConfig(**bad)  # type: ignore[arg-type]
    assert PrivacyConfig(target_epsilon=2.0).settings().target_epsilon == 2.0
    own = PrivacyConfig(batch_size=64, lr=0.3, momentum=0.5, max_grad_norm=0.5).settings()
    assert (own.batch_size, own.lr, own.momentum, own.max_grad_norm) == (64, 0.3, 0.5, 0.5)
    assert own.training(TrainConfig(batch_size=32, lr=0.02, momentum=0.9)) == TrainConfig(
        batch_size=64, lr=0.3, momentum=0.5
    )


@pytest.mark.parametrize("delta", [0.5, 2e-5])
def test_terms_with_a_looser_delta_than_the_site_allows_are_refused_before_training(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delta: float
) -> None:
    """The aggregator chooses the terms' delta; one above the site's [privacy] delta (1e-5) or
    above 1 / its training images records a smaller epsilon for the same training."""
    _require_dp(monkeypatch, delta)
    world = World(embedded, tmp_path)
    node = world.node(0, privacy=DP_ON)
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert f"delta {delta:g}" in record.note and "ceiling 1e-05" in record.note
    # declined on chain (a42), not silently absent: no update committed
    assert world.ledger.declines(world.round).get(node.address) is Decline.PRIVACY


@pytest.mark.parametrize("delta", [1e-100, 1e-8])
def test_terms_with_a_tighter_delta_than_the_site_allows_are_refused_before_training(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delta: float
) -> None:
    """Attack: the aggregator chooses the terms' delta, and a tiny one records a larger epsilon
    for the same training (8-16x that of 1e-5 at 1e-100), burning the site's on-chain budget.
    Below the site's [privacy] min_delta (1e-7) the node does not train; at it, it does."""
    _require_dp(monkeypatch, delta)
    world = World(embedded, tmp_path)
    node = world.node(0, privacy=DP_ON)
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert f"delta {delta:g}, below this site's floor 1e-07" in record.note
    # declined on chain (a42), not silently absent: no update committed
    assert world.ledger.declines(world.round).get(node.address) is Decline.PRIVACY
    lower = replace(DP_ON, min_delta=delta)
    other = world.node(1, privacy=lower).participate(world.round)
    assert other is not None and other.phase != "skipped"
