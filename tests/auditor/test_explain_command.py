"""`fedtrail explain` on a model blob named by CID and verified by hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from fedtrail.cli import cli
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.storage.codec import encode_model
from fedtrail.storage.store import LocalStore


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


def test_explain_needs_cid_and_sha_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["explain", "--cid", "Qm", "--out", str(tmp_path)])
    assert result.exit_code == 2
