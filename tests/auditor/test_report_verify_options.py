"""`audit report` takes `audit verify`'s `--accept`, `--validation` and `--metrics-tolerance`,
with the same meaning, and its page says whether its metrics were recomputed: a federation
whose round terms sit outside the product's default ``[accept]`` table (here
`max_sample_ratio` 50, which its sites accepted under ``[accept.loosest]``) fails
`terms.limits` in both commands without the sites' table and passes both with it. Before
session 56 the report had none of these options, so such a federation's report always said
FAIL while `audit verify --accept` passed (a49's shape). Real Anvil + IPFS, through the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.cli import cli
from fedtrail.storage.store import IpfsStore
from fedtrail.valuation import default_combiner
from tests.auditor.test_verify import _on_one_thread, on_anvil

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
]

RATIO = 50.0  # above the default loosest max_sample_ratio (20): the default table refuses it


@pytest.fixture(scope="module")
def loose_fed(
    anvil_url: str, ipfs_api: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[str], Path]:
    """A one-round federation on Anvil + IPFS under `max_sample_ratio` 50 (its sites accept it),
    the ledger and store arguments of the audit commands, and the sites' ``[accept]`` file."""
    tmp = tmp_path_factory.mktemp("loose")
    combiner = replace(default_combiner(True), max_sample_ratio=RATIO)
    fed = _on_one_thread(
        tmp,
        rounds=1,
        store=IpfsStore(ipfs_api),
        settings=AggregatorSettings(valuation="loo", combiner=combiner),
        **on_anvil(anvil_url),
    )
    accept = tmp / "config.toml"
    accept.write_text(f"[accept.loosest]\nmax_sample_ratio = {RATIO}\n", encoding="utf-8")
    args = ["--rpc-url", anvil_url, "--contract", fed.ledger.address, "--store", f"ipfs:{ipfs_api}"]
    return args, accept


def _checks(result: Any) -> dict[str, str]:
    return {c["check"]: c["result"] for c in json.loads(result.stdout)["checks"]}


def test_report_takes_verifys_accept_and_gives_its_verdict(
    loose_fed: tuple[list[str], Path], tmp_path: Path
) -> None:
    args, accept = loose_fed
    verify = ["audit", "verify", "--all", *args, "--format", "json"]
    report = ["audit", "report", *args, "--no-timestamp"]

    refused = CliRunner().invoke(cli, verify)
    assert refused.exit_code == 1, refused.output
    assert {k for k, v in _checks(refused).items() if v == "FAIL"} == {"terms.limits"}
    old = CliRunner().invoke(cli, [*report, "--out", str(tmp_path / "default")])
    assert old.exit_code == 1, old.output
    assert "verification: FAIL (1 failed check(s) over 1 round(s))" in old.stdout
    assert old.stderr.startswith("error: verification failed in round(s) 1; see ")

    agreed = CliRunner().invoke(cli, [*verify, "--accept", str(accept)])
    assert agreed.exit_code == 0, agreed.output
    out = tmp_path / "agreed"
    page_run = CliRunner().invoke(cli, [*report, "--out", str(out), "--accept", str(accept)])
    assert page_run.exit_code == 0, page_run.output
    assert "verification: PASS (0 failed check(s) over 1 round(s))" in page_run.stdout
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Verification FAILED" not in page and "terms.limits" in page
    # without --validation neither command re-runs the valuation (next test: with it, both do)
    assert "scores.recomputed" not in page
    assert "These figures are the aggregator's claim: this audit did not recompute them" in page


def test_report_takes_verifys_validation_and_metrics_tolerance(
    loose_fed: tuple[list[str], Path], tmp_path: Path
) -> None:
    """With `--validation` the report runs the checks verify adds (`scores.recomputed`,
    `metrics.recomputed`) and shows them; a negative `--metrics-tolerance` is a usage error in
    both commands."""
    args, accept = loose_fed
    given = ["--accept", str(accept), "--validation", "bundled"]
    verify = CliRunner().invoke(
        cli, ["audit", "verify", "--all", *args, *given, "--format", "json"]
    )
    assert verify.exit_code == 0, verify.output
    assert {"scores.recomputed", "metrics.recomputed"} <= set(_checks(verify))
    out = tmp_path / "r"
    report = ["audit", "report", *args, "--out", str(out), *given]
    result = CliRunner().invoke(cli, [*report, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"] is True
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "scores.recomputed" in page and "metrics.recomputed" in page
    assert "This audit recomputed these figures" in page  # the metrics section says so
    for command in (report, ["audit", "verify", "--all", *args]):
        bad = CliRunner().invoke(cli, [*command, "--metrics-tolerance", "-1"])
        assert bad.exit_code == 2 and "--metrics-tolerance" in bad.output, bad.output
