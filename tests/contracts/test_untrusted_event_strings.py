"""Strings other parties put in events: a site chooses the CID it reveals, and the contract
takes any non-empty bytes as that ``string``. Every reader decodes the round's
``UpdateSubmitted`` events to learn the revealed updates, so one site's CID that is not UTF-8
must not make the round unreadable for the aggregator, the validators and the auditor."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedtrail.errors import InvalidCid
from fedtrail.ledger.records import commitment
from fedtrail.storage.cid import check_cid
from tests.contracts.federation import CID, Fed, h
from tests.fixtures.chain import ChainEnv


def reveal_raw_cid(
    w3: Web3, ledger: str, site: LocalAccount, round_id: int, cid: bytes, sha: str, n: int
) -> None:
    """``revealUpdate(round, cid, sha, n)`` with ``cid`` as raw bytes (web3 only encodes valid
    text), signed and sent by the site: what a hostile site can do with any client."""
    selector = Web3.keccak(text="revealUpdate(uint256,string,bytes32,uint64)")[:4]
    # a string and a bytes argument have the same ABI encoding
    args = abi_encode(
        ["uint256", "bytes", "bytes32", "uint64"], [round_id, cid, bytes.fromhex(sha), n]
    )
    tx = {
        "to": ledger,
        "data": "0x" + (bytes(selector) + args).hex(),
        "gas": 500_000,
        "gasPrice": int(w3.eth.gas_price),
        "nonce": int(w3.eth.get_transaction_count(site.address)),
        "chainId": int(w3.eth.chain_id),
        "value": 0,
    }
    tx_hash = w3.eth.send_raw_transaction(site.sign_transaction(tx).raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(tx_hash)["status"] == 1


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"Qm\xc3(" + b"x" * 40])
def test_a_revealed_cid_that_is_not_utf8_leaves_the_round_readable(
    embedded: ChainEnv, raw: bytes
) -> None:
    """Attack: one site reveals a CID of invalid UTF-8. Before, decoding the round's
    ``UpdateSubmitted`` events raised (``cannot decode a UpdateSubmitted event``) for the whole
    round: ``get_submissions`` failed, so the aggregator could not value or cancel it, no node
    could score it and ``audit verify`` could not read it, for good. Now the other sites'
    updates read as before and the hostile CID reads as text no CID check accepts (its update
    is then unusable, as any invalid CID is)."""
    fed = Fed(embedded, n_sites=3)
    round_id = fed.open()
    for i, site in enumerate(fed.sites):
        fed.ledger.commit_update(
            site, round_id, commitment(site.address, round_id, h(f"u{i}"), 100)
        )
    fed.past_commit(round_id)
    fed.reveal(round_id, fed.sites[0], "u0")
    fed.reveal(round_id, fed.sites[1], "u1")
    reveal_raw_cid(fed.w3, fed.ledger.address, fed.sites[2], round_id, raw, h("u2"), 100)

    subs = {s.site: s for s in fed.ledger.get_submissions(round_id)}
    assert len(subs) == 3
    assert subs[fed.sites[0].address].cid == CID
    assert subs[fed.sites[1].address].cid == CID
    hostile = subs[fed.sites[2].address]
    assert hostile.revealed and hostile.sha256 == h("u2").removeprefix("0x")
    assert isinstance(hostile.cid, str) and hostile.cid
    hostile.cid.encode("utf-8")  # text any log, report or JSON document can carry
    with pytest.raises(InvalidCid):
        check_cid(hostile.cid)
    # two different byte strings never read as one CID
    assert fed.ledger.update_cids(round_id)[fed.sites[2].address] == hostile.cid
