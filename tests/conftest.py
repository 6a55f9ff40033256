"""Shared fixtures. Real daemons (Anvil, IPFS) are started by the plugins below on free
loopback ports, or taken from FEDTRAIL_TEST_RPC_URL / FEDTRAIL_TEST_IPFS_API when set."""

pytest_plugins = [
    "tests.fixtures.chain",
    "tests.fixtures.ipfs",
]
