"""Where a site's images come from and what their classes are called.

A data source is a shipped dataset's name (``pneumonia``, ``retina``; ``bundled`` is the old name
of ``pneumonia``), a MedMNIST-format ``.npz`` path or a folder with one sub-folder per class.
Class names never live in code: a shipped dataset's names come from its description file
(``fedtrail/data/<file>.json``, format ``fedtrail.dataset/1``); a user's ``.npz`` may carry a
description beside it (``scans.npz`` -> ``scans.json``, only ``class_names`` is required); a
folder's classes are its sub-folder names; otherwise they are ``class 0``, ``class 1``, ...
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import (
    ImageDataset,
    Splits,
    image_folder_classes,
    load_image_folder,
    load_medmnist_npz,
)

__all__ = [
    "DESCRIPTION_FORMAT",
    "DataSource",
    "ShippedDataset",
    "check_class_names",
    "load_source",
    "resolve_source",
    "shipped_datasets",
]

DESCRIPTION_FORMAT: Final = "fedtrail.dataset/1"
_ALIASES: Final = {"bundled": "pneumonia"}
_MAX_NAME: Final = 64


@dataclass(frozen=True)
class ShippedDataset:
    """A dataset inside the package, as its description file tells."""

    name: str
    path: Path
    title: str
    class_names: tuple[str, ...]


def check_class_names(names: Any, where: str) -> tuple[str, ...]:
    """Class names as a tuple: non-empty, distinct, printable strings of at most 64 characters
    (they end up in round terms, HTML captions and terminal output)."""
    if not isinstance(names, list | tuple) or not names:
        raise ConfigError(f"{where}: class names must be a non-empty list of strings")
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
            raise ConfigError(
                f"{where}: class name {name!r} must be a non-empty string of at most "
                f"{_MAX_NAME} characters"
            )
        if not name.isprintable():
            raise ConfigError(f"{where}: class name {name!r} holds control characters")
        out.append(name)
    if len(set(out)) != len(out):
        raise ConfigError(f"{where}: class names repeat: {out}")
    return tuple(out)


def _read_description(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read dataset description {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"dataset description {path} is not a JSON object")
    fmt = doc.get("format", DESCRIPTION_FORMAT)
    if fmt != DESCRIPTION_FORMAT:
        raise ConfigError(f"dataset description {path} is {fmt!r}, not {DESCRIPTION_FORMAT}")
    return doc


def shipped_datasets() -> dict[str, ShippedDataset]:
    """Name -> shipped dataset, from the description files in ``fedtrail/data/``."""
    folder = Path(str(resources.files("fedtrail").joinpath("data")))
    out: dict[str, ShippedDataset] = {}
    for desc in sorted(folder.glob("*.json")):
        doc = _read_description(desc)
        name = str(doc["name"])
        out[name] = ShippedDataset(
            name=name,
            path=folder / str(doc["file"]),
            title=str(doc.get("title", name)),
            class_names=check_class_names(doc.get("class_names"), str(desc)),
        )
    return out


def resolve_source(source: str | os.PathLike[str], base: Path | None = None) -> Path:
    """The file or folder a data source names (a shipped name, or a path relative to ``base``)."""
    text = str(source)
    shipped = shipped_datasets()
    name = _ALIASES.get(text, text)
    if name in shipped:
        return shipped[name].path
    p = Path(text).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    if not p.exists():
        raise ConfigError(
            f"data source {text!r}: {p} does not exist, and it is not a shipped dataset "
            f"({', '.join(sorted(shipped))})"
        )
    return p


@dataclass(frozen=True, eq=False)
class DataSource:
    """A loaded data source: its splits (``val``/``test`` None for an image folder) and the
    names of its classes, one per class id."""

    path: Path
    train: ImageDataset
    val: ImageDataset | None
    test: ImageDataset | None
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def splits(self) -> Splits:
        """The three splits; an image folder has no validation or test split."""
        if self.val is None or self.test is None:
            raise ConfigError(f"{self.path} is an image folder: it has no val/test splits")
        return Splits(train=self.train, val=self.val, test=self.test)


def _names_for(path: Path, num_classes: int) -> tuple[str, ...]:
    for name, ds in shipped_datasets().items():
        del name
        if ds.path.resolve() == path.resolve():
            names = ds.class_names
            break
    else:
        desc = path.with_suffix(".json")
        if desc.is_file():
            names = check_class_names(_read_description(desc).get("class_names"), str(desc))
        else:
            return tuple(f"class {i}" for i in range(num_classes))
    if len(names) < num_classes:
        raise ConfigError(
            f"{path}: labels go up to {num_classes - 1} but its description names "
            f"{len(names)} classes"
        )
    return names


def load_source(source: str | os.PathLike[str], base: Path | None = None) -> DataSource:
    """Load a data source (see the module docstring) with its class names."""
    path = resolve_source(source, base)
    if path.is_dir():
        names = check_class_names(image_folder_classes(path), str(path))
        return DataSource(
            path=path, train=load_image_folder(path), val=None, test=None, class_names=names
        )
    splits = load_medmnist_npz(path)
    names = _names_for(path, splits.num_classes)
    return DataSource(
        path=path, train=splits.train, val=splits.val, test=splits.test, class_names=names
    )
