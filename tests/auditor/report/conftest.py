"""One federation with a known history and its report, shared by the report tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.auditor.report import write_report
from tests.auditor.report.federation import Fed, build_history


@pytest.fixture(scope="package")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Fed:
    return build_history(tmp_path_factory.mktemp("fed"))


@pytest.fixture(scope="package")
def report(fed: Fed, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = write_report(fed.ledger, fed.store, tmp_path_factory.mktemp("report"))
    return path, path.read_text(encoding="utf-8")
