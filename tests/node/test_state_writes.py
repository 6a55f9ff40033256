"""A site's durable writes per round (issue 18: each is a write, an fsync and a rename; the
encoded record and its chain-time measure were written one after the other)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fedtrail.node.daemon as daemon_mod
import fedtrail.storage.residual as residual_mod
from fedtrail.errors import ChainUnreachable
from fedtrail.node.daemon import NodeState
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _record_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Every crash-safe write as (file name, the round-1 phase state.json then holds)."""
    writes: list[tuple[str, str | None]] = []
    write = daemon_mod.atomic_write

    def recorded(path: Any, data: bytes) -> None:
        write(path, data)
        name = Path(path).name
        phase = None
        if name == "state.json":
            rec = NodeState.load(Path(path)).rounds.get(1)
            phase = None if rec is None else rec.phase
        writes.append((name, phase))

    monkeypatch.setattr(daemon_mod, "atomic_write", recorded)
    monkeypatch.setattr(residual_mod, "atomic_write", recorded)
    return writes


def test_a_site_writes_state_json_once_per_phase(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(embedded, tmp_path)
    assert world.round == 1
    node = world.node(0)
    writes = _record_writes(monkeypatch)
    assert node.participate(world.round).phase == "committed"
    states = [phase for name, phase in writes if name == "state.json"]
    assert states == ["encoded", "committed"], writes
    assert len(writes) == 4, writes  # the pending residual and blob, then state.json twice
    # the one encoded write carries the chain-time measure
    on_disk = NodeState.load(world.folder(0) / "state.json").rounds[world.round]
    assert on_disk.chain_seconds == node.state.rounds[world.round].chain_seconds
    writes.clear()
    world.close_commits()
    assert node.participate(world.round).phase == "revealed"
    assert [phase for name, phase in writes if name == "state.json"] == ["stored", "revealed"]


def test_the_encoded_record_is_written_when_the_clock_cannot_be_read(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(embedded, tmp_path)
    node = world.node(0)

    def unreachable(w3: Any) -> int:
        raise ChainUnreachable("the chain's clock cannot be read")

    monkeypatch.setattr(daemon_mod, "next_block_timestamp", unreachable)
    with pytest.raises(ChainUnreachable):
        node.participate(world.round)
    on_disk = NodeState.load(world.folder(0) / "state.json").rounds[world.round]
    assert on_disk.phase == "encoded"
    assert on_disk.chain_seconds == 0
