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


def listening_pids(port: int) -> list[int]:
    """This user's processes that listen on TCP ``port`` (Linux ``/proc``; empty elsewhere or
    when none is found): the daemon behind an RPC URL, whatever script started it."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local address "HEX_IP:HEX_PORT", state 0A = LISTEN, inode in column 10
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:
            continue  # gone, or not ours
    return sorted(pids)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and their reaped children so far (``/proc/PID/stat``
    fields 14-17); a process that has gone counts 0. Read before and after a span, the
    difference is what the daemons spent in it, which wall time under other jobs' load is not."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; field 3 is [0]
        total += sum(int(x) for x in fields[11:15])
    return total / tick
