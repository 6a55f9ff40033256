"""A small peer-scoring federation on Anvil + IPFS for the aggregator's and the nodes' tests.

Sites ``site-<i>`` (development accounts 2, 3, ...) train on an eighth of the bundled training
split each (one epoch: the smallest the other service tests use) and each validates on its own
shard of the validation split, as a node's ``[data]`` shard would; the aggregator opens peer
rounds (``valuation_mode="peers"``) and keeps the whole validation split for its metrics only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.chain import advance_time, connect, dev_account, next_block_timestamp
from fedtrail.ledger import Ledger
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig, NodeConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import Federation, SiteSetup, build_federation
from fedtrail.storage.store import IpfsStore

__all__ = ["pass_deadline", "peer_federation"]


def peer_federation(
    tmp: Path,
    anvil_url: str,
    ipfs_api: str,
    *,
    sites: int,
    faults: Sequence[SiteFault] = (),
    **settings: Any,
) -> Federation:
    """``sites`` sites with their ``faults`` (default none) on a fresh ledger; ``settings``
    override the peer-mode :class:`AggregatorSettings` (seeded, no explanations)."""
    source = load_source("pneumonia")
    splits = source.splits()
    train_parts = partition_iid(splits.train.labels, 8, seed=1)
    val_parts = partition_iid(splits.val.labels, sites, seed=2)
    faults = list(faults) or [SiteFault()] * sites
    setups = [
        SiteSetup(
            account=dev_account(2 + i),
            name=f"site-{i}",
            train=splits.train.subset(train_parts[i]),
            val=splits.val.subset(val_parts[i]),
            config=NodeConfig(
                training=TrainConfig(epochs=1, seed=i),
                data=DataConfig(class_names=source.class_names),
                poll_interval=0.1,
            ),
            fault=faults[i],
        )
        for i in range(sites)
    ]
    agg = AggregatorSettings(
        valuation_mode="peers",
        seed=3,
        standing=False,
        explain_method=None,
        class_names=source.class_names,
    )
    return build_federation(
        sites=setups,
        store=IpfsStore(ipfs_api),
        folder=tmp,
        validation=splits.val,
        w3=connect(anvil_url),
        coordinator=dev_account(0),
        settings=replace(agg, **settings),
    )


def pass_deadline(ledger: Ledger, deadline: int) -> None:
    """Moves the chain's clock just past ``deadline`` (and the daemons' slack)."""
    now = next_block_timestamp(ledger.w3)
    if now <= deadline + CLOCK_SLACK:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)
