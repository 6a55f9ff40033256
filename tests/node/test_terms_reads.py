"""A node reads a round's terms from the store once (issue 18: the checks before training and
the privacy plan each fetched and parsed them; unusable terms are still refused, as
tests/node/test_daemon.py checks)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fedtrail.ledger.test_batch_reads import _sent
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _count_gets(world: World, monkeypatch: pytest.MonkeyPatch, node: Any) -> Counter[str]:
    gets: Counter[str] = Counter()
    get = node.store.get

    def counted(cid: str, sha256: str, **kwargs: Any) -> bytes:
        gets[cid] += 1
        return bytes(get(cid, sha256, **kwargs))

    monkeypatch.setattr(node.store, "get", counted)
    return gets


def test_a_rounds_terms_are_read_once_by_a_node(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(embedded, tmp_path)
    node = world.node(0)
    gets = _count_gets(world, monkeypatch, node)
    terms_cid = world.ledger.get_round(world.round).terms_cid
    assert world.full(node).phase == "revealed"
    assert gets[terms_cid] == 1, gets


_TRANSACTION = {
    "batch:4",
    "eth_sendRawTransaction",
    "eth_sendRawTransactionSync",
    "eth_getTransactionReceipt",
    "eth_chainId",
}


def test_each_step_reads_the_round_in_one_batch(
    anvil: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step reads the round, the site's commitment, the chain's clock, the last finalized
    round, the privacy account, the site's cap and the round's peer record (session 62: the
    terms' mode and score windows against the chain's, a request of its own when added) in one
    batch (issue 18: five to nine
    requests before; the cap since a66). The commit step reads the clock after training (its
    chain-time measure) in the commitment's preflight batch (issue 18: a round trip before),
    and asks it again after its commitment (whether reveals are open yet); the reveal step
    reads nothing else beside its transaction."""
    world = World(anvil, tmp_path)
    node = world.node(0)
    sent = _sent(anvil.w3)
    assert node.participate(world.round).phase == "committed"
    assert sent == [
        "batch:11",  # the round, the commitment, the clock, ..., the peer record
        "batch:5",  # the commitment's estimate, nonce, fees, and the clock after training
        "eth_sendRawTransactionSync",
        "eth_getBlockByNumber",  # the clock after the commitment
    ], sent
    world.close_commits()
    sent.clear()
    assert node.participate(world.round).phase == "revealed"
    assert sent[0] == "batch:11"
    assert [m for m in sent[1:] if m not in _TRANSACTION] == [], sent
    assert sent.count("eth_sendRawTransactionSync") == 1  # its answer is the receipt (issue 18)
    assert "eth_getTransactionReceipt" not in sent
