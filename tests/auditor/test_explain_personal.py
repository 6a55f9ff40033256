"""`fedtrail explain --personal NODE_FOLDER`: a site's personalised model, read from its folder
with the task of its config.toml, at the decision it was validated with."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fedtrail.cli import cli
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.node.config import NodeConfig, write_node_config
from fedtrail.storage.personal import PERSONAL_MODEL, PersonalInfo, save_personal


def _node_folder(tmp: Path) -> tuple[Path, PersonalInfo]:
    folder = tmp / "site"
    folder.mkdir()
    write_node_config(folder / "config.toml", NodeConfig(name="site", model=ModelSpec()))
    info = save_personal(
        folder,
        federated_state(initial_model(ModelSpec(), 5)),
        spec=ModelSpec(),
        info=PersonalInfo(
            round=4,
            global_sha256="ab" * 32,
            sha256="",
            method="finetune",
            steps=30,
            lr=0.01,
            bias=(0.0, 0.4),
            decision_from="round 4's log",
        ),
    )
    return folder, info


def _explain(folder: Path, out: Path, *extra: str) -> object:
    return CliRunner().invoke(
        cli,
        [
            "explain",
            "--personal",
            str(folder),
            "--out",
            str(out),
            "--method",
            "grad_cam",
            "--per-class",
            "1",
            "--format",
            "json",
            *extra,
        ],
    )


def test_explain_personal_explains_the_sites_own_model(tmp_path: Path) -> None:
    folder, info = _node_folder(tmp_path)
    result = _explain(folder, tmp_path / "out")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    doc = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert doc["model"] == {
        "cid": str(folder / PERSONAL_MODEL),
        "sha256": info.sha256,
        "round": 4,
    }
    assert doc["decision"]["bias"] == [0.0, 0.4]
    assert doc["decision"]["source"].startswith("round 4's log, for the global model")
    assert (
        len(doc["images"]) == 2
        and "site model (finetune, round 4 + 30 steps)" in (doc["images"][0]["caption"])
    )


def test_explain_personal_refuses_a_model_its_info_does_not_describe(tmp_path: Path) -> None:
    folder, _ = _node_folder(tmp_path)
    blob = bytearray((folder / PERSONAL_MODEL).read_bytes())
    blob[-1] ^= 1
    (folder / PERSONAL_MODEL).write_bytes(bytes(blob))
    result = _explain(folder, tmp_path / "out")
    assert result.exit_code != 0
    assert "is not the model personal.json describes" in result.output  # type: ignore[attr-defined]


def test_explain_personal_needs_a_personal_model_and_no_round(tmp_path: Path) -> None:
    folder, _ = _node_folder(tmp_path)
    both = _explain(folder, tmp_path / "out", "--round", "1")
    assert both.exit_code == 2 and "no --round or --cid" in both.output  # type: ignore[attr-defined]
    (folder / "personal.json").unlink()
    none = _explain(folder, tmp_path / "out")
    assert none.exit_code != 0 and "holds no personalised model" in none.output  # type: ignore[attr-defined]
