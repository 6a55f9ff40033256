"""The model spec is the aggregator's choice, and an auditor resizes its validation split to the
spec's ``image_size`` before anything else. A ResNet's parameters do not grow with its input, so
no byte limit refused a 100,000-pixel spec: ``audit verify --validation`` of a cancelled round
under it began resizing 270 images to 100,000 x 100,000 (tens of GB each). ``ModelSpec`` now
refuses sizes above ``MAX_IMAGE_SIZE``, and the CLI's ``--image-size`` takes the same bound."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedtrail.auditor.verify import CANCELLED_VALUATION, _check_cancelled_valuation
from fedtrail.cli import cli
from fedtrail.errors import ConfigError
from fedtrail.ledger import Submission
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.terms import MAX_IMAGE_SIZE, RoundTerms
from fedtrail.storage.store import LocalStore

HUGE = 100_000
SITE = "0x" + "11" * 20


def _hostile_terms() -> bytes:
    """Terms naming resnet10 at 100,000 px, with the spec hash a hostile aggregator computes
    (the layout of resnet10 does not depend on the image size)."""
    honest = ModelSpec(arch="resnet10", image_size=28)
    spec = honest.to_json() | {"image_size": HUGE}
    layout = [[n, list(shape), dt] for n, (shape, dt) in honest.tensor_layout().items()]
    blob = json.dumps({"spec": spec, "tensors": layout}, sort_keys=True, separators=(",", ":"))
    return RoundTerms(
        round=1,
        aggregation_rule={"name": "weighted"},
        valuation={"method": "loo", "metric": "balanced_loss"},
        model_spec=spec,
        spec_hash=hashlib.sha256(blob.encode()).hexdigest(),
        seed=0,
        validation_sha256="0" * 64,
        validation_images=270,
        commit_seconds=600,
        reveal_seconds=600,
    ).to_bytes()


@dataclass
class _Info:
    id: int
    terms_cid: str
    terms_sha256: str


class _Ledger:
    def get_submissions(self, round_id: int) -> list[Submission]:
        return [Submission(round_id, SITE, "Qm", "aa" * 32, 10, 0, 0, 0, "bb" * 32, 1, True)]


def test_model_spec_refuses_an_image_size_above_the_cap() -> None:
    assert ModelSpec(arch="resnet10", image_size=MAX_IMAGE_SIZE).image_size == MAX_IMAGE_SIZE
    with pytest.raises(ConfigError, match=f"at most {MAX_IMAGE_SIZE}"):
        ModelSpec(arch="resnet10", image_size=MAX_IMAGE_SIZE + 1)


def test_verify_refuses_a_hostile_spec_before_resizing_the_validation_split(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    terms = _hostile_terms()
    info = _Info(1, store.put(terms), hashlib.sha256(terms).hexdigest())
    images = np.zeros((270, 1, 28, 28), dtype=np.float32)
    labels = np.arange(270) % 2
    validation = ImageDataset(images, labels)
    started = time.perf_counter()
    name, ok, detail = _check_cancelled_valuation(
        _Ledger(),  # type: ignore[arg-type]
        store,
        info,  # type: ignore[arg-type]
        validation,
    )
    assert time.perf_counter() - started < 30
    assert name == CANCELLED_VALUATION and not ok
    assert "image_size" in detail and str(HUGE) in detail


def test_the_cli_refuses_an_image_size_above_the_cap() -> None:
    result = CliRunner().invoke(cli, ["demo", "--image-size", str(MAX_IMAGE_SIZE + 1)])
    assert result.exit_code == 2
    assert str(MAX_IMAGE_SIZE) in result.output
