"""Attack a127 on real Anvil + IPFS: a site reveals an update blob whose safetensors header holds
a JSON array nested 100,000 deep (200 KB, well under the spec's read limit). fedtrail reads
every such header through ``fedtrail.safejson`` (nesting measured first, 32 levels at most), so
the aggregator scores the update ``MALFORMED`` and ``audit verify`` passes the round. The
independent reader parsed it with a plain ``json.loads``: its process talks to the chain through
web3, whose ``py_ecc`` raises Python's recursion limit to 100,000, and CPython's C parser then
overflowed the stack: the reader died of a segmentation fault (exit -11), no verdict for any
round. Now the reader measures a participant's document's nesting first and reads one nested
deeper than 32 levels (README *Blobs chosen by someone else*) as not decoding."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.ledger import commitment
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from tests.fixtures.chain import ChainEnv
from tests.scripts.test_huge_reveal_cid import READER, SAMPLES, _federation

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

DEPTH = 100_000


def _deep_blob() -> bytes:
    """A safetensors-shaped blob (8-byte header length, header JSON, no data) whose header
    holds one key with a list nested ``DEPTH`` deep."""
    header = b'{"__metadata__":{"fedtrail":"{}"},"deep":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    return struct.pack("<Q", len(header)) + header


def test_a_deeply_nested_update_header_is_malformed_for_every_reader(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> None:
    fed = _federation(anvil, ipfs_api, tmp_path, honest=3)
    ledger, service, store = fed.ledger, fed.service, fed.store
    deep = anvil.outsider
    ledger.register_site(anvil.coordinator, deep.address, "deep", SAMPLES)
    blob = _deep_blob()
    sha = hashlib.sha256(blob).hexdigest()
    assert service.open_next() == 1
    for node in fed.nodes:
        node.participate(1)  # commit
    ledger.commit_update(deep, 1, commitment(deep.address, 1, sha, SAMPLES))
    deadline = ledger.get_round(1).commit_deadline
    now = next_block_timestamp(ledger.w3)
    if now <= deadline:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)
    for node in fed.nodes:
        node.participate(1)  # store, reveal
    ledger.reveal_update(deep, 1, store.put(blob), sha, SAMPLES)
    for _ in range(3):
        if service.step() is not None:
            break
    assert ledger.get_round(1).phase == Phase.FINALIZED
    subs = {s.site: s for s in ledger.get_submissions(1)}
    assert (subs[deep.address].reason, subs[deep.address].weight) == (Reason.MALFORMED, 0)
    for acct in anvil.sites[:3]:
        assert subs[acct.address].reason == Reason.OK and subs[acct.address].weight > 0
    audit = verify_round(ledger, store, 1)
    assert [c.name for c in audit.checks if c.failed] == []

    deployment = tmp_path / "deployment.json"
    assert fed.deployment is not None
    deployment.write_text(fed.deployment.to_json())
    # its own process, as an auditor runs it (web3 imported: the recursion limit raised)
    ran = subprocess.run(
        [
            sys.executable,
            str(READER),
            "--rpc-url",
            str(anvil.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
            "--deployment",
            str(deployment),
            "--ipfs",
            "ipfs:" + ipfs_api,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, (ran.returncode, ran.stdout[-2000:], ran.stderr[-2000:])
    dumped = json.loads(ran.stdout[ran.stdout.index("\n{\n") + 1 :])  # --json: at the end
    results = {(x["round"], x["check"]): x for x in dumped["results"]}
    check = results[(1, "update.deep")]
    assert check["result"] == "PASS", check  # unusable and zeroed: consistent
    assert "nested deeper than 32 levels" in check["detail"], check
