"""Deployment.from_file: a file that is not a deployment is a one-line ConfigError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedtrail.errors import ConfigError
from fedtrail.ledger.records import Deployment

_GOOD = {
    "address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "aggregator": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "artifact_sha256": "c944956f4e8db0959be713b1d2596d2c99bbe9b3ffe2f3851f0482fd37435c69",
    "block_number": 2,
    "chain_id": 31337,
    "coordinator": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "min_round_window": 10,
    "reputation_alpha": 300000,
    "rpc_url": "http://127.0.0.1:8545",
    "tx_hash": "2f45556b3f1a161bb6b81c9bebed0b6e9f4249253aded04a308264129d100b6d",
}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(_GOOD), encoding="utf-8")
    deployment = Deployment.from_file(path)
    assert deployment.address == _GOOD["address"]
    assert Deployment.from_file(_write(tmp_path, deployment.to_json())) == deployment


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "other.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not JSON"):
        Deployment.from_file(_write(tmp_path, b"\xb1\xff\x00garbage"))


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a JSON list, not an object"):
        Deployment.from_file(_write(tmp_path, "[1, 2]"))


def test_missing_and_unknown_fields_are_named(tmp_path: Path) -> None:
    raw = {k: v for k, v in _GOOD.items() if k != "chain_id"} | {"adress": "0x0"}
    with pytest.raises(ConfigError) as info:
        Deployment.from_file(_write(tmp_path, json.dumps(raw)))
    message = str(info.value)
    assert "missing ['chain_id']" in message
    assert "unknown ['adress']" in message
    assert "__init__" not in message


def test_optional_rpc_url_may_be_absent(tmp_path: Path) -> None:
    raw = {k: v for k, v in _GOOD.items() if k != "rpc_url"}
    assert Deployment.from_file(_write(tmp_path, json.dumps(raw))).rpc_url == ""


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Deployment.from_file(tmp_path / "absent.json")


def test_registrations_name_each_round_as_at_its_finalization() -> None:
    """``Registrations.names_at``: the last name before the round's finalization; a round not
    finalized gets every registration; ``former_names``: earlier names, oldest first, once."""
    from fedtrail.ledger import Registrations

    a, b = "0xA", "0xB"
    regs = Registrations(
        events=(
            ((1, 0), a, "hospital-a"),
            ((1, 1), b, "clinic"),
            ((5, 0), a, "hospital-y"),  # after round 1's finalization (block 3)
            ((7, 2), a, "hospital-a"),
            ((8, 0), a, "hospital-z"),
        ),
        finalized={1: (3, 4), 2: (7, 2)},
    )
    assert regs.names_at(1) == {a: "hospital-a", b: "clinic"}
    assert regs.names_at(2) == {a: "hospital-a", b: "clinic"}  # the event at its position
    assert regs.names_at(3) == {a: "hospital-z", b: "clinic"}  # not finalized: all so far
    assert regs.former_names({a: "hospital-z", b: "clinic"}) == {a: ["hospital-a", "hospital-y"]}


def test_registry_history_answers_each_round_from_one_read() -> None:
    """``RegistryHistory``: the sites registered when a round opened (a removal before it
    drops a site, a registration after it does not count), the coordinator's moves after the
    opening up to a timestamp (stopping at the first block stamped later), and the names a
    site held from the valuation to the finalization."""
    from fedtrail.ledger import Registrations, RegistryHistory, RegistryMove

    a, b, c = "0xA", "0xB", "0xC"
    history = RegistryHistory(
        registrations=Registrations(
            events=(((1, 0), a, "alpha"), ((1, 1), b, "beta"), ((6, 0), b, "beta-2")),
            finalized={1: (8, 0)},
        ),
        changes=(
            ((2, 0), "removed", a, None),  # before round 1 opened
            ((5, 0), "cap", b, 40),
            ((7, 0), "budget", c, 9),
            ((9, 0), "removed", b, None),
        ),
        opened={1: (3, 0), 2: (7, 5)},
        valued={1: (5, 1)},
        stamps={5: 50, 7: 70, 9: 90},
    )
    assert history.participants_at_open(1) == {b}
    assert history.participants_at_open(2) == {b}  # b's second registration keeps b in
    assert history.participants_at_open(3) == set()  # never opened
    assert history.registry_moves(1, 70) == [
        RegistryMove(b, "cap", 40, 5, 50),
        RegistryMove(c, "budget", 9, 7, 70),
    ]
    assert history.registry_moves(2, 1000) == [RegistryMove(b, "removed", None, 9, 90)]
    assert history.registry_moves(3, 1000) == []
    assert history.names_while_finalizing(1) == {a: {"alpha"}, b: {"beta", "beta-2"}}
    assert history.names_while_finalizing(2) == {}  # not valued, not finalized
    assert history.names_at(1) == {a: "alpha", b: "beta-2"}


def test_checksum_refuses_mixed_case_that_fails_eip55() -> None:
    """A mixed-case address is a checksummed one: one whose case does not match its digits is
    a typo, refused (web3 6 takes it as the address it spells). Lower or upper case carries no
    checksum and is taken, with or without 0x."""
    from fedtrail.ledger.records import checksum

    good = _GOOD["coordinator"]
    assert checksum(good) == good
    assert checksum(good.lower()) == good
    assert checksum("0x" + good[2:].upper()) == good
    assert checksum(good[2:].lower()) == good
    bad = good[:2] + good[2].swapcase() + good[3:]  # 'f' -> 'F'
    assert bad != good and bad.lower() == good.lower()
    with pytest.raises(ConfigError, match="fails its EIP-55 checksum"):
        checksum(bad)
    with pytest.raises(ConfigError, match="not an Ethereum address"):
        checksum("0x1234")
