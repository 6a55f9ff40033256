"""`_daemons.listening_pids` and `cpu_seconds`, which `overhead.py` uses for the daemons' CPU in
a round: the process behind a listening port is found, and its CPU time grows with its work."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from scripts.bench._daemons import cpu_seconds, listening_pids

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_finds_the_process_listening_on_a_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listening_pids(port) == [os.getpid()]
    assert listening_pids(port) == []  # closed: nobody listens


def test_cpu_seconds_counts_the_work_done() -> None:
    before = cpu_seconds([os.getpid()])
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    spent = cpu_seconds([os.getpid()]) - before
    assert 0.2 <= spent <= 5.0
    assert cpu_seconds([2**22 + 12345]) == 0.0  # no such process
