"""Encrypted keystores (Ethereum v3 JSON, scrypt) for site, aggregator and coordinator keys.

The private key exists in clear only in memory. Passphrases come from an environment variable
or an interactive prompt, never from a config file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from fedtrail.errors import KeystoreError, WrongPassphrase

if TYPE_CHECKING:  # eth_account loads in ~1 s: imported where used, so CLI help stays fast
    from eth_account.signers.local import LocalAccount

PASSPHRASE_ENV = "FEDTRAIL_PASSPHRASE"
# Light scrypt parameters make tests and demos fast; production keystores use the default.
FAST_KDF_N = 2**12


def create_keystore(
    path: Path, passphrase: str, *, account: LocalAccount | None = None, kdf_n: int | None = None
) -> LocalAccount:
    """Writes a new (or the given) account to ``path``, encrypted, readable by the owner only."""
    from eth_account import Account

    if not passphrase:
        raise KeystoreError("an empty passphrase would leave the key unprotected")
    path = Path(path)
    if path.exists():
        raise KeystoreError(f"{path} already exists; refusing to overwrite a key")
    acct: LocalAccount = account or Account.create()
    kwargs = {"iterations": kdf_n} if kdf_n else {}
    doc = Account.encrypt(acct.key, passphrase, kdf="scrypt", **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    return acct


def keystore_address(path: Path) -> str:
    """The account address stored in clear in the keystore (no passphrase needed)."""
    from web3 import Web3

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return str(Web3.to_checksum_address("0x" + str(doc["address"]).removeprefix("0x")))
    except FileNotFoundError as exc:
        raise KeystoreError(f"keystore {path} does not exist") from exc
    except OSError as exc:  # a directory, no permission
        raise KeystoreError(f"keystore {path} cannot be read: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise KeystoreError(f"{path} is not a keystore file") from exc


def load_keystore(path: Path, passphrase: str) -> LocalAccount:
    """Decrypts the keystore; ``WrongPassphrase`` when the passphrase does not fit."""
    from eth_account import Account

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise KeystoreError(f"keystore {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"{path} is not a keystore file: {exc}") from exc
    try:
        key = Account.decrypt(doc, passphrase)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassphrase(f"wrong passphrase for keystore {path}") from None
        raise KeystoreError(f"{path} is not a valid keystore: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise KeystoreError(f"{path} is not a valid keystore: {exc}") from None
    account: LocalAccount = Account.from_key(key)
    return account


def passphrase_from_env() -> str | None:
    return os.environ.get(PASSPHRASE_ENV) or None
