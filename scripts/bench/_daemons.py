"""Start Anvil and the IPFS daemon on free loopback ports for a benchmark, and stop them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def daemons() -> Iterator[tuple[str, str]]:
    """(rpc url, IPFS API multiaddr) of a fresh Anvil and js-ipfs, stopped on exit.

    Anvil mines a block every second and each transaction at once (scripts/anvil.sh's default;
    ``FEDTRAIL_ANVIL_BLOCK_TIME`` / ``FEDTRAIL_ANVIL_MINING`` override it): the chain's clock runs
    between transactions, so a round's deadline comes without anyone transacting.
    """
    run = Path(tempfile.mkdtemp(prefix="fedtrail-bench-"))
    env = {
        **os.environ,
        "FEDTRAIL_ANVIL_PORT": str(free_port()),
        "FEDTRAIL_ANVIL_DIR": str(run / "anvil"),
        "FEDTRAIL_IPFS_PORT": str(free_port()),
        "IPFS_PATH": str(run / "ipfs"),
        "FEDTRAIL_ANVIL_BLOCK_TIME": os.environ.get("FEDTRAIL_ANVIL_BLOCK_TIME", "1"),
        "FEDTRAIL_ANVIL_MINING": os.environ.get("FEDTRAIL_ANVIL_MINING", "mixed"),
    }
    anvil, ipfs = ROOT / "scripts" / "anvil.sh", ROOT / "scripts" / "ipfs_daemon.sh"
    try:
        subprocess.run([str(anvil), "start"], env=env, check=True, capture_output=True)
        subprocess.run([str(ipfs), "start"], env=env, check=True, capture_output=True)
        yield (
            f"http://127.0.0.1:{env['FEDTRAIL_ANVIL_PORT']}",
            f"/ip4/127.0.0.1/tcp/{env['FEDTRAIL_IPFS_PORT']}/http",
        )
    finally:
        subprocess.run([str(ipfs), "stop"], env=env, check=False, capture_output=True)
        subprocess.run([str(anvil), "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(run, ignore_errors=True)  # the chain and repo (~50 MB a bench run)
