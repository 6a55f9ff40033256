"""Attack a126 on real Anvil + IPFS: sites reveal under a "CID" of kilobytes to a megabyte of NUL
bytes. The contract takes any non-empty ``string`` as a reveal's CID, and the commitment binds
the sha256 and the count, not the CID, so any site that committed may reveal under any text.

- The independent reader (``scripts/independent/reader.py``) asked its IPFS daemon for such a
  CID as it came: ~8 KB of text got an empty 400 (read as *missing*, not as the *invalid cid*
  that ``audit verify`` reads), ~100 KB a reset connection, which ended the reader with an
  uncaught ``requests.exceptions.ChunkedEncodingError``: one site's reveal (about 2.5M gas)
  left every round of the federation without an independent verdict. Fixed in the reader: a
  text that is not the shape of a canonical CID (README *Content not given*) is not given, as
  *invalid cid*, before any request, and a broken answer is *missing*, not a crash.
- The honest aggregator's round log repeated each chain CID, and JSON writes a NUL as
  ``\\u0000``: six bytes of log for each byte of calldata (the cheapest kind, 4 gas). Six
  data-less sites each revealing under 1,000,000 NUL bytes (14.1M gas each) made round 1's log
  36 MB, over ``MAX_LOG_BYTES`` (32 MiB): ``audit verify`` failed the honest round
  (``log.hash``), and the aggregator could not value round 2 (its standing reads round 1's log:
  ``ContentTooLarge``), so the federation stopped (a strict ``xfail`` until h-295). Fixed
  without a contract change: a log records a chain CID as it is only when it has a CID's shape
  (``fedtrail.protocol.cids``), else as ``sha256:`` and the hex sha256 of its UTF-8, in the
  writer, ``log.agrees`` and the reader alike; an older log's verbatim text still agrees.
- The reader read reveals through web3's decoder, which raised ``UnicodeDecodeError`` on a CID
  that is not UTF-8 (no verdict for any round); it now reads ``UpdateSubmitted`` raw."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_round
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.ledger import Ledger, commitment, to_bytes32
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.cids import logged_cid
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.roundlog import MAX_LOG_BYTES
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.store import IpfsStore
from tests.auditor.test_verify_components import _audit_with_log
from tests.fixtures.chain import ChainEnv

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"
REVEAL = Web3.keccak(text="revealUpdate(uint256,string,bytes32,uint64)")[:4]
SAMPLES = 150


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_a126", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _federation(anvil: ChainEnv, ipfs_api: str, tmp_path: Path, honest: int) -> Federation:
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, 8, seed=2)
    sites = make_sites(
        anvil.sites[:honest],
        [splits.train.subset(parts[i]) for i in range(honest)],
        training=TrainConfig(epochs=1),
        faults=[SiteFault()] * honest,
        data=DataConfig(class_names=source.class_names),
    )
    return build_federation(
        sites=sites,
        store=IpfsStore(ipfs_api),
        folder=tmp_path,
        validation=splits.val,
        w3=anvil.w3,
        coordinator=anvil.coordinator,
        aggregator=anvil.aggregator,
        settings=AggregatorSettings(seed=3, class_names=source.class_names, explain_method=None),
    )


def _reveal_raw(ledger: Ledger, site: LocalAccount, round_id: int, cid: bytes, sha: str) -> int:
    """``revealUpdate`` under ``cid`` as raw bytes (no client sends such a CID): the gas used."""
    w3 = ledger.w3
    data = REVEAL + abi_encode(
        ["uint256", "bytes", "bytes32", "uint64"], [round_id, cid, to_bytes32(sha), SAMPLES]
    )
    tx = {
        "to": ledger.address,
        "data": data,
        "gas": 16_000_000,
        "gasPrice": int(w3.eth.gas_price) * 2,
        "nonce": w3.eth.get_transaction_count(site.address),
        "chainId": ledger.chain_id,
        "value": 0,
    }
    signed = site.sign_transaction(tx)  # type: ignore[arg-type]
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction), poll_latency=0.01, timeout=120
    )
    assert receipt["status"] == 1, receipt
    return int(receipt["gasUsed"])


def _cid_bytes(cid: int | bytes) -> bytes:
    return b"\x00" * cid if isinstance(cid, int) else cid


def _round_with_cids(
    fed: Federation, anvil: ChainEnv, attackers: dict[LocalAccount, int | bytes]
) -> dict[str, int]:
    """Round 1: the honest nodes train and submit; each attacker (registered here, no data)
    commits to some bytes and reveals them under ``attackers[a]`` NUL bytes (or those bytes)
    as its CID."""
    ledger, service = fed.ledger, fed.service
    for i, acct in enumerate(attackers):
        ledger.register_site(anvil.coordinator, acct.address, f"x{i}", SAMPLES)
    assert service.open_next() == 1
    shas = {}
    for node in fed.nodes:
        node.participate(1)  # commit
    for acct in attackers:
        shas[acct] = hashlib.sha256(b"never published " + acct.address.encode()).hexdigest()
        ledger.commit_update(acct, 1, commitment(acct.address, 1, shas[acct], SAMPLES))
    deadline = ledger.get_round(1).commit_deadline
    now = next_block_timestamp(ledger.w3)
    if now <= deadline:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)
    for node in fed.nodes:
        node.participate(1)  # store, reveal
    gas: dict[str, int] = {
        a.address: _reveal_raw(ledger, a, 1, _cid_bytes(n), shas[a]) for a, n in attackers.items()
    }
    for _ in range(3):
        if service.step() is not None:
            break
    return gas


def _read_independently(
    reader: ModuleType, fed: Federation, anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> dict[tuple[Any, str], dict[str, Any]]:
    deployment = tmp_path / "deployment.json"
    assert fed.deployment is not None
    deployment.write_text(fed.deployment.to_json())
    reader.RESULTS.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(
            [
                "--rpc-url",
                str(anvil.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
                "--deployment",
                str(deployment),
                "--ipfs",
                "ipfs:" + ipfs_api,
            ]
        )
    return {(x["round"], x["check"]): x for x in reader.RESULTS}


def test_the_independent_reader_reads_a_long_cid_as_invalid_without_asking(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> None:
    fed = _federation(anvil, ipfs_api, tmp_path, honest=3)
    ledger = fed.ledger
    mid, long = anvil.sites[3], anvil.outsider  # 10 KB: an empty 400; 200 KB: a reset
    odd = anvil.sites[4]  # bytes that are not UTF-8, with a backslash (web3 refuses them)
    _round_with_cids(fed, anvil, {mid: 10_000, long: 200_000, odd: b"\xff\\Qm\x00"})
    assert ledger.get_round(1).phase == Phase.FINALIZED
    subs = {s.site: s for s in ledger.get_submissions(1)}
    for acct in (mid, long, odd):
        assert (subs[acct.address].reason, subs[acct.address].weight) == (Reason.MALFORMED, 0)
    for acct in anvil.sites[:3]:
        assert subs[acct.address].reason == Reason.OK and subs[acct.address].weight > 0
    audit = verify_round(ledger, fed.store, 1)
    assert [c.name for c in audit.checks if c.failed] == []
    # the log: a real CID as it is, any other text as its stand-in (a126)
    info = ledger.get_round(1)
    logged = {
        e["site"]: e["update"]["cid"]
        for e in json.loads(fed.store.get(info.log_cid, info.log_sha256))["sites"]
    }
    assert subs[odd.address].cid == "\\xff\\\\Qm\x00"  # the chain's text (*Strings*)
    for site, sub in subs.items():
        assert logged[site] == (sub.cid if len(sub.cid) == 46 else logged_cid(sub.cid))
    assert {len(logged[a.address]) for a in (mid, long, odd)} == {71}

    results = _read_independently(_reader(), fed, anvil, ipfs_api, tmp_path)  # no crash
    assert [k for k, x in results.items() if x["result"] == "FAIL"] == []
    for name in ("x0", "x1"):  # mid, long, as _round_with_cids registers them
        check = results[(1, f"update.{name}")]
        assert check["result"] == "PASS", check
        assert "invalid cid: '\\x00\\x00" in check["detail"], check
        assert len(check["detail"]) < 300, len(check["detail"])


def _log_cids(fed: Federation, cids: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        for e in doc["sites"]:
            e["update"]["cid"] = cids.get(e["site"], e["update"]["cid"])

    return edit


def test_a_log_before_the_rule_verifies_and_a_stand_in_of_another_text_does_not(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log written before the a126 rule repeats the chain's text as it is: still the chain's
    (both records are functions of the chain's text alone). Another text's stand-in is not."""
    fed = _federation(anvil, ipfs_api, tmp_path, honest=2)
    attacker = anvil.sites[2]
    _round_with_cids(fed, anvil, {attacker: 20_000})
    chain = {s.site: s.cid for s in fed.ledger.get_submissions(1)}[attacker.address]
    assert _audit_with_log(fed, 1, _log_cids(fed, {attacker.address: chain}), monkeypatch) == {}
    monkeypatch.undo()
    lie = logged_cid(chain[:-1])
    bad = _audit_with_log(fed, 1, _log_cids(fed, {attacker.address: lie}), monkeypatch)
    assert set(bad) == {"log.agrees"}, bad
    assert bad["log.agrees"] == (
        f"{attacker.address[:10]} cid {lie!r} != chain {logged_cid(chain)!r}"
    )


def test_six_sites_cannot_push_an_honest_log_past_what_readers_read(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> None:
    """a126: six reveals under 1,000,000 NUL bytes each made round 1's log 36 MB (each NUL
    written ``\\u0000``), over ``MAX_LOG_BYTES``: verify failed the honest round on
    ``log.hash`` (strict xfail before the log rule). Now each is logged as its 71-character
    ``sha256:`` stand-in, and verify and the independent reader pass the round."""
    fed = _federation(anvil, ipfs_api, tmp_path, honest=2)
    attackers = {a: 1_000_000 for a in [*anvil.sites[2:7], anvil.outsider]}
    gas = _round_with_cids(fed, anvil, attackers)
    assert all(g < 16_000_000 for g in gas.values()), gas  # one transaction each
    info = fed.ledger.get_round(1)
    assert info.phase == Phase.FINALIZED  # the honest aggregator wrote and pinned its log
    log = fed.store.get(info.log_cid, info.log_sha256, max_bytes=64 << 20)
    assert len(log) <= MAX_LOG_BYTES, f"round 1's log is {len(log):,} bytes"
    assert len(log) < 100_000, f"round 1's log is {len(log):,} bytes"
    audit = verify_round(fed.ledger, fed.store, 1)
    assert [c.name for c in audit.checks if c.failed] == []
    results = _read_independently(_reader(), fed, anvil, ipfs_api, tmp_path)
    assert [k for k, x in results.items() if x["result"] == "FAIL"] == []
