"""One daemon per site folder: ``node run`` holds ``node.lock`` while it watches the chain, so
a second daemon started on the same folder (which would train, commit and rewrite state.json
beside the first) is refused, and a daemon killed with SIGKILL leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedtrail.errors import FolderLocked
from fedtrail.fsutil import folder_lock
from fedtrail.node.daemon import LOCK_NAME
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World


def _lock(folder: Path) -> Any:
    return folder_lock(folder, LOCK_NAME, daemon="node daemon", harm="test")


@pytest.fixture
def world(embedded: ChainEnv, tmp_path: Path) -> World:
    return World(embedded, tmp_path)


def test_a_second_daemon_on_the_same_folder_is_refused(world: World) -> None:
    node = world.node(0)
    refused = pytest.raises(FolderLocked, match=rf"another node daemon \(pid {os.getpid()}\)")
    with _lock(node.folder), refused:
        node.run(once=True)
    assert world.ledger.get_submission(world.round, node.address) is None


def test_the_lock_is_released_on_exit_and_when_its_holder_is_killed(tmp_path: Path) -> None:
    with _lock(tmp_path):
        pass
    with _lock(tmp_path):  # released on exit: taken again
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from fedtrail.fsutil import folder_lock\n"
            "with folder_lock(Path(sys.argv[1]), 'node.lock', daemon='d', harm='h'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLocked, match=rf"pid {holder.pid}\)"), _lock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with _lock(tmp_path):  # the kernel dropped the dead holder's lock
        pass


def test_a_link_planted_as_the_lock_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep", encoding="utf-8")
    (tmp_path / LOCK_NAME).symlink_to(target)
    with pytest.raises(FolderLocked, match="cannot open the folder lock"), _lock(tmp_path):
        pass
    assert target.read_text(encoding="utf-8") == "keep"


def test_a_second_aggregator_on_the_same_folder_is_refused(world: World) -> None:
    """The aggregator's folder holds its evidence and valuation files and its run opens,
    values and finalizes rounds: a second ``aggregator run`` there is refused the same way."""
    from fedtrail.aggregator.service import LOCK_NAME as AGGREGATOR_LOCK

    service = world.fed.service
    held = folder_lock(service.folder, AGGREGATOR_LOCK, daemon="aggregator", harm="test")
    with held, pytest.raises(FolderLocked, match=r"another aggregator \(pid \d+\)"):
        service.run(rounds=1)
