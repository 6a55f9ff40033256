"""SiteNode.participate(update=...): an update trained outside the node (a Flower ClientApp's own
loop, through fedtrail.flower.mod) is encoded, committed and revealed as the site's own, through
the node's restart-safe steps; once encoded, a different handed update changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.errors import ConfigError
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.models import federated_state
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK, HandedUpdate
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.codec import decode_update
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv


def _federation(env: ChainEnv, tmp: Path) -> Federation:
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, 8, seed=1)
    sites = make_sites(
        env.sites[:1],
        [splits.train.subset(parts[0])],
        training=TrainConfig(epochs=1),
        data=DataConfig(class_names=source.class_names),
    )
    return build_federation(
        sites=sites,
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=splits.val,
        w3=env.w3,
        coordinator=env.coordinator,
        aggregator=env.aggregator,
        settings=AggregatorSettings(
            valuation="loo", class_names=source.class_names, explain_method=None
        ),
    )


def _delta(node_spec_state: dict[str, torch.Tensor], value: float) -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, value, dtype=torch.float32) for k, v in node_spec_state.items()}


def test_a_handed_update_is_submitted_as_the_sites_own(embedded: ChainEnv, tmp_path: Path) -> None:
    fed = _federation(embedded, tmp_path)
    node = fed.nodes[0]
    r = fed.service.open_next()
    names = federated_state(node.config.model.build())
    handed = HandedUpdate(delta=_delta(names, 0.001), num_samples=7, train_loss=0.5)
    record = node.participate(r, update=handed)
    assert record is not None and record.phase == "committed"
    assert record.num_samples == 7 and record.train_loss == 0.5
    # a second, different update handed after the first was encoded is not used (restart-safe:
    # the encoded blob is what was committed)
    other = HandedUpdate(delta=_delta(names, 0.5), num_samples=9)
    deadline = fed.ledger.get_round(r).commit_deadline
    advance_time(fed.ledger.w3, deadline - next_block_timestamp(fed.ledger.w3) + 1 + CLOCK_SLACK)
    record = node.participate(r, update=other)
    assert record is not None and record.phase == "revealed"
    sub = fed.ledger.get_submission(r, node.address)
    assert sub is not None and sub.revealed and sub.num_samples == 7
    delta, _ = decode_update(fed.store.get(sub.cid, sub.sha256), spec=node.config.model)
    assert delta.keys() == handed.delta.keys()
    assert all(torch.equal(delta[k], handed.delta[k]) for k in delta)


def test_a_handed_update_is_validated() -> None:
    with pytest.raises(ConfigError, match="non-empty delta"):
        HandedUpdate(delta={}, num_samples=1)
    with pytest.raises(ConfigError, match="num_samples"):
        HandedUpdate(delta={"w": torch.zeros(1)}, num_samples=0)
    with pytest.raises(ConfigError, match=r"torch\.Tensor"):
        HandedUpdate(delta={"w": [0.0]}, num_samples=1)  # type: ignore[dict-item]
