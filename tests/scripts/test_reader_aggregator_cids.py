"""The aggregator's own chain strings, read by the independent reader (h-295's leftover of a126):
``RoundOpened``'s start model and terms CIDs and ``RoundFinalized``'s global model and log CIDs
are any bytes the aggregator sends (the contract checks only that they are non-empty). The
reader took them from web3's event decoder, whose strict UTF-8 raised ``UnicodeDecodeError``
on one that is not UTF-8: the reader ended with no verdict for any round. It now reads them
raw, by the README's *Strings* rule, as it reads ``UpdateSubmitted``; such a CID is text no
store gives (*invalid cid*), and the check of what it names fails (or notes, in a round not
finalized) like any CID not given."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.ledger import Ledger, to_bytes32
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase
from tests.fixtures.chain import ChainEnv
from tests.scripts.test_huge_reveal_cid import _federation, _read_independently, _reader

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil, pytest.mark.ipfs]

ODD = b"\xffQm\\"
"""Not UTF-8, with a backslash: web3's decoder refuses it; *Strings* reads ``\\xffQm\\\\``."""


def _send_raw(ledger: Ledger, signer: LocalAccount, signature: str, args: list[Any]) -> None:
    """Calls ``signature`` with each ``string`` argument sent as the raw bytes given (no
    client sends text that is not UTF-8)."""
    name, params = signature.rstrip(")").split("(")
    types = ["bytes" if t == "string" else t for t in params.split(",")]
    w3 = ledger.w3
    tx = {
        "to": ledger.address,
        "data": Web3.keccak(text=signature)[:4] + abi_encode(types, args),
        "gas": 2_000_000,
        "gasPrice": int(w3.eth.gas_price) * 2,
        "nonce": w3.eth.get_transaction_count(signer.address),
        "chainId": ledger.chain_id,
        "value": 0,
    }
    signed = signer.sign_transaction(tx)  # type: ignore[arg-type]
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction), poll_latency=0.01, timeout=120
    )
    assert receipt["status"] == 1, (name, receipt)


def test_the_reader_reads_aggregator_cids_that_are_not_utf8_and_fails_their_checks(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = _federation(anvil, ipfs_api, tmp_path, honest=2)
    ledger, service = fed.ledger, fed.service

    def finalize_raw(signer: LocalAccount, round_id: int, **kw: Any) -> None:
        """The aggregator's finalize with its log's CID sent as bytes that are not UTF-8."""
        _send_raw(
            ledger,
            signer,
            "finalizeRound(uint256,string,bytes32,string,bytes32)",
            [
                round_id,
                kw["global_cid"].encode(),
                to_bytes32(kw["global_sha256"]),
                ODD + kw["log_cid"].encode(),
                to_bytes32(kw["log_sha256"]),
            ],
        )

    monkeypatch.setattr(ledger, "finalize_round", finalize_raw)
    assert service.open_next() == 1
    for node in fed.nodes:
        node.participate(1)
    deadline = ledger.get_round(1).commit_deadline
    advance_time(ledger.w3, deadline - next_block_timestamp(ledger.w3) + 1 + CLOCK_SLACK)
    for node in fed.nodes:
        node.participate(1)
    for _ in range(4):
        if ledger.get_round(1).phase == Phase.FINALIZED:
            break
        service.step()
    monkeypatch.undo()
    one = ledger.get_round(1)
    assert one.phase == Phase.FINALIZED and one.log_cid.startswith("\\xffQm\\\\"), one.log_cid
    # round 2 opened from round 1's global model under terms whose CID is not UTF-8
    terms = service.round_terms(2).to_bytes()
    _send_raw(
        ledger,
        anvil.aggregator,
        "openRound(string,bytes32,string,bytes32,uint64,uint64)",
        [
            one.global_cid.encode(),
            to_bytes32(one.global_sha256),
            ODD + fed.store.put(terms).encode(),
            to_bytes32(hashlib.sha256(terms).hexdigest()),
            600,
            600,
        ],
    )
    results = _read_independently(_reader(), fed, anvil, ipfs_api, tmp_path)
    log_check = results[(1, "log.sha256")]
    assert log_check["result"] == "FAIL" and "invalid cid" in log_check["detail"], log_check
    assert results[(1, "global.sha256")]["result"] == "PASS"  # the rest of the round still read
    terms_check = results[(2, "terms.sha256")]
    assert terms_check["result"] == "NOTE" and "invalid cid" in terms_check["detail"], terms_check
