"""`fedtrail audit log N` on a round that has no explanation log: the error says whether one
is still to come (an open or valued round, logged at finalize) or never will (a cancelled
round), so an auditor does not wait for a log that cannot appear."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from fedtrail.cli import cli
from fedtrail.protocol.codes import Phase


@dataclass
class _Round:
    phase: Phase
    log_cid: str = ""


class _Ledger:
    """The one read `audit log` makes before it needs a log: the round's phase and log CID."""

    def __init__(self, phase: Phase) -> None:
        self.phase = phase

    def get_round(self, round_id: int) -> _Round:
        return _Round(self.phase)


def _log(phase: Phase, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    import fedtrail.auditor.commands as commands

    monkeypatch.setattr(commands, "_open", lambda *_: _Ledger(phase))
    result = CliRunner().invoke(cli, ["audit", "log", "3", "--store", "local:/nonexistent"])
    return result.exit_code, result.stderr


def test_a_cancelled_round_is_said_to_have_no_log_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It said 'round 3 is cancelled: it has no explanation log yet', as if one would come."""
    code, err = _log(Phase.CANCELLED, monkeypatch)
    assert code == 2, err
    assert err == "error: round 3 is cancelled: a cancelled round never gets an explanation log\n"


@pytest.mark.parametrize("phase", [Phase.OPEN, Phase.VALUED])
def test_a_round_not_yet_finalized_has_no_log_yet(
    phase: Phase, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = _log(phase, monkeypatch)
    assert code == 2, err
    assert err == (
        f"error: round 3 is {phase.label}: it has no explanation log yet "
        "(the aggregator stores it when it finalizes the round)\n"
    )
