"""What the ledger client hands out and takes in: plain frozen records, plus the conversions
between our hex digests / addresses and the contract's bytes32 / checksummed addresses."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from web3 import Web3

from fedtrail.errors import ConfigError
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.weights import SCORE_SCALE


@dataclass(frozen=True)
class RoundInfo:
    id: int
    phase: Phase
    deadline: int
    opened_at: int
    submission_count: int
    start_cid: str
    start_sha256: str
    global_cid: str
    global_sha256: str
    log_cid: str
    log_sha256: str


@dataclass(frozen=True)
class Submission:
    """One site's update in one round. ``score``/``reason``/``weight`` are 0 until valued."""

    round: int
    site: str
    cid: str
    sha256: str
    num_samples: int
    score: int
    reason: int
    weight: int


@dataclass(frozen=True)
class SiteInfo:
    address: str
    registered: bool
    name: str
    reputation: int
    valued_rounds: int


@dataclass(frozen=True)
class Valuation:
    """What the aggregator posts for one update: score in [0, SCORE_SCALE] and a reason code."""

    site: str
    score: int
    reason: int

    def __post_init__(self) -> None:
        if not 0 <= self.score <= SCORE_SCALE:
            raise ConfigError(f"score {self.score} outside 0..{SCORE_SCALE}")
        if not 0 <= self.reason <= 255:
            raise ConfigError(f"reason code {self.reason} outside 0..255")


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class LedgerEvent:
    name: str
    block_number: int
    tx_hash: str
    log_index: int
    args: dict[str, Any]


@dataclass(frozen=True)
class Deployment:
    """What an operator needs to reach a deployed ledger; written as JSON by ``chain deploy``."""

    address: str
    chain_id: int
    block_number: int
    tx_hash: str
    coordinator: str
    aggregator: str
    reputation_alpha: int
    artifact_sha256: str
    rpc_url: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Deployment:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**raw)
        except FileNotFoundError as exc:
            raise ConfigError(f"deployment file {path} does not exist") from exc
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(
                f"deployment file {path} is not a fedtrail deployment: {exc}"
            ) from exc


def to_bytes32(hex_digest: str) -> bytes:
    """A 64-hex-digit sha256 (optionally 0x-prefixed) as the contract's bytes32."""
    digest = hex_digest.removeprefix("0x")
    if len(digest) != 64:
        raise ConfigError(f"expected a 32-byte hex digest, got {hex_digest!r}")
    try:
        return bytes.fromhex(digest)
    except ValueError as exc:
        raise ConfigError(f"not a hex digest: {hex_digest!r}") from exc


def from_bytes32(value: bytes) -> str:
    return bytes(value).hex()


def checksum(address: str) -> str:
    if not Web3.is_address(address):
        raise ConfigError(f"not an Ethereum address: {address!r}")
    return str(Web3.to_checksum_address(address))
