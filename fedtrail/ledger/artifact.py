"""The compiled FederationLedger (ABI, bytecode, immutable ranges) as committed in
``contracts/build/``; reading it needs no chain.

The artifact is found as package data, ``fedtrail/schemas/FederationLedger.json``, a link to
``contracts/build/FederationLedger.json``: a source checkout reads the build file through the
link, and a wheel carries a copy (the ``schemas/*.json`` package-data rule picks it up).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fedtrail.errors import ConfigError

ARTIFACT_RESOURCE = "schemas/FederationLedger.json"


@dataclass(frozen=True)
class Artifact:
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    immutable_ranges: list[tuple[int, int]]
    sha256: str

    def matches(self, code: bytes) -> bool:
        """Whether deployed runtime ``code`` is this build (immutables masked out)."""
        expected = bytearray.fromhex(self.deployed_bytecode.removeprefix("0x"))
        actual = bytearray(code)
        if len(actual) != len(expected):
            return False
        for start, length in self.immutable_ranges:
            actual[start : start + length] = expected[start : start + length]
        return actual == expected

    @classmethod
    def load(cls, path: Path | None = None) -> Artifact:
        """The artifact at ``path``, by default the one shipped with fedtrail."""
        try:
            if path is None:
                raw = resources.files("fedtrail").joinpath(ARTIFACT_RESOURCE).read_bytes()
            else:
                raw = Path(path).read_bytes()
            doc = json.loads(raw)
            return cls(
                abi=doc["abi"],
                bytecode=doc["bytecode"],
                deployed_bytecode=doc["deployedBytecode"],
                immutable_ranges=[(int(a), int(b)) for a, b in doc["immutableRanges"]],
                sha256=hashlib.sha256(raw).hexdigest(),
            )
        except FileNotFoundError as exc:
            where = path or f"fedtrail/{ARTIFACT_RESOURCE}"
            raise ConfigError(
                f"contract artifact {where} is missing: run scripts/compile_contracts.py"
            ) from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"contract artifact is not a FederationLedger build: {exc}") from exc
