"""`fedtrail explain` on a model blob named by CID and verified by hash."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fedtrail.auditor.explain_command import Decision, _decision, _round_log
from fedtrail.cli import cli
from fedtrail.errors import ConfigError
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.explain import UnexplainableModel, explain_model, probe_set
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol.roundlog import to_bytes
from fedtrail.storage.codec import decode_model, default_max_bytes, encode_model
from fedtrail.storage.store import LocalStore

LOGS = Path(__file__).parents[1] / "fedtrail" / "protocol" / "data"


def test_explain_writes_png_overlays_with_predictions(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    blob = encode_model(initial_model(ModelSpec(), 1).state_dict(), spec=ModelSpec(), round=3)
    cid = store.put(blob)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "explain",
            "--cid",
            cid,
            "--sha256",
            hashlib.sha256(blob).hexdigest(),
            "--store",
            f"local:{tmp_path / 'store'}",
            "--out",
            str(out),
            "--method",
            "grad_cam",
            "--per-class",
            "2",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"]["round"] == 3 and len(doc["images"]) == 4
    for img in doc["images"]:
        assert Path(img["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "predicted" in img["caption"] and 0.5 <= img["confidence"] <= 1.0
    assert doc["decision"] == {
        "threshold": 0.5,
        "bias": None,
        "source": "default 0.5: a model named by CID has no round log",
    }


def test_explain_refuses_a_model_whose_bytes_do_not_match(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    cid = store.put(
        encode_model(initial_model(ModelSpec(), 1).state_dict(), spec=ModelSpec(), round=1)
    )
    result = CliRunner().invoke(
        cli,
        [
            "explain",
            "--cid",
            cid,
            "--sha256",
            "ab" * 32,
            "--store",
            f"local:{tmp_path / 'store'}",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 1 and "sha256" in result.stderr
    assert not (tmp_path / "out").exists()


def test_explain_refuses_an_oversized_blob_before_reading_it(tmp_path: Path) -> None:
    """A blob larger than any model of the task (default_max_bytes) is refused by its size, as
    every other reader refuses one (it was read whole, up to the store's 256 MiB, then
    refused by the decoder)."""
    store = LocalStore(tmp_path / "store")
    blob = b"\0" * (default_max_bytes(ModelSpec()) + 1)
    cid = store.put(blob)
    result = CliRunner().invoke(
        cli,
        [
            "explain",
            "--cid",
            cid,
            "--sha256",
            hashlib.sha256(blob).hexdigest(),
            "--store",
            f"local:{tmp_path / 'store'}",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 1
    # the store's refusal (it names the CID), not the decoder's after a whole read
    assert f"content {cid} is" in result.stderr and "-byte limit" in result.stderr
    assert not (tmp_path / "out").exists()


def test_explain_needs_cid_and_sha_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["explain", "--cid", "Qm", "--out", str(tmp_path)])
    assert result.exit_code == 2


def test_a_malformed_cid_is_a_usage_error_before_any_store_is_asked(tmp_path: Path) -> None:
    """`explain --cid not-a-cid` exited 1 (a failed check) after asking the store."""
    args = ["explain", "--cid", "not-a-cid", "--sha256", "ab" * 32]
    args += ["--store", "http://127.0.0.1:9", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "--cid: not a CID" in result.stderr and "127.0.0.1:9" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_named_by_cid_is_explained_at_0_5_and_says_so(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    blob = encode_model(initial_model(ModelSpec(), 1).state_dict(), spec=ModelSpec(), round=3)
    args = ["explain", "--cid", store.put(blob), "--sha256", hashlib.sha256(blob).hexdigest()]
    args += ["--store", f"local:{tmp_path / 'store'}", "--out", str(tmp_path / "out")]
    args += ["--method", "grad_cam", "--per-class", "1"]
    doc = json.loads(CliRunner().invoke(cli, [*args, "--format", "json"]).stdout)
    assert doc["decision"]["threshold"] == 0.5 and doc["decision"]["bias"] is None
    assert "no round log" in doc["decision"]["source"]
    table = CliRunner().invoke(cli, args).stdout
    assert "decision threshold 0.500 (default 0.5: a model named by CID has no round log)" in table


def test_the_decision_is_read_from_the_round_log_or_defaults_to_0_5(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    real = (LOGS / "round-log-real.json").read_bytes()  # written before calibration
    doc = json.loads(real)
    doc["metrics"]["after"] |= {"threshold": 0.3, "bias": [0.0, math.log(0.7 / 0.3)]}
    calibrated = to_bytes(doc)

    def decision(blob: bytes, sha256: str | None = None) -> Decision:
        cid, digest = store.put(blob), sha256 or hashlib.sha256(blob).hexdigest()
        log, why_not = _round_log(store, 4, cid, digest)
        return _decision(log, 4, why_not, 2)

    got = decision(calibrated)
    assert got.bias == (0.0, math.log(0.7 / 0.3)) and got.threshold == pytest.approx(0.3)
    assert got.source == "fitted on the aggregator's validation split, round 4's log"
    old = decision(real)
    assert old.bias is None and old.threshold == 0.5 and "records no threshold" in old.source
    tampered = decision(calibrated, "ab" * 32)
    assert tampered.bias is None and "round 4's log is unusable" in tampered.source


def test_explain_model_with_a_bias_explains_the_calibrated_decision() -> None:
    """A bias far toward one class makes every image that class, explained for it, with the
    probability after the bias as confidence; a zero bias is the plain decision."""
    spec = ModelSpec()
    state = initial_model(spec, 1).state_dict()
    images = probe_set(load_bundled().val, 2)
    plain = explain_model(state, spec, images, method="grad_cam")
    zero = explain_model(state, spec, images, method="grad_cam", bias=(0.0, 0.0))
    assert [(o.prediction, o.png) for o in zero] == [(o.prediction, o.png) for o in plain]
    for b, cls in (((0.0, 50.0), 1), ((50.0, 0.0), 0)):
        out = explain_model(state, spec, images, method="grad_cam", bias=b)
        assert all(o.prediction == cls and o.confidence > 0.99 for o in out)
    with pytest.raises(ConfigError, match="bias must be 2 finite numbers"):
        explain_model(state, spec, images, bias=(0.0, float("nan")))


def test_a_retina_model_is_explained_with_the_grades_as_captions(tmp_path: Path) -> None:
    """The task comes from --validation (a model named by CID has no log): 3 channels, 5
    classes, captions name the grade from the dataset's description, never a built-in name."""
    spec = ModelSpec(in_channels=3, num_classes=5)
    store = LocalStore(tmp_path / "store")
    blob = encode_model(initial_model(spec, 1).state_dict(), spec=spec, round=1)
    args = ["explain", "--cid", store.put(blob), "--sha256", hashlib.sha256(blob).hexdigest()]
    args += ["--store", f"local:{tmp_path / 'store'}", "--out", str(tmp_path / "out")]
    args += ["--method", "grad_cam", "--per-class", "1", "--validation", "retina"]
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = doc["images"]
    assert doc["decision"]["threshold"] is None  # five classes: argmax, no threshold
    assert doc["decision"]["source"].startswith("default argmax: ")
    names = load_source("retina").class_names
    assert sorted(r["label"] for r in rows) == [0, 1, 2, 3, 4]
    for r in rows:
        assert f"truth {names[r['label']]}" in r["caption"]
        assert "pneumonia" not in r["caption"] and "normal" not in r["caption"]
    wrong = CliRunner().invoke(cli, [*args[:-2], "--validation", "pneumonia"])
    assert wrong.exit_code != 0 and "spec" in (wrong.stderr + str(wrong.exception))


@pytest.mark.anvil
@pytest.mark.usefixtures("one_torch_thread")
def test_a_rounds_model_is_read_with_the_committed_task_not_the_logs(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aggregator whose log swaps the class names (and so every caption's truth and
    prediction) after the fact: `explain --round` used the log's task, so on the parent
    commit the overlays named label 0 "class 1". It now reads the model with the task the
    round's terms committed at open, and says the log differs."""
    from tests.auditor.test_verify import _federation_writing

    def swap(doc: dict[str, object]) -> None:
        settings = doc["settings"]
        assert isinstance(settings, dict) and settings["class_names"] == ["class 0", "class 1"]
        settings["class_names"] = ["class 1", "class 0"]

    fed = _federation_writing(tmp_path, anvil_url, monkeypatch, swap)
    args = ["explain", "--round", "1", "--rpc-url", anvil_url, "--contract", fed.ledger.address]
    args += ["--store", f"local:{tmp_path / 'store'}", "--out", str(tmp_path / "out")]
    args += ["--method", "grad_cam", "--per-class", "1", "--validation", "pneumonia"]
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    truth = {r["label"]: r["caption"] for r in doc["images"]}
    assert "truth class 0" in truth[0] and "truth class 1" in truth[1]
    assert doc["task"]["class_names"] == ["class 0", "class 1"]
    assert "the log's task differs from the committed terms' (class names:" in doc["task"]["note"]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert "task: the log's task differs from the committed terms'" in table.stdout


def _overflowing_model() -> bytes:
    """A decodable model (every weight finite) whose outputs overflow to NaN / infinity."""
    spec = ModelSpec()
    state = {
        k: torch.full_like(v, 3e38) if v.is_floating_point() else v
        for k, v in initial_model(spec, 1).state_dict().items()
    }
    return encode_model(state, spec=spec, round=3)


def test_a_model_whose_outputs_overflow_is_refused_by_name(tmp_path: Path) -> None:
    """Attack review a32: such a model was captioned "predicted normal (nan%)" with every
    figure NaN (exit 0), and with a round log's bias the decision rule's ``ValueError`` ended
    the command in a traceback; now it fails (exit 1) saying why, before any file is written."""
    store = LocalStore(tmp_path / "store")
    blob = _overflowing_model()
    cid = store.put(blob)
    out = tmp_path / "out"
    args = ["explain", "--cid", cid, "--sha256", hashlib.sha256(blob).hexdigest()]
    args += ["--store", f"local:{tmp_path / 'store'}", "--out", str(out), "--per-class", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert "NaN or infinite on 2 of 2 images" in result.stderr
    assert "no decision to explain" in result.stderr
    assert not out.exists()
    spec = ModelSpec()
    state, _ = decode_model(blob, spec=spec)
    with pytest.raises(UnexplainableModel):
        explain_model(state, spec, probe_set(load_bundled().val, 1), bias=(0.0, 0.0))


def test_a_log_whose_bias_and_threshold_disagree_is_not_decided_with(tmp_path: Path) -> None:
    """Attack a111 (a83's ``bias`` lie read by the clinician's page): the log's bias moved to
    [0, 2] (threshold 0.119) while its threshold field says 0.3, what audit log and the report
    show. verify fails it (log.agrees); explain decided at 0.119 anyway, saying "fitted on the
    aggregator's validation split". Now it decides at the default and says why."""
    store = LocalStore(tmp_path / "store")
    doc = json.loads((LOGS / "round-log-real.json").read_bytes())
    doc["metrics"]["after"] |= {"threshold": 0.3, "bias": [0.0, 2.0]}
    blob = to_bytes(doc)
    log, why_not = _round_log(store, 4, store.put(blob), hashlib.sha256(blob).hexdigest())
    assert log is not None
    got = _decision(log, 4, why_not, 2)
    assert got.bias is None and got.threshold == 0.5, got
    assert got.source.startswith("default 0.5: round 4's log is not used"), got.source
    assert "metrics.after.threshold 0.3 is not its bias's" in got.source, got.source
