"""A round opened under a start-model CID the store cannot resolve (attack a67): the contract
pins the start model's sha256 to the last finalized global model, not its CID, so an
aggregator could name another encoding of the same bytes (a raw-codec CIDv1) that it publishes
only after the round, keeping every honest node out while its allies trained from the earlier
CID. The node now falls back to the last finalized round's global CID when the sha256 agrees."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from fedtrail.errors import StoreError
from fedtrail.simulation.faults import SiteFault
from fedtrail.storage.cid import check_cid
from fedtrail.storage.store import LocalStore
from tests.aggregator.test_service import _federation, close_commits
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _raw_cid(sha256_hex: str) -> str:
    """The raw-codec CIDv1 (base32) of bytes with this sha256: another name for the blob."""
    prefix = bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1, raw, sha2-256, 32 bytes
    body = base64.b32encode(prefix + bytes.fromhex(sha256_hex)).decode().lower().rstrip("=")
    return check_cid("b" + body)


@pytest.mark.parametrize("other", ["raw", "unrelated"])
def test_a_start_model_cid_nobody_serves_is_fetched_as_the_last_global(
    embedded: ChainEnv, tmp_path: Path, other: str
) -> None:
    """Round 1 is finalized; round 2 is opened under a CID the store does not hold (``raw``:
    the raw CIDv1 of the global model's bytes; ``unrelated``: the CID of other bytes, never
    stored). The node fetches the start model as round 1's global model (same sha256) and
    commits."""
    store = LocalStore(tmp_path / "store")
    fed = _federation(
        store,
        list(embedded.sites[:1]),
        [SiteFault()],
        tmp_path,
        w3=embedded.w3,
        coordinator=embedded.coordinator,
    )
    ledger, node = fed.ledger, fed.nodes[0]
    r1 = fed.service.open_next()
    node.participate(r1)
    close_commits(ledger, r1)
    node.participate(r1)
    for _ in range(3):
        if fed.service.step() is not None:
            break
    first = ledger.get_round(r1)
    assert first.phase.name == "FINALIZED"
    hidden = _raw_cid(first.global_sha256) if other == "raw" else _raw_cid("ab" * 32)
    real_open = ledger.open_round

    def open_round(signer: Any, cid: str, *args: Any, **kwargs: Any) -> Any:
        return real_open(signer, hidden, *args, **kwargs)

    ledger.open_round = open_round  # type: ignore[method-assign]
    r2 = fed.service.open_next()
    assert ledger.get_round(r2).start_cid == hidden != first.global_cid
    with pytest.raises(StoreError):
        store.get(hidden, first.global_sha256)
    record = node.participate(r2)
    assert record is not None and record.phase == "committed", record
