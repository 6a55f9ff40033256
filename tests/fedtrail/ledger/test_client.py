"""Building a Ledger: the constructor makes no RPC call; ``connect`` checks the chain."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from fedtrail.chain import advance_time, block_timestamp, connect, dev_account, next_block_timestamp
from fedtrail.errors import ChainUnreachable, ConfigError, ContractNotFound, RoundStateError
from fedtrail.ledger import MAX_SITE_SAMPLES, Artifact, Deployment, Ledger, commitment
from fedtrail.protocol.codes import Reason
from tests.fixtures.chain import ChainEnv, free_port

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "contracts" / "build" / "FederationLedger.json"
SOURCE = ROOT / "contracts" / "FederationLedger.sol"
ADDRESS = "0x" + "12" * 20


def test_the_shipped_artifact_is_the_committed_build() -> None:
    assert Artifact.load() == Artifact.load(BUILD)


def test_constructing_a_ledger_makes_no_rpc_call() -> None:
    dead = Web3(HTTPProvider(f"http://127.0.0.1:{free_port()}", request_kwargs={"timeout": 2}))
    ledger = Ledger(dead, ADDRESS.lower(), 31337, Artifact.load())
    assert ledger.address == Web3.to_checksum_address(ADDRESS)
    with pytest.raises(ChainUnreachable):
        Ledger.connect(dead, ADDRESS)


def test_connect_checks_the_code_at_the_address(embedded: ChainEnv) -> None:
    deployed = embedded.deploy()
    ledger = Ledger.connect(embedded.w3, deployed.address, from_block=3)
    assert (ledger.address, ledger.chain_id, ledger.from_block) == (
        deployed.address,
        deployed.chain_id,
        3,
    )
    with pytest.raises(ContractNotFound, match="no contract"):
        Ledger.connect(embedded.w3, embedded.outsider.address)


# ------------------------------------------------------------------ commitments


def test_commitment_is_keccak_of_the_abi_encoded_tuple() -> None:
    site, sha = "0x" + "ab" * 20, "cd" * 32
    expected = keccak(
        abi_encode(
            ["address", "uint256", "bytes32", "uint64"],
            [Web3.to_checksum_address(site), 7, bytes.fromhex(sha), 42],
        )
    ).hex()
    assert commitment(site, 7, sha, 42) == expected
    assert commitment(site, 7, "0x" + sha, 42) == expected  # either hex spelling
    # every field is bound: a different sender, round, hash or count gives another commitment
    others = {
        commitment("0x" + "ac" * 20, 7, sha, 42),
        commitment(site, 8, sha, 42),
        commitment(site, 7, "ce" * 32, 42),
        commitment(site, 7, sha, 43),
    }
    assert expected not in others and len(others) == 4


@pytest.mark.parametrize(("round_id", "n"), [(0, 1), (2**256, 1), (1, -1), (1, 2**64)])
def test_commitment_refuses_values_the_contract_cannot_take(round_id: int, n: int) -> None:
    with pytest.raises(ConfigError):
        commitment("0x" + "ab" * 20, round_id, "cd" * 32, n)


def test_commitment_opens_on_the_contract(embedded: ChainEnv) -> None:
    """The helper and revealUpdate compute the same hash: a reveal of exactly the committed
    values is accepted, and the contract's view recomputes the same commitment."""
    ledger = embedded.deploy(min_round_window=1)
    coord, agg, site = embedded.coordinator, embedded.aggregator, embedded.sites[0]
    ledger.register_site(coord, site.address, "s", MAX_SITE_SAMPLES)
    r, _ = ledger.open_round(
        agg,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=5,
        reveal_seconds=45,
    )
    c = commitment(site.address, r, "33" * 32, MAX_SITE_SAMPLES)
    ledger.commit_update(site, r, c)
    assert ledger.get_submissions(r, include_unrevealed=True)[0].commitment == c
    advance_time(embedded.w3, 6)
    ledger.reveal_update(site, r, "QmU", "33" * 32, MAX_SITE_SAMPLES)
    (sub,) = ledger.get_submissions(r)
    assert (sub.commitment, sub.num_samples, sub.revealed) == (c, MAX_SITE_SAMPLES, True)


# ------------------------------------------------------------------ transition and records


def test_python_reason_mirrors_the_contract_enum() -> None:
    source = SOURCE.read_text(encoding="utf-8")
    body = re.search(r"enum Reason \{([^}]*)\}", source)
    assert body is not None
    members = [m.strip() for m in body.group(1).split(",") if m.strip()]
    snake = [re.sub(r"(?<!^)(?=[A-Z])", "_", m).upper() for m in members]
    assert snake == [r.name for r in Reason]
    assert [r.value for r in Reason] == list(range(len(members)))
    assert all(r.description for r in Reason)


def test_deploy_records_the_minimum_round_window(embedded: ChainEnv, tmp_path: Path) -> None:
    ledger, deployment = Ledger.deploy(embedded.w3, embedded.coordinator, min_round_window=120)
    assert deployment.min_round_window == ledger.min_round_window() == 120
    path = tmp_path / "deployment.json"
    path.write_text(deployment.to_json(), encoding="utf-8")
    assert Deployment.from_file(path) == deployment
    with pytest.raises(ConfigError):
        Ledger.deploy(embedded.w3, embedded.coordinator, min_round_window=-1)


def test_a_minimum_window_no_round_can_meet_is_refused_before_deploying(
    embedded: ChainEnv,
) -> None:
    """`chain deploy --min-round-window 18446744073709551615` deployed a ledger where no round
    can ever open (the aggregator's windows stop at MAX_ROUND_WINDOW; the contract's deadline
    now + 2 windows overflows 64 bits). Refused, saying why, with nothing sent; the longest
    window the aggregator opens is still a minimum a round can meet."""
    from fedtrail.protocol.codes import MAX_ROUND_WINDOW

    w3, coord = embedded.w3, embedded.coordinator
    nonce = w3.eth.get_transaction_count(coord.address)
    for window in (2**64 - 1, 2**63, MAX_ROUND_WINDOW + 1):
        with pytest.raises(ConfigError, match="no round can open"):
            Ledger.deploy(w3, coord, min_round_window=window)
    assert w3.eth.get_transaction_count(coord.address) == nonce
    ledger, _ = Ledger.deploy(w3, coord, min_round_window=MAX_ROUND_WINDOW)
    r, _ = ledger.open_round(
        coord,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=MAX_ROUND_WINDOW,
        reveal_seconds=MAX_ROUND_WINDOW,
    )
    assert ledger.get_round(r).reveal_deadline - ledger.get_round(r).commit_deadline == (
        MAX_ROUND_WINDOW
    )


@pytest.mark.anvil
def test_transactions_are_checked_against_the_pending_blocks_time(anvil_url: str) -> None:
    """The commit deadline has passed for the block a transaction would land in, not yet for
    the latest one (its clock lags): a late commitment is refused before it is sent (no nonce
    used, no gas spent), and a reveal is accepted without waiting for a new block."""
    w3 = connect(anvil_url)
    coord, early, late = dev_account(0), dev_account(3), dev_account(4)
    ledger, _ = Ledger.deploy(w3, coord, min_round_window=1)
    for site in (early, late):
        ledger.register_site(coord, site.address, "s", 100)
    r, _ = ledger.open_round(
        coord,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=5,
        reveal_seconds=100,
    )
    deadline = ledger.get_round(r).commit_deadline
    ledger.commit_update(early, r, commitment(early.address, r, "33" * 32, 10))
    w3.provider.make_request("evm_setNextBlockTimestamp", [deadline + 3])  # type: ignore[arg-type]
    assert block_timestamp(w3) <= deadline < next_block_timestamp(w3)

    nonce = w3.eth.get_transaction_count(late.address, "pending")
    with pytest.raises(RoundStateError, match="closed for commitments"):
        ledger.commit_update(late, r, commitment(late.address, r, "44" * 32, 10))
    assert w3.eth.get_transaction_count(late.address, "pending") == nonce

    tx = ledger.reveal_update(early, r, "QmU", "33" * 32, 10)
    assert w3.eth.get_block(tx.block_number)["timestamp"] == deadline + 3
    assert [s.site for s in ledger.get_submissions(r)] == [early.address]


@pytest.mark.anvil
def test_a_transaction_is_one_batch_then_the_send_that_answers_its_receipt_with_web3s_fees(
    anvil_url: str,
) -> None:
    """The gas estimate, the nonce and the fees go in one JSON-RPC batch (they were four
    requests before the send and the receipt); the send is ``eth_sendRawTransactionSync``,
    whose answer is the receipt (no receipt poll: issue 18); the fees are web3's default rule:
    maxFeePerGas = the node's priority fee + 2 x the latest block's base fee."""
    w3 = connect(anvil_url)
    coord, site = dev_account(0), dev_account(5)
    ledger, _ = Ledger.deploy(w3, coord)
    w3.eth.chain_id  # noqa: B018 (cached by web3 from here on, as in any long-lived client)
    sent: list[str] = []
    provider: Any = w3.provider
    single, batch = provider._make_request, provider.make_batch_request
    provider._make_request = lambda method, data: sent.append(method) or single(method, data)
    provider.make_batch_request = lambda calls: sent.append("batch") or batch(calls)
    tx = ledger.register_site(coord, site.address, "s", 100)
    assert sent == ["batch", "eth_sendRawTransactionSync"]
    got = w3.eth.get_transaction(tx.tx_hash)
    base = w3.eth.get_block(tx.block_number - 1)["baseFeePerGas"]
    assert got["maxFeePerGas"] == got["maxPriorityFeePerGas"] + 2 * base
    assert ledger.get_site(site.address) is not None


def _shape(value: Any) -> Any:
    """``value`` with its container and leaf types, so equal values of other types differ."""
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_shape(v) for v in value])
    return (type(value).__name__, value)


def test_every_view_reads_as_web3s_call_returns_it(embedded: ChainEnv) -> None:
    """Views are decoded with eth_abi, not web3's return normalizers: every view function of
    the contract gives what web3's ``call()`` gives, value and type (checksummed addresses,
    lists for arrays, tuples for structs, bytes), on a ledger with a revealed round."""
    ledger = embedded.deploy()
    coord, agg, site = embedded.coordinator, embedded.aggregator, embedded.sites[0]
    ledger.register_site(coord, site.address, "0x" + "ab" * 20, 100)  # a name like an address
    ledger.register_site(coord, embedded.sites[1].address, "other", 50)
    r, _ = ledger.open_round(
        agg,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=300,
        reveal_seconds=300,
    )
    ledger.commit_update(site, r, commitment(site.address, r, "33" * 32, 10))
    advance_time(embedded.w3, 301)
    ledger.reveal_update(site, r, "QmU", "33" * 32, 10)
    args = {"uint256": r, "address": site.address}
    compared = 0
    for entry in ledger.artifact.abi:
        if entry.get("type") != "function" or entry.get("stateMutability") not in ("view", "pure"):
            continue
        call = getattr(ledger._fn, entry["name"])(*(args[i["type"]] for i in entry["inputs"]))
        try:
            expected = call.call()
        except Exception:
            continue  # reverts here (no peer round): _view raises the ledger's error for it
        assert _shape(ledger._view(call)) == _shape(expected), entry["name"]
        compared += 1
    assert compared >= 20


@pytest.mark.anvil
def test_events_read_from_the_nodes_hex_equal_web3s_formatted_logs(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP the logs are read as the node sends them (hex), not through web3's log
    formatters: every event of a round reads the same both ways, filters included."""
    ledger = anvil.deploy()
    coord, agg, site = anvil.coordinator, anvil.aggregator, anvil.sites[0]
    ledger.register_site(coord, site.address, "0x" + "ab" * 20, 100)
    r, _ = ledger.open_round(
        agg,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=300,
        reveal_seconds=300,
    )
    ledger.commit_update(site, r, commitment(site.address, r, "33" * 32, 10))
    advance_time(anvil.w3, 301)
    ledger.reveal_update(site, r, "QmU", "33" * 32, 10)
    names = [e["name"] for e in ledger.artifact.abi if e.get("type") == "event"]
    reads = [(n, {}) for n in names] + [("UpdateSubmitted", {"round": r, "site": site.address})]
    raw = [ledger.events(n, argument_filters=f) for n, f in reads]
    assert sum(len(events) for events in raw) >= 6
    monkeypatch.setattr(
        "fedtrail.ledger.client._get_logs", lambda w3, params: list(w3.eth.get_logs(params))
    )
    assert [ledger.events(n, argument_filters=f) for n, f in reads] == raw


# ------------------------------------------------------------------ events


@pytest.mark.parametrize("name", ["0x" + "ab" * 20, "ab" * 20, "0x" + "AB" * 20])
def test_a_string_argument_that_looks_like_an_address_reads_as_written(
    embedded: ChainEnv, name: str
) -> None:
    """Only ``address`` arguments are checksummed: a site registered under a name of 40 hex
    digits keeps that name in its SiteRegistered event, so the registry ``audit verify``
    compares a round's log with (``names_at_finalize``) agrees with ``getSite``."""
    ledger = embedded.deploy()
    site = embedded.sites[0]
    ledger.register_site(embedded.coordinator, site.address, name, 100)
    info = ledger.get_site(site.address)
    assert info is not None and info.name == name
    assert ledger.events("SiteRegistered")[-1].args["name"] == name
    assert ledger.names_at_finalize(1) == {site.address: name}
    assert len(ledger.events("SiteRegistered", argument_filters={"name": name})) == 1


def test_event_filters_of_none_match_anything_and_unknown_names_are_refused(
    embedded: ChainEnv,
) -> None:
    """As web3's ``argument_filters``: a filter of None is no filter (it used to drop every
    event once the decoded values were compared); a name the event does not have is a
    caller's mistake, refused rather than answered with no events."""
    ledger, _ = Ledger.deploy(embedded.w3, embedded.coordinator)
    site = embedded.sites[0]
    ledger.register_site(embedded.coordinator, site.address, "a", 10)
    everything = ledger.events("SiteRegistered")
    assert len(everything) == 1
    assert ledger.events("SiteRegistered", argument_filters={"site": None}) == everything
    with pytest.raises(ConfigError, match="no argument"):
        ledger.events("SiteRegistered", argument_filters={"round": 1})


def test_event_words_decode_as_eth_abi_decodes_them() -> None:
    """The static-word fast path of event decoding gives eth_abi's values and refuses what
    eth_abi refuses (nonzero padding, a bool above 1), for every type it reads itself."""
    import os

    from eth_abi.abi import decode as abi_decode

    from fedtrail.ledger.client import _word_decode

    words = [
        bytes(32),
        b"\xff" * 32,
        bytes(12) + os.urandom(20),
        bytes(31) + b"\x01",
        bytes(31) + b"\x02",
        bytes(30) + b"\x01\x00",
        os.urandom(32),
        b"\x01" + bytes(31),
    ]
    for typ in ("address", "bytes32", "bool", "uint8", "uint16", "uint64", "uint256"):
        for word in words:
            try:
                want: Any = abi_decode([typ], word)[0]
            except Exception:
                with pytest.raises(ValueError):
                    _word_decode(typ, word)
                continue
            got = _word_decode(typ, word)
            if typ == "address":
                assert got.lower() == want.lower()
            else:
                assert got == want and type(got) is type(want)


def test_a_view_of_static_structs_decodes_as_eth_abi_decodes_it() -> None:
    """``getSubmissions``' answer (an array of structs of static words) read word by word gives
    what eth_abi's decode gives, as web3 returns it; any other layout (an offset other than
    32, bytes after the words, a length the bytes do not hold) or a word eth_abi refuses goes
    to eth_abi: the same values, or the same refusal."""
    import os
    from types import SimpleNamespace

    from eth_abi.abi import decode as abi_decode
    from eth_abi.abi import encode as abi_encode

    from fedtrail.ledger.artifact import Artifact
    from fedtrail.ledger.client import _returned_by, _static_rows

    abi = next(e for e in Artifact.load().abi if e.get("name") == "getSubmissions")
    call = SimpleNamespace(abi=abi)
    typ = "(address,bool,bytes32,bytes32,uint64,uint32,uint8,uint64)[]"
    for n in (0, 1, 3, 100):
        items = [
            (
                "0x" + os.urandom(20).hex(),
                k % 2 == 0,
                os.urandom(32),
                os.urandom(32),
                int.from_bytes(os.urandom(8), "big"),
                k,
                k % 7,
                2**64 - 1 - k,
            )
            for k in range(n)
        ]
        raw = abi_encode([typ], [items])
        assert _static_rows(abi["outputs"], raw) is not None
        want = [
            tuple(Web3.to_checksum_address(v) if j == 0 else v for j, v in enumerate(item))
            for item in abi_decode([typ], raw)[0]
        ]
        assert _returned_by(call, raw, strict=True) == want
    one = abi_encode([typ], [items[:1]])
    word = 32 * 8
    bad_bool = one[:64] + one[64 : 64 + 32] + bytes(31) + b"\x02" + one[128:]
    bad_address = one[:64] + b"\x01" + one[65:]
    moved = (64).to_bytes(32, "big") + bytes(32) + one[32:]  # offset 64, a padding word
    for raw in (bad_bool, bad_address, moved, one + bytes(32), one[: 64 + word - 32]):
        assert _static_rows(abi["outputs"], raw) is None
        try:
            want = abi_decode([typ], raw)[0]
        except Exception as exc:
            with pytest.raises(type(exc)):
                _returned_by(call, raw, strict=True)
            continue
        assert _returned_by(call, raw, strict=True) == [
            tuple(Web3.to_checksum_address(v) if j == 0 else v for j, v in enumerate(item))
            for item in want
        ]
