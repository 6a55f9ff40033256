"""scripts/bench/small_step_collapse.py traces issue 12 (f)'s collapsing seed: the split it prints
is the accuracy bench's (seed 3: the x -0.3 site holds 1,254 of 2,428 images), the bench's AUC
of every round's global model equals scikit-learn's on the same logits, and a site left out of
the counterfactual has weight share 0."""

from __future__ import annotations

import re

import pytest

from scripts.bench import small_step_collapse

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROUND = re.compile(
    r"round (\d+): honest step alone ((?:\S+ ){5})\| FedAvg AUC (\S+) \(sklearn (\S+)\)"
)


def test_seed_3_split_auc_check_and_left_out_site(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenario", "f", "--seed", "3", "--trace-rounds", "1", "--rounds", "1"]
    assert small_step_collapse.main([*argv, "--site", "3", "--mults", "0"]) == 0
    out = capsys.readouterr().out
    images = [int(x) for x in re.search(r"images\s+(.+)", out).group(1).split()]  # type: ignore[union-attr]
    assert images == [198, 389, 449, 1254, 138]
    rows = ROUND.findall(out)
    assert len(rows) == 1
    _, alone, bench, sklearn = rows[0]
    assert len(alone.split()) == 5
    assert float(bench) == float(sklearn)
    assert "site 3 weight x0 (share 0.000): test AUC by round" in out
