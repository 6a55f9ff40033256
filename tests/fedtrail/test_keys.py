"""Encrypted keystores: the key never lands in clear on disk, the passphrase is checked."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fedtrail.errors import KeystoreError, WrongPassphrase
from fedtrail.keys import FAST_KDF_N, create_keystore, keystore_address, load_keystore


def test_keystore_round_trip_and_file_holds_no_clear_key(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    acct = create_keystore(path, "s3cret", kdf_n=FAST_KDF_N)
    text = path.read_text()
    assert acct.key.hex().removeprefix("0x") not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keystore_address(path) == acct.address
    assert load_keystore(path, "s3cret").key == acct.key


def test_wrong_passphrase_is_its_own_error(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    create_keystore(path, "s3cret", kdf_n=FAST_KDF_N)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        load_keystore(path, "guess")


def test_refuses_to_overwrite_and_empty_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    create_keystore(path, "s3cret", kdf_n=FAST_KDF_N)
    with pytest.raises(KeystoreError, match="already exists"):
        create_keystore(path, "other", kdf_n=FAST_KDF_N)
    with pytest.raises(KeystoreError, match="empty passphrase"):
        create_keystore(tmp_path / "b.json", "", kdf_n=FAST_KDF_N)


def test_missing_or_garbage_keystore(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="does not exist"):
        load_keystore(tmp_path / "none.json", "x")
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(KeystoreError, match="not a keystore"):
        load_keystore(bad, "x")


def test_a_keystore_path_that_is_a_directory_is_a_keystore_error(tmp_path: Path) -> None:
    # keystore_address raised IsADirectoryError: a traceback from `node status`
    with pytest.raises(KeystoreError, match="cannot be read"):
        keystore_address(tmp_path)
    with pytest.raises(KeystoreError, match="not a keystore"):
        load_keystore(tmp_path, "x")
