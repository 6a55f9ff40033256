"""The federation's task: class names from the data's description, never from code; one clear
error naming both sides when a site, the terms or the data disagree."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedtrail.errors import ConfigError
from fedtrail.ml.catalog import load_source, resolve_source, shipped_datasets
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.task import Task, TaskMismatch, task_for
from fedtrail.protocol.terms import InvalidTerms, RoundTerms

ZERO = "0" * 64


def _write_npz(path: Path, *, classes: int, channels: int = 1, size: int = 28) -> None:
    rng = np.random.default_rng(0)
    shape = (12, size, size) if channels == 1 else (12, size, size, channels)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(12) % classes).astype(np.uint8)[:, None]
    np.savez(path, **arrays)


def test_the_shipped_datasets_name_their_classes_in_their_descriptions() -> None:
    shipped = shipped_datasets()
    assert set(shipped) >= {"pneumonia", "retina"}
    retina = load_source("retina")
    assert retina.num_classes == 5 and retina.train.channels == 3
    assert len(retina.train) == 1080 and retina.val is not None and len(retina.val) == 120
    desc = json.loads(shipped["retina"].path.with_suffix(".json").read_text())
    assert retina.class_names == tuple(desc["class_names"])
    # "bundled" is the old name of the pneumonia set
    assert resolve_source("bundled") == shipped["pneumonia"].path


def test_task_for_derives_channels_classes_size_and_names_from_the_data() -> None:
    task = task_for(load_source("retina"))
    assert (task.spec.in_channels, task.spec.num_classes, task.spec.image_size) == (3, 5, 28)
    assert task.name_of(4) == task.class_names[4] and task.name_of(9) == "class 9"
    bigger = task_for(load_source("pneumonia"), image_size=64)
    assert bigger.spec.image_size == 64 and bigger.spec.in_channels == 1


def test_a_users_file_takes_names_from_its_description_else_numbers(tmp_path: Path) -> None:
    _write_npz(tmp_path / "scans.npz", classes=3, channels=3)
    assert load_source(tmp_path / "scans.npz").class_names == ("class 0", "class 1", "class 2")
    (tmp_path / "scans.json").write_text(json.dumps({"class_names": ["a", "b", "c"]}))
    assert load_source(tmp_path / "scans.npz").class_names == ("a", "b", "c")
    (tmp_path / "scans.json").write_text(json.dumps({"class_names": ["a", "b"]}))
    with pytest.raises(ConfigError, match="names 2 classes"):
        load_source(tmp_path / "scans.npz")
    (tmp_path / "scans.json").write_text(json.dumps({"class_names": ["a", "a", "b"]}))
    with pytest.raises(ConfigError, match="repeat"):
        load_source(tmp_path / "scans.npz")
    with pytest.raises(ConfigError, match="does not exist, and it is not a shipped dataset"):
        load_source(tmp_path / "missing.npz")


def test_a_task_needs_one_name_per_class() -> None:
    with pytest.raises(ConfigError, match="2 class names"):
        Task(spec=ModelSpec(num_classes=5), class_names=("a", "b"))
    with pytest.raises(ConfigError, match="control characters"):
        Task(spec=ModelSpec(), class_names=("a", "b\x1b[31m"))


def test_require_same_names_both_sides_and_every_difference() -> None:
    mine = Task(spec=ModelSpec(), class_names=("normal", "pneumonia"))
    theirs = Task(spec=ModelSpec(in_channels=3), class_names=("normal", "covid"))
    mine.require_same(replace(mine), mine="this site", theirs="round 3's terms")
    with pytest.raises(TaskMismatch) as err:
        mine.require_same(theirs, mine="this site", theirs="round 3's terms")
    text = str(err.value)
    assert "this site" in text and "round 3's terms" in text
    assert "model in_channels: 1 (this site) vs 3 (round 3's terms)" in text
    assert "covid" in text
    assert mine.task_hash() != theirs.task_hash()
    assert mine.task_hash() == Task(spec=ModelSpec(), class_names=mine.class_names).task_hash()


def test_check_data_refuses_images_and_labels_the_task_cannot_take() -> None:
    task = Task(spec=ModelSpec(num_classes=2), class_names=("x", "y"))
    ok = ImageDataset(np.zeros((4, 1, 28, 28), np.float32), np.array([0, 1, 0, 1]))
    task.check_data(ok, "site A's train split")
    rgb = ImageDataset(np.zeros((4, 3, 28, 28), np.float32), np.array([0, 1, 0, 1]))
    with pytest.raises(TaskMismatch, match=r"3x28x28 .* expects 1x28x28"):
        task.check_data(rgb, "site A's train split")
    five = ImageDataset(np.zeros((4, 1, 28, 28), np.float32), np.array([0, 4, 0, 1]))
    with pytest.raises(TaskMismatch, match=r"labels go up to 4 .* smallcnn model has 2"):
        task.check_data(five, "the validation split")


def _terms(**changes: object) -> RoundTerms:
    base = RoundTerms(
        round=1,
        aggregation_rule={"name": "weighted"},
        valuation={"method": "shapley"},
        model_spec={"arch": "smallcnn"},
        spec_hash=ZERO,
        seed=0,
        validation_sha256=ZERO,
        validation_images=10,
        commit_seconds=60,
        reveal_seconds=60,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_round_terms_carry_the_class_names_and_refuse_bad_ones() -> None:
    named = _terms(class_names=("grade 0", "grade 1"))
    back = RoundTerms.from_bytes(named.to_bytes())
    assert back.class_names == ("grade 0", "grade 1")
    assert RoundTerms.from_bytes(_terms().to_bytes()).class_names == ()
    doc = json.loads(named.to_bytes())
    for bad in (["a", "a"], ["a", ""], "ab", [1, 2]):
        doc["class_names"] = bad
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        with pytest.raises(InvalidTerms, match="class_names"):
            RoundTerms.from_bytes(blob)
