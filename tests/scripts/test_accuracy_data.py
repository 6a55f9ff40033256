"""The accuracy benchmark on another data source (issue 19): ``--data retina`` trains the
5-class colour model and reports macro AUC and balanced accuracy instead of AUC and F1; issue
12's bars (set on the chest X-rays) are not checked there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench import accuracy
from scripts.bench._sim import SimResult

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_five_class_run_reports_macro_auc_and_balanced_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "retina.json"
    argv = ["--data", "retina", "--seeds", "1", "--rounds", "1", "--scenarios", "a"]
    rc = accuracy.main([*argv, "--methods", "local,fedavg,valuation", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "Accuracy on the retina test split (400 images)" in printed
    assert "(a) macro AUC" in printed and "(a) bal acc cal" in printed
    assert "(a) F1" not in printed
    assert "FedAvg above local (seeds): macro AUC" in printed
    assert "plain balanced accuracy < 0.25" in printed
    assert "Issue 12's bars" not in printed
    doc = json.loads(out.read_text(encoding="utf-8"))
    settings = doc["settings"]
    assert settings["num_classes"] == 5 and settings["test_images"] == 400
    assert settings["model"]["in_channels"] == 3 and settings["model"]["num_classes"] == 5
    assert settings["class_names"][0] == "grade 0 (no DR)"
    summary = doc["scenarios"]["a"]["summary"]
    for method in ("local", "fedavg", "valuation"):
        assert 0.0 <= summary[method]["balanced_accuracy_calibrated"]["mean"] <= 1.0
        assert 0.0 <= summary[method]["auc"]["mean"] <= 1.0


def _result(method: str, **test: float) -> SimResult:
    return SimResult(method=method, seed=0, test=dict(test))


def test_one_class_models_are_counted_by_balanced_accuracy_for_five_classes() -> None:
    runs = [
        _result("fedavg", accuracy=0.435, balanced_accuracy=0.2),  # majority class everywhere
        _result("valuation", accuracy=0.30, balanced_accuracy=0.31),
    ]
    assert accuracy._degenerate(runs, ["fedavg", "valuation"], 5) == {"fedavg": 1, "valuation": 0}
    # Two classes: test accuracy on the balanced split, as before.
    assert accuracy._degenerate(runs, ["fedavg", "valuation"]) == {"fedavg": 1, "valuation": 1}


def test_old_runs_render_as_the_chest_x_rays() -> None:
    old = {"seeds": [0], "rounds": 10}
    assert accuracy._columns(old) == accuracy.BINARY_COLUMNS
    assert accuracy._test_split(old) == "the pneumonia test split (468 images)"
    assert accuracy._is_pneumonia(old)
    assert not accuracy._is_pneumonia({"data": "retina"})
