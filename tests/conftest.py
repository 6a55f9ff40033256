"""Shared fixtures. Real daemons (Anvil, IPFS) are started by the plugins below on free
loopback ports, or taken from FEDTRAIL_TEST_RPC_URL / FEDTRAIL_TEST_IPFS_API when set.

Order independence: the session shares one Anvil node, and a federation's round-1 start model
is derived from its contract's address, i.e. from the deployer and its nonce. So that adding or
reordering tests changes no other test's start model, every test deploys from a deployer of its
own: the ``anvil`` / ``any_chain`` coordinator and the ``deployer`` fixture are a key derived from
the test's node id (nonce 0 at the start), and development account 0, which many tests still
deploy from, has its nonce pinned per test and per wider-scoped fixture. Details in
``tests/fixtures/chain.py``; ``tests/fixtures/test_chain.py`` proves it."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator

import pytest
import torch

pytest_plugins = [
    "pytester",  # tests/fixtures/test_chain.py runs the chain fixtures in an inner pytest
    "tests.fixtures.chain",
    "tests.fixtures.ipfs",
]

# The settings of the daemon pair a run_tests.sh worker uses (see pytest_configure).
_PAIR_SETTINGS = (
    "FEDTRAIL_TEST_RPC_URL",
    "FEDTRAIL_TEST_IPFS_API",
    "FEDTRAIL_ANVIL_PORT",
    "FEDTRAIL_ANVIL_DIR",
    "FEDTRAIL_IPFS_PORT",
    "IPFS_PATH",
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (scripts/run_tests.sh with FEDTRAIL_TEST_WORKERS > 1) each worker
    gwK runs against a daemon pair of its own: run_tests.sh exports every pair's settings with a
    ``_GWK`` suffix, and the worker makes its pair's the plain variables (so the fixtures, and the
    scripts and CLIs tests start, see only its own Anvil and IPFS) and drops the others. A worker
    with no pair of its own starts its own daemons (the fixtures do when no URL is set)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    suffix = "_" + str(workerinput["workerid"]).upper()
    for name in _PAIR_SETTINGS:
        if name + suffix in os.environ:
            os.environ[name] = os.environ[name + suffix]
        elif name in ("FEDTRAIL_TEST_RPC_URL", "FEDTRAIL_TEST_IPFS_API"):
            # `pytest -n N` by hand beside one shared pair: this worker starts its own instead.
            os.environ.pop(name, None)
    pair = re.compile(rf"^({'|'.join(_PAIR_SETTINGS)})_GW\d+$")
    for key in [k for k in os.environ if pair.match(k)]:
        del os.environ[key]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (scripts/run_tests.sh: ``--dist loadfile --no-loadscope-reorder``,
    each file one unit of work, handed out in collection order) the files with a test marked
    ``slow`` go first, then the others by number of tests, most first: the minutes-long tests
    (the Flower demo, the demo scripts, the soak) no longer start last while the other worker
    sits idle. Every worker collects, and so orders, the same way; a serial run keeps pytest's
    order."""
    if not hasattr(config, "workerinput"):
        return
    per_file: dict[str, int] = {}
    slow: set[str] = set()
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        per_file[path] = per_file.get(path, 0) + 1
        if item.get_closest_marker("slow") is not None:
            slow.add(path)

    def order(item: pytest.Item) -> tuple[bool, int]:
        path = item.nodeid.split("::", 1)[0]
        return path not in slow, -per_file[path]

    items.sort(key=order)  # stable: a file's tests keep their order


@pytest.fixture(autouse=True)
def _fedtrail_logger_restored() -> Iterator[None]:
    """Every test leaves the ``fedtrail`` logger as it found it. A daemon command run in
    process (``node run``, ``aggregator run`` through CliRunner) sets that logger's level and
    adds a stderr and a file handler for good, as its own process should; left behind, a later
    test in the same pytest process would see the level it set and write into an earlier test's
    log file. Under pytest-xdist a worker runs another set of files before each test than the
    serial run does, so such state made outcomes depend on the worker count."""
    logger = logging.getLogger("fedtrail")
    level, handlers = logger.level, list(logger.handlers)
    propagate, disabled = logger.propagate, logger.disabled
    yield
    for handler in [h for h in logger.handlers if h not in handlers]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(level)
    logger.propagate, logger.disabled = propagate, disabled


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Training tests run on one thread: faster on a shared 2-core machine, and deltas are
    bit-reproducible only for a fixed thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
