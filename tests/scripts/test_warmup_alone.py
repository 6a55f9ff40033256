"""scripts/bench/warmup_alone.py prints, for the demo's warm-up round, the global model and each
update's model alone, and the harm check's verdicts agree with the utilities it prints."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from fedtrail.valuation.round import WARM_UP_MAX_HARM
from scripts.bench import warmup_alone

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LINE = re.compile(r"warm-up: (.+?): balanced_loss utility (\S+), AUC (\S+), logits")


def test_every_model_alone_is_printed_and_the_check_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--sites", "3", "--rounds", "1", "--epochs", "1", "--noisy-sites", "0"]
    argv += ["--poison", "scale", "--workdir", str(tmp_path)]
    assert warmup_alone.main(argv) == 0
    out = capsys.readouterr()
    rows = LINE.findall(out.err)
    assert len(rows) == 4  # the global model and three updates
    assert rows[0][0] == "global model"
    base = float(rows[0][1])
    floor = base - WARM_UP_MAX_HARM * abs(base)
    below = sum(1 for _, utility, _ in rows[1:] if float(utility) < floor)
    assert all(0.0 <= float(auc) <= 1.0 or math.isnan(float(auc)) for _, _, auc in rows)
    assert below == out.out.count("LOW_GAIN")
