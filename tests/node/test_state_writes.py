"""A site's durable writes per round (issue 18: each is a write, an fsync and a rename; the
encoded record and its chain-time measure were written one after the other)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import fedtrail.node.daemon as daemon_mod
import fedtrail.storage.residual as residual_mod
from fedtrail.errors import ChainUnreachable
from fedtrail.node.daemon import NodeState, RoundRecord
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
    # the pending blob, then state.json twice; compression "none" keeps no residual file
    assert [name for name, _ in writes] == ["update-1.safetensors", "state.json", "state.json"]
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


def _history(n: int) -> NodeState:
    return NodeState(
        {
            r: RoundRecord(
                round=r,
                phase="revealed",
                sha256=f"{r:064x}",
                num_samples=100 + r,
                val_auc=0.5 + r / 1000,
                val_recall_calibrated=[0.25, None],
            )
            for r in range(1, n + 1)
        }
    )


def _records(state: NodeState) -> dict[int, dict[str, Any]]:
    return {r: asdict(rec) for r, rec in state.rounds.items()}


def test_a_state_file_in_the_older_layout_loads_and_is_rewritten_a_line_a_round(
    tmp_path: Path,
) -> None:
    """Nodes before issue 18's change wrote state.json indented; an upgraded node reads it as
    it was and writes it back as the same document, one line a round (and older nodes read
    that: it is the same JSON)."""
    old = _history(3)
    path = tmp_path / "state.json"
    doc = {"rounds": {str(k): asdict(v) for k, v in sorted(old.rounds.items())}}
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    loaded = NodeState.load(path)
    assert _records(loaded) == _records(old)
    loaded.rounds[3].phase = "skipped"
    loaded.save(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 + 3 and lines[0] == '{"rounds": {' and lines[-1] == "}}"
    assert json.loads(path.read_text(encoding="utf-8"))["rounds"]["3"]["phase"] == "skipped"
    assert _records(NodeState.load(path)) == _records(loaded)
    empty = tmp_path / "empty.json"
    NodeState().save(empty)
    assert NodeState.load(empty).rounds == {}


def test_a_write_encodes_only_the_records_changed_since_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """state.json is rewritten about four times a round; each write re-encoded every past
    round's record, so its cost grew with the node's history. A record unchanged since the
    last write keeps its line; any change, an old round's or one made in place, is written."""
    state = _history(50)
    path = tmp_path / "state.json"
    state.save(path)
    encoded: list[int] = []
    real = daemon_mod.asdict

    def counted(rec: Any) -> dict[str, Any]:
        encoded.append(rec.round)
        return real(rec)

    monkeypatch.setattr(daemon_mod, "asdict", counted)
    state.rounds[50].phase = "skipped"  # the current round
    state.rounds[7].personal_sha256 = "ab" * 32  # a finished round (personalisation)
    recall = state.rounds[9].val_recall_calibrated
    assert recall is not None
    recall[0] = 0.75  # changed in place
    state.rounds[51] = RoundRecord(round=51, phase="encoded")
    state.save(path)
    assert sorted(encoded) == [7, 9, 50, 51]
    assert _records(NodeState.load(path)) == _records(state)
    encoded.clear()
    state.save(path)
    assert encoded == []
    del state.rounds[51]
    state.save(path)
    assert _records(NodeState.load(path)) == _records(state) and encoded == []
    state.rounds[11].train_seconds = 2
    state.save(path)
    state.rounds[11].train_seconds = 2.0  # equal, another type: written as it is now
    state.save(path)
    assert encoded == [11, 11]
    assert type(NodeState.load(path).rounds[11].train_seconds) is float
