"""A site's personalised model on its own disk: ``personal.safetensors`` beside a small
``personal.json`` that says which global model it was fine-tuned from and how.

The node writes it (after a finalized round whose terms ask for personalisation); ``fedtrail
explain --personal FOLDER`` reads it back with the task from the node folder's ``config.toml``.
Both live here, in the core, because the roles may not import each other. The model never
leaves the site: nothing here talks to a store or a chain.

The blob is the codec's canonical model encoding (``encode_model``; its round is the global
model's round), so the same fine-tuned tensors give the same bytes; ``personal.json`` holds its
sha256, and a reader refuses a blob that does not match (a write cut short between the two).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Final

import torch

from fedtrail.errors import ConfigError
from fedtrail.fsutil import atomic_write, read_toml
from fedtrail.ml.catalog import check_class_names, load_source
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.task import Task
from fedtrail.storage.codec import decode_model, encode_model

__all__ = [
    "PERSONAL_INFO",
    "PERSONAL_MODEL",
    "PersonalInfo",
    "load_personal",
    "read_personal",
    "save_personal",
    "site_task",
]

PERSONAL_MODEL: Final = "personal.safetensors"
PERSONAL_INFO: Final = "personal.json"
_CONFIG: Final = "config.toml"


@dataclass(frozen=True, kw_only=True)
class PersonalInfo:
    """Where a personalised model came from."""

    round: int
    """The round whose global model was fine-tuned."""
    global_sha256: str
    sha256: str
    """sha256 of ``personal.safetensors``."""
    method: str
    steps: int
    lr: float
    bias: tuple[float, ...] | None
    """The intercept of the calibrated decision the site validated with (the round log's),
    None for the plain decision."""
    decision_from: str


def save_personal(
    folder: Path,
    state: Mapping[str, torch.Tensor],
    *,
    spec: ModelSpec,
    info: PersonalInfo,
) -> PersonalInfo:
    """Writes the model, then its info (each atomically); returns the info with the blob's
    sha256 filled in."""
    blob = encode_model(state, spec=spec, round=info.round)
    done = PersonalInfo(**{**asdict(info), "sha256": hashlib.sha256(blob).hexdigest()})
    atomic_write(Path(folder) / PERSONAL_MODEL, blob)
    doc = asdict(done)
    doc["bias"] = None if done.bias is None else list(done.bias)
    atomic_write(Path(folder) / PERSONAL_INFO, json.dumps(doc, indent=2).encode("utf-8"))
    return done


def load_personal(folder: Path, spec: ModelSpec) -> tuple[dict[str, torch.Tensor], PersonalInfo]:
    """The personalised model of a node folder and its info; :class:`ConfigError` when there
    is none or the two files disagree."""
    blob, info = read_personal(folder)
    state, _ = decode_model(blob, spec=spec, expected_round=info.round)
    return state, info


def read_personal(folder: Path) -> tuple[bytes, PersonalInfo]:
    """The bytes of a node folder's personalised model, checked against its info's sha256."""
    folder = Path(folder)
    try:
        doc = json.loads((folder / PERSONAL_INFO).read_text(encoding="utf-8"))
        blob = (folder / PERSONAL_MODEL).read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{folder} holds no personalised model (the node writes one after a finalized "
            "round whose terms ask for personalisation)"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{folder / PERSONAL_INFO} is corrupt: {exc}") from None
    try:
        if not isinstance(doc, dict) or set(doc) != {f.name for f in fields(PersonalInfo)}:
            raise TypeError("unexpected fields")
        bias = doc["bias"]
        info = PersonalInfo(**{**doc, "bias": None if bias is None else tuple(map(float, bias))})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{folder / PERSONAL_INFO} is corrupt: {exc}") from None
    if hashlib.sha256(blob).hexdigest() != info.sha256:
        raise ConfigError(
            f"{folder / PERSONAL_MODEL} is not the model {PERSONAL_INFO} describes (a write cut "
            "short?); the node writes it again after the next finalized round"
        )
    return blob, info


def site_task(folder: Path) -> Task:
    """The task a node folder's ``config.toml`` fixes: its ``[model]`` settings and its
    ``[data]`` class names (empty: the data source's own)."""
    path = Path(folder) / _CONFIG
    try:
        raw = read_toml(path)
    except FileNotFoundError:
        raise ConfigError(f"{folder} is not a node folder (no {_CONFIG})") from None
    model, data = raw.get("model", {}), raw.get("data", {})
    if not isinstance(model, dict) or not isinstance(data, dict):
        raise ConfigError(f"{path}: [model] and [data] must be tables")
    try:
        spec = ModelSpec(**model)
    except TypeError as exc:
        raise ConfigError(f"{path}: bad [model]: {exc}") from None
    names = data.get("class_names") or ()
    if names:
        names = check_class_names(tuple(names), f"{path} data.class_names")
    else:
        names = load_source(str(data.get("path", "bundled")), Path(folder)).class_names
    return Task(spec=spec, class_names=tuple(names))
