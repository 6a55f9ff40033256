"""The ServerApp's round driver (fedtrail.flower.rounds) on a real chain (the embedded one) with
real nodes: a site whose reply lies (another CID, more samples) gains nothing, its weight is the
chain's, and the lie is reported; a reply for a site with nothing on chain gets no weight."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.flower.rounds import LedgerRounds, Received
from fedtrail.flower.site import answer
from fedtrail.ledger import Ledger
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.weights import onchain_weights
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _federation(env: ChainEnv, tmp: Path) -> Federation:
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, 8, seed=1)
    sites = make_sites(
        env.sites[:3],
        [splits.train.subset(parts[i]) for i in range(3)],
        training=TrainConfig(epochs=1),
        data=DataConfig(class_names=source.class_names),
    )
    settings = AggregatorSettings(
        valuation="loo", class_names=source.class_names, explain_method=None
    )
    return build_federation(
        sites=sites,
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=splits.val,
        w3=env.w3,
        coordinator=env.coordinator,
        aggregator=env.aggregator,
        settings=settings,
    )


def _close_commits(ledger: Ledger, round_id: int) -> None:
    deadline = ledger.get_round(round_id).commit_deadline
    now = next_block_timestamp(ledger.w3)
    if now <= deadline:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)


def test_a_lying_reply_gains_nothing_and_is_reported(embedded: ChainEnv, tmp_path: Path) -> None:
    fed = _federation(embedded, tmp_path)
    liar = fed.nodes[2]
    sent: list[dict[str, Any]] = []

    def exchange(kind: str, request: Mapping[str, Any], timeout: float) -> list[Received]:
        """The SuperNodes, in process: each node commits (answer returns at once: wait 0),
        the chain's clock passes the commit deadline, each node reveals and replies."""
        assert kind == "train" and timeout > 0
        r = int(request["round"])
        for node in fed.nodes:
            assert answer(node, r, wait_seconds=0).phase == "committed"
        _close_commits(fed.ledger, r)
        out = []
        for i, node in enumerate(fed.nodes):
            doc = answer(node, r, wait_seconds=0).to_config()
            assert doc["phase"] == "revealed"
            if node is liar:
                # another site's CID and ten times its samples: a bid for more weight
                doc["cid"] = fed.ledger.get_submission(r, fed.nodes[0].address).cid  # type: ignore[union-attr]
                doc["num_samples"] = doc["num_samples"] * 10
            sent.append(doc)
            out.append(Received(node_id=100 + i, reply=doc))
        # a SuperNode answering for an account that is no site and submitted nothing
        ghost = dict(sent[0], site=embedded.outsider.address)
        out.append(Received(node_id=999, reply=ghost))
        out.append(Received(node_id=555, reply=None, error="no reply within 30 s"))
        return out

    rounds = LedgerRounds(service=fed.service, exchange=exchange, folder=tmp_path / "flower")
    report = rounds.run_round()

    r = report.round
    assert r == 1 and report.phase == Phase.FINALIZED.label
    subs = fed.ledger.get_submissions(r)
    by_site = {s.site: s for s in subs}
    # The liar's weight is the chain's, from its on-chain sample count, not the reply's.
    liar_sub = by_site[liar.address]
    assert liar_sub.num_samples == len(liar.train) and liar_sub.weight > 0
    expected = onchain_weights([s.num_samples for s in subs], [s.score for s in subs])
    assert [s.weight for s in subs] == expected
    assert report.weights[liar.address] == liar_sub.weight
    claimed = [s.num_samples * (10 if s.site == liar.address else 1) for s in subs]
    assert onchain_weights(claimed, [s.score for s in subs]) != expected  # the lie would pay
    # The lie is reported with the fields that differ, and the chain's record next to it.
    checks = {d["node_id"]: d for d in report.replies}
    assert checks[102]["mismatches"] == ["cid", "num_samples"]
    assert checks[102]["chain_num_samples"] == liar_sub.num_samples
    assert checks[102]["chain_weight"] == liar_sub.weight
    assert checks[100]["truthful"] and checks[101]["truthful"]
    assert checks[999]["mismatches"] == ["phase"] and checks[999]["chain_weight"] == 0
    assert embedded.outsider.address not in report.weights
    ignored = {d["node_id"]: d for d in report.ignored}
    assert set(ignored) == {102, 999, 555}
    written = json.loads((tmp_path / "flower" / f"flower-round-{r}.json").read_text())
    assert written["replies"] == report.replies
    assert written["weights"][liar.address] == str(liar_sub.weight)
    # The round the lie could not touch verifies from the chain and the store alone.
    assert all(a.passed for a in verify_all(fed.ledger, fed.store))
