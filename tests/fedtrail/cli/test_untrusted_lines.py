"""Daemon logs and CLI error lines quote strings other parties chose: a CID from the chain (any
bytes the contract took), a tensor name from an update's safetensors header, a Flower error
text. Each must stay one printable line, or a newline forges a log line and an escape
sequence rewrites the operator's terminal."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fedtrail.cli import _Group
from fedtrail.cli.common import setup_logging
from fedtrail.errors import FedtrailError

FORGED = "\n2030-01-01 00:00:00,000 INFO    fedtrail.node: round 7: revealed, weight OK"
HOSTILE_CID = "Qm\x1b[2J\x1b]0;pwned\x07\rok\u202e" + FORGED
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
UNSAFE = "\x1b\x07\r\u202e"


@pytest.fixture
def fedtrail_log() -> Iterator[logging.Logger]:
    """The ``fedtrail`` logger, its handlers and level restored afterwards."""
    logger = logging.getLogger("fedtrail")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    for h in logger.handlers[len(handlers) :]:
        h.close()
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_a_hostile_string_in_a_log_record_is_one_printable_line(
    tmp_path: Path, fedtrail_log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attack: an aggregator opens a round whose start model CID holds a newline, a forged
    log line and escape sequences; the node logs ``fetching global model <cid>`` before the
    store refuses the CID. Before, node.log gained a second, forged line and the operator's
    terminal was cleared and retitled."""
    logfile = tmp_path / "node.log"
    setup_logging(logfile)
    log = logging.getLogger("fedtrail.node.daemon")
    log.info("round %d: fetching global model %s", 3, HOSTILE_CID)
    try:
        raise FedtrailError(f"tensor {HOSTILE_CID} has malformed data_offsets")
    except FedtrailError:
        log.exception("round %d: cannot decode", 3)
    for text in (logfile.read_text(), capsys.readouterr().err):
        assert not any(ch in text for ch in UNSAFE), repr(text)
        lines = text.splitlines()
        records = [line for line in lines if RECORD.match(line)]
        assert len(records) == 2, lines  # the info and the error record, nothing forged
        assert not any(line.startswith("2030-") for line in lines)
        assert any(line.startswith("Traceback") for line in lines)  # tracebacks keep lines
        assert any("weight OK" in line and "fetching global model" in line for line in lines)


def test_a_cli_error_that_quotes_a_hostile_string_is_one_printable_line() -> None:
    """``error: ...`` lines print a library error's message, which quotes what was refused."""

    @click.group(cls=_Group)
    def cli() -> None:
        pass

    @cli.command()
    def fetch() -> None:
        raise FedtrailError(f"not a CID: {HOSTILE_CID}")

    result = CliRunner().invoke(cli, ["fetch"])
    assert result.exit_code == 1
    assert not any(ch in result.stderr for ch in UNSAFE), repr(result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: not a CID: Qm")
