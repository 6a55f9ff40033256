"""CIDs a site can put on chain that name no blob, against a real IPFS daemon: a directory, a
bare dag-pb node. ``get`` raises ``NotAFile`` (no retry can help) and a round's candidates mark
that update MALFORMED while the others are used. On the parent commit both were a generic
``StoreError``, which ``fetch_update`` let through: the aggregator logged "will retry" at every
poll and never valued the round, and so did every peer validator."""

from __future__ import annotations

import hashlib
import io
import warnings
from types import SimpleNamespace
from typing import Any

import ipfshttpclient
import pytest
import torch

from fedtrail.errors import NotAFile
from fedtrail.ledger import Submission
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.storage.codec import encode_update
from fedtrail.storage.store import IpfsStore
from fedtrail.valuation.candidates import revealed_candidates

warnings.filterwarnings("ignore", category=FutureWarning)  # ipfshttpclient's urllib3 `strict`

pytestmark = pytest.mark.ipfs

SPEC = ModelSpec()
ANY_SHA = hashlib.sha256(b"").hexdigest()


def _no_file_cids(api: str) -> dict[str, str]:
    client = ipfshttpclient.Client(api)
    client.files.mkdir("/hostile-dir", parents=True)
    client.files.write("/hostile-dir/a.bin", io.BytesIO(b"x" * 1000), create=True)
    return {
        "directory": str(client.files.stat("/hostile-dir")["Hash"]),
        "bare dag-pb node": str(client.object.new()["Hash"]),
    }


def test_a_cid_that_names_no_file_raises_not_a_file(ipfs_api: str) -> None:
    store = IpfsStore(ipfs_api, timeout=10, probe_timeout=2)
    for what, cid in _no_file_cids(ipfs_api).items():
        with pytest.raises(NotAFile, match="not a file"):
            store.get(cid, ANY_SHA)
        assert what


def test_an_update_cid_naming_no_file_is_malformed_and_the_round_goes_on(ipfs_api: str) -> None:
    store = IpfsStore(ipfs_api, timeout=10, probe_timeout=2)
    gen = torch.Generator().manual_seed(0)
    shapes = federated_state(initial_model(SPEC, 0))
    delta = {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in shapes.items()}
    blob = encode_update(delta, spec=SPEC, round=1).blob
    refs = [(store.put(blob), hashlib.sha256(blob).hexdigest())]
    refs += [(cid, ANY_SHA) for cid in _no_file_cids(ipfs_api).values()]
    subs = [
        Submission(1, f"0x{i + 1:040x}", cid, sha, 100, 0, 0, 0, "", i + 1, True)
        for i, (cid, sha) in enumerate(refs)
    ]
    ledger: Any = SimpleNamespace(get_submissions=lambda round_id: list(subs))
    # valuation settings recording no thresholds: no privacy spend check (no events to read)
    terms: Any = SimpleNamespace(
        duplicates=DuplicateRule(), privacy=None, valuation={"method": "loo", "metric": "auc"}
    )
    pairs = revealed_candidates(ledger, store, 1, terms=terms, spec=SPEC)
    assert [c.status for _, c in pairs] == [Reason.OK, Reason.MALFORMED, Reason.MALFORMED]
    assert all("not a file" in c.detail for _, c in pairs[1:])
