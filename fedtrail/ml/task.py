"""The federation's task, fixed once: the model spec and the name of every class.

The aggregator writes it into every round's terms (whose sha256 goes on chain at ``openRound``);
a site derives its own from its data and config and refuses a round whose task differs, with one
error naming both sides; the auditor checks that no round changed it. The class names are what
captions, reports and ``node status`` print, so no code path ever needs a built-in name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from fedtrail.errors import ConfigError
from fedtrail.ml.catalog import DataSource, check_class_names
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.terms import RoundTerms

__all__ = ["Task", "TaskMismatch", "check_fits", "require_terms", "task_for"]


class TaskMismatch(ConfigError):
    """Two parties (a site and the round terms, a model and its data) disagree on the task.

    Not transient: retrying cannot help, so daemons stop on it and say what differs."""


@dataclass(frozen=True, kw_only=True)
class Task:
    """A model spec and one name per class (``len(class_names) == spec.num_classes``)."""

    spec: ModelSpec
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        names = check_class_names(self.class_names, "task")
        if len(names) != self.spec.num_classes:
            raise ConfigError(
                f"task: {len(names)} class names {list(names)} for a model with "
                f"{self.spec.num_classes} classes"
            )
        object.__setattr__(self, "class_names", names)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def name_of(self, class_id: int) -> str:
        """The name of ``class_id``; an id outside the task reads ``class <id>``."""
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return f"class {class_id}"

    def to_json(self) -> dict[str, Any]:
        return {
            "model_spec": self.spec.to_json(),
            "spec_hash": self.spec.spec_hash(),
            "class_names": list(self.class_names),
        }

    def task_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_json`."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()

    @classmethod
    def from_parts(cls, model_spec: Mapping[str, Any], class_names: Any, where: str) -> Task:
        """A task from the JSON parts of a document (round terms, a log); a bad part is a
        :class:`ConfigError` naming ``where``."""
        known = {f.name for f in fields(ModelSpec)}
        unknown = sorted(set(model_spec) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown model setting(s) {unknown}")
        try:
            spec = ModelSpec(**dict(model_spec))
        except TypeError as exc:
            raise ConfigError(f"{where}: bad model spec: {exc}") from exc
        return cls(spec=spec, class_names=check_class_names(class_names, where))

    def differences(self, other: Task, *, mine: str = "here", theirs: str = "there") -> list[str]:
        """``setting: <self's> (mine) vs <other's> (theirs)`` for each setting that differs."""
        out = []
        ours, others = asdict(self.spec), asdict(other.spec)
        for key in ours:
            if ours[key] != others.get(key):
                out.append(f"model {key}: {ours[key]!r} ({mine}) vs {others.get(key)!r} ({theirs})")
        if self.class_names != other.class_names:
            out.append(
                f"class names: {list(self.class_names)} ({mine}) vs {list(other.class_names)} "
                f"({theirs})"
            )
        return out

    def require_same(self, other: Task, *, mine: str, theirs: str) -> None:
        """Raise :class:`TaskMismatch` naming both sides and every difference."""
        diffs = self.differences(other, mine=mine, theirs=theirs)
        if diffs:
            raise TaskMismatch(
                f"{mine} and {theirs} disagree on the federation's task: " + "; ".join(diffs)
            )

    def check_data(self, ds: ImageDataset, what: str) -> None:
        """Raise :class:`TaskMismatch` when ``ds`` does not fit the task's model
        (:func:`check_fits`)."""
        check_fits(ds, self.spec, what)


def check_fits(ds: ImageDataset, spec: ModelSpec, what: str) -> None:
    """Raise :class:`TaskMismatch` naming both sides when ``ds`` (``what``, e.g. "the training
    split") cannot feed ``spec``'s model: no images, other channels or image size (a site
    resizes its own images to the model's size first), or a label the model has no class for.
    The one check every trainer, site and aggregator applies."""
    if len(ds) == 0:
        raise TaskMismatch(f"{what} is empty")
    c, (h, w) = ds.channels, ds.image_size
    if (c, h, w) != (spec.in_channels, spec.image_size, spec.image_size):
        hint = "; resize the images (ImageDataset.resized)" if c == spec.in_channels else ""
        raise TaskMismatch(
            f"{what}: images are {c}x{h}x{w} (C x H x W) but the {spec.arch} model expects "
            f"{spec.in_channels}x{spec.image_size}x{spec.image_size}{hint}"
        )
    top = int(ds.labels.max())
    if top >= spec.num_classes:
        raise TaskMismatch(
            f"{what}: labels go up to {top} (class ids 0..{top}) but the {spec.arch} model has "
            f"{spec.num_classes} classes"
        )


def task_for(
    source: DataSource,
    *,
    arch: str | None = None,
    image_size: int | None = None,
    model: ModelSpec | None = None,
) -> Task:
    """The task a data source implies: channels, class count and class names from the data;
    the architecture and image size from ``arch``/``image_size`` when given, else from
    ``model`` (its other settings too), else ``smallcnn`` at the data's own size."""
    doc: dict[str, Any] = asdict(model) if model is not None else {}
    h, w = source.train.image_size
    if h != w:
        raise ConfigError(f"{source.path}: images are {h}x{w}; the models take square images")
    doc.setdefault("image_size", h)
    if arch is not None:
        doc["arch"] = arch
    if image_size is not None:
        doc["image_size"] = image_size
    doc["in_channels"] = source.train.channels
    doc["num_classes"] = source.num_classes
    return Task(spec=ModelSpec(**doc), class_names=source.class_names)


def require_terms(task: Task, terms: RoundTerms, *, mine: str) -> None:
    """Raise :class:`TaskMismatch` when round terms fix another task than ``task``. Terms
    written before tasks named their classes are compared on the model alone; a spec hash that
    does not match the terms' own model settings is refused too."""
    theirs = f"round {terms.round}'s terms"
    names = terms.class_names or task.class_names
    other = Task.from_parts(terms.model_spec, list(names), theirs)
    task.require_same(other, mine=mine, theirs=theirs)
    if terms.spec_hash != task.spec.spec_hash():
        raise TaskMismatch(
            f"{theirs} give spec hash {terms.spec_hash[:16]}… for the same model settings "
            f"whose hash here is {task.spec.spec_hash()[:16]}… (another fedtrail version?)"
        )
