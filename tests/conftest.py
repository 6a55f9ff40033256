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

from collections.abc import Iterator

import pytest
import torch

pytest_plugins = [
    "pytester",  # tests/fixtures/test_chain.py runs the chain fixtures in an inner pytest
    "tests.fixtures.chain",
    "tests.fixtures.ipfs",
]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Training tests run on one thread: faster on a shared 2-core machine, and deltas are
    bit-reproducible only for a fixed thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
