"""A node reads a round's terms from the store once (issue 18: the checks before training and
the privacy plan each fetched and parsed them; unusable terms are still refused, as
tests/node/test_daemon.py checks)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

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
