"""One federation with a known history and its report, shared by the report tests.

It runs on the real Anvil node, not the embedded chain: every read of the ledger's events on
the embedded chain re-derives each transaction's sender in pure Python, so one report cost
~10-20 s there (the report tests wrote seven); a test that uses it is marked ``anvil``."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.auditor.report import write_report
from tests.auditor.report.federation import Fed, build_history


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "fed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.anvil)


@pytest.fixture(scope="package")
def fed(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Fed:
    return build_history(tmp_path_factory.mktemp("fed"), anvil_url)


@pytest.fixture(scope="package")
def report(fed: Fed, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = write_report(fed.ledger, fed.store, tmp_path_factory.mktemp("report"))
    return path, path.read_text(encoding="utf-8")
