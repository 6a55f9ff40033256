"""``accuracy.py --seeds``: a bare number is a count (``--seeds 1`` runs seed 0, not seed 1),
one seed S alone is ``S-S``; the help says so (stop 58: a run meant for one seed read as a
count), and the parser does what the help says."""

from __future__ import annotations

import pytest

from scripts.bench import accuracy
from scripts.bench._sim import parse_seeds


def test_the_help_says_a_bare_number_is_a_count_and_one_seed_is_a_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        accuracy.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "a bare number N is a count: seeds 0..N-1 (--seeds 1 runs seed 0 only" in text
    assert "one seed S alone is the range S-S (--seeds 3-3 runs seed 3)" in text


def test_the_parser_does_what_the_help_says() -> None:
    assert parse_seeds("1") == [0]
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("3-3") == [3]
    assert parse_seeds("0,3,7-9") == [0, 3, 7, 8, 9]
