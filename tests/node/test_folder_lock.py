"""One daemon per site folder: ``node run`` holds ``node.lock`` while it watches the chain, so
a second daemon started on the same folder (which would train, commit and rewrite state.json
beside the first) is refused, and a daemon killed with SIGKILL leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedtrail.node.daemon import LOCK_NAME, NodeStateError, folder_lock
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World


@pytest.fixture
def world(embedded: ChainEnv, tmp_path: Path) -> World:
    return World(embedded, tmp_path)


def test_a_second_daemon_on_the_same_folder_is_refused(world: World) -> None:
    node = world.node(0)
    refused = pytest.raises(NodeStateError, match=rf"another node daemon \(pid {os.getpid()}\)")
    with folder_lock(node.folder), refused:
        node.run(once=True)
    assert world.ledger.get_submission(world.round, node.address) is None


def test_the_lock_is_released_on_exit_and_when_its_holder_is_killed(tmp_path: Path) -> None:
    with folder_lock(tmp_path):
        pass
    with folder_lock(tmp_path):  # released on exit: taken again
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from fedtrail.node.daemon import folder_lock\n"
            "with folder_lock(Path(sys.argv[1])):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(NodeStateError, match=rf"pid {holder.pid}\)"), folder_lock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with folder_lock(tmp_path):  # the kernel dropped the dead holder's lock
        pass


def test_a_link_planted_as_the_lock_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep", encoding="utf-8")
    (tmp_path / LOCK_NAME).symlink_to(target)
    with pytest.raises(NodeStateError, match="cannot open the folder lock"), folder_lock(tmp_path):
        pass
    assert target.read_text(encoding="utf-8") == "keep"
