"""Shared fixtures. Real daemons (Anvil, IPFS) are started by the plugins below on free
loopback ports, or taken from FEDTRAIL_TEST_RPC_URL / FEDTRAIL_TEST_IPFS_API when set."""

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
