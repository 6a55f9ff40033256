"""The per-round explanation log: canonical bytes, schema validation, reading.

The aggregator writes it and the auditor reads it, so it lives in the shared core. Its sha256 is
taken over canonical JSON (sorted keys, no whitespace, no NaN), the same bytes stored on IPFS.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema

from fedtrail.errors import FedtrailError

FORMAT = "fedtrail.explanation-log/1"


class InvalidLog(FedtrailError):
    """An explanation log that is not valid JSON or does not follow the schema."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("fedtrail").joinpath("schemas/explanation-log.schema.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def _clean(value: Any) -> Any:
    """NaN/inf are not JSON: a metric that could not be computed is recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def validate(doc: dict[str, Any]) -> None:
    try:
        jsonschema.validate(doc, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InvalidLog(f"explanation log invalid at {where}: {exc.message}") from None


def to_bytes(doc: dict[str, Any]) -> bytes:
    """Validated canonical bytes of ``doc`` (what is stored and hashed)."""
    clean = _clean(doc)
    validate(clean)
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def from_bytes(blob: bytes) -> dict[str, Any]:
    """Parses and validates an (untrusted) log fetched from the store."""
    try:
        doc = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidLog(f"explanation log is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidLog("explanation log is not a JSON object")
    validate(doc)
    return doc
