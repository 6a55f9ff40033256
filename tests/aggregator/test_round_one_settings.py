"""An aggregator upgraded mid-federation continues its ledger under round 1's payment settings.

Round 1's terms fix every payment setting for the ledger's life (``terms.task_fixed``,
``payment_differences``). A newer ``aggregator run`` whose defaults differ (here: round 1 was
written by a version whose combiner had the noise check at the claimed count, ``dp_noise_check``
1, and the stale screen's kept-entries test off, ``stale_support_overlap`` 1.0) opens round 2
with round 1's values and logs what it kept; the sites' nodes take part and ``audit verify``
passes. A flag the operator gives that changes a fixed setting exits 2 and opens nothing, one
given at this version's default or from a config's defaults included. On
Anvil + IPFS, through the CLI (before this, the run exited 2: "round 2 not opened")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedtrail.aggregator import commands
from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.auditor.verify import verify_round
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.cli import cli
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.task import task_for
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.terms import MAX_TERMS_BYTES, RoundTerms, payment_differences
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.store import IpfsStore
from fedtrail.valuation import default_combiner
from tests.fixtures.chain import ChainEnv

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
    pytest.mark.usefixtures("one_torch_thread"),
]

OLDER = {"dp_noise_check": 1, "stale_support_overlap": 1.0}
"""Round 1's combiner values, an older version's defaults (this version's: 2 and 0.99)."""


def _older_federation(
    anvil: ChainEnv, ipfs_api: str, folder: Path, older: dict[str, Any] = OLDER
) -> Federation:
    """Three sites and round 1 finalized by an aggregator with the older defaults (``older``,
    the combiner's); the sites (and the auditor below) accept those terms, as README's
    [accept.loosest] table says."""
    source = load_source("pneumonia")
    splits = source.splits()
    task = task_for(source)
    chunks = partition_iid(splits.train.labels, 8, seed=0)
    combiner = replace(default_combiner(True), **older)
    fed = build_federation(
        sites=make_sites(
            anvil.sites[:3],
            [splits.train.subset(chunks[i]) for i in range(3)],
            training=TrainConfig(epochs=1),
            data=DataConfig(class_names=source.class_names),
            model=task.spec,
        ),
        store=IpfsStore(ipfs_api),
        folder=folder,
        validation=splits.val,  # what `aggregator run --validation pneumonia` scores on
        w3=anvil.w3,
        coordinator=anvil.coordinator,
        aggregator=anvil.aggregator,
        settings=AggregatorSettings(
            model=task.spec,
            class_names=task.class_names,
            combiner=combiner,
            explain_method=None,
        ),
    )
    outcome = fed.run_round()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    return fed


def _pass(fed: Federation, deadline: int) -> None:
    w3 = fed.ledger.w3
    advance_time(w3, max(0, deadline - next_block_timestamp(w3) + 1 + CLOCK_SLACK))


def _terms(fed: Federation, round_id: int) -> RoundTerms:
    info = fed.ledger.get_round(round_id)
    blob = fed.store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
    return RoundTerms.from_bytes(blob)


def _cli(fed: Federation, monkeypatch: pytest.MonkeyPatch, folder: Path) -> list[Any]:
    """``aggregator run`` on ``fed``'s ledger and store; its service only starts and opens the
    next round (the test plays the sites' part after it). The services it built."""
    monkeypatch.setattr(commands, "open_ledger", lambda *_: fed.ledger)
    monkeypatch.setattr(commands, "load_signer", lambda *_: fed.aggregator)
    monkeypatch.setattr(commands, "open_checked_store", lambda *_: fed.store)
    built: list[Any] = []

    def start_and_open(self: AggregatorService, **_: Any) -> list[Any]:
        built.append(self)
        self.preflight()
        self.open_next()
        return []

    monkeypatch.setattr(AggregatorService, "run", start_and_open)
    return built


def test_a_newer_aggregator_opens_round_2_under_round_1s_settings_and_verify_passes(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = _older_federation(anvil, ipfs_api, tmp_path / "fed")
    first = _terms(fed, 1)
    assert {k: first.valuation["combiner"][k] for k in OLDER} == OLDER
    built = _cli(fed, monkeypatch, tmp_path / "cli")
    args = ["aggregator", "run", "--folder", str(tmp_path / "cli"), "--threads", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (service,) = built
    assert fed.ledger.current_round() == 2
    second = _terms(fed, 2)
    assert payment_differences(first, second) == []
    assert {k: second.valuation["combiner"][k] for k in OLDER} == OLDER
    # it says what it kept, against this version's defaults
    logged = (tmp_path / "cli" / "aggregator.log").read_text()
    assert "kept from round 1 where this version's defaults differ" in logged
    assert "valuation/combiner/dp_noise_check 1 (this version: 2)" in logged
    assert "valuation/combiner/stale_support_overlap 1.0 (this version: 0.99)" in logged
    # every site takes part (none declines "payment changed"), the round closes
    for node in fed.nodes:
        record = node.participate(2)
        assert record is not None and record.phase == "committed", record
    _pass(fed, fed.ledger.get_round(2).commit_deadline)
    for node in fed.nodes:
        node.participate(2)
    assert len(fed.ledger.get_submissions(2)) == 3
    _pass(fed, fed.ledger.get_round(2).reveal_deadline)
    service.step()  # value
    service.step()  # finalize
    assert fed.ledger.get_round(2).phase == Phase.FINALIZED
    accept = fed.nodes[0].config.accept  # the sites' widened table, as an auditor passes it
    for r in (1, 2):
        audit = verify_round(fed.ledger, fed.store, r, accept=accept)
        assert audit.passed, [c for c in audit.checks if not c.passed]


def test_a_flag_that_changes_round_1s_settings_exits_2_and_opens_nothing(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = _older_federation(anvil, ipfs_api, tmp_path / "fed")
    _cli(fed, monkeypatch, tmp_path / "cli")
    args = ["aggregator", "run", "--folder", str(tmp_path / "cli"), "--threads", "1"]
    result = CliRunner().invoke(cli, [*args, "--max-sample-ratio", "20"])
    assert result.exit_code == 2, result.output
    assert "round 2 not opened" in result.output
    assert (
        "set by its operator: --max-sample-ratio 20.0 "
        "(valuation/combiner/max_sample_ratio 20.0, round 1's: 10.0)" in result.output
    )
    assert fed.ledger.current_round() == 1
    # round 1's own value given on the command line is no change; nor are flags given at
    # their defaults that set none of the fields round 1 differs in (dp_noise_check and
    # stale_support_overlap, which no flag sets, are still taken from round 1)
    defaults = ["--standing", "--valuation", "shapley", "--metric", "balanced_loss"]
    defaults += ["--valuation-mode", "aggregator", "--seed", "0", "--round-seconds", "600"]
    same = CliRunner().invoke(cli, [*args, "--max-sample-ratio", "10", *defaults])
    assert same.exit_code == 0, same.output
    assert fed.ledger.current_round() == 2
    second = _terms(fed, 2)
    assert {k: second.valuation["combiner"][k] for k in OLDER} == OLDER


def test_a_flag_given_at_this_versions_default_is_not_replaced_by_round_1s(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 1 written with ``max_sample_ratio`` 20 (an older default; this version's is 10):
    ``--max-sample-ratio 10`` given explicitly, or by a config's defaults (click's default_map),
    is the operator's wish, refused naming the flag and both values, not silently swapped for
    round 1's 20 (before this, both exited 0 and opened round 2 at 20). So is a switch given at
    its default: ``--standing`` picks the combiner's ``min_cosine`` -1.0, round 1's is -0.5."""
    older = {**OLDER, "max_sample_ratio": 20.0, "min_cosine": -0.5}
    fed = _older_federation(anvil, ipfs_api, tmp_path / "fed", older)
    assert _terms(fed, 1).valuation["combiner"]["max_sample_ratio"] == 20.0
    _cli(fed, monkeypatch, tmp_path / "cli")
    args = ["aggregator", "run", "--folder", str(tmp_path / "cli"), "--threads", "1"]
    named = (
        "set by its operator: --max-sample-ratio 10.0 "
        "(valuation/combiner/max_sample_ratio 10.0, round 1's: 20.0)"
    )
    given = CliRunner().invoke(cli, [*args, "--max-sample-ratio", "10"])
    assert given.exit_code == 2, given.output
    assert "round 2 not opened" in given.output
    assert named in given.output
    configured = CliRunner().invoke(
        cli, args, default_map={"aggregator": {"run": {"max_sample_ratio": 10.0}}}
    )
    assert configured.exit_code == 2, configured.output
    assert named in configured.output
    standing = CliRunner().invoke(cli, [*args, "--standing"])
    assert standing.exit_code == 2, standing.output
    assert (
        "set by its operator: --standing (valuation/combiner/min_cosine -1.0, round 1's: -0.5); "
        in standing.output
    )
    assert "max_sample_ratio" not in standing.output.split("set by its operator")[1]
    assert fed.ledger.current_round() == 1
    # not given, round 1's values are kept (and said)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert fed.ledger.current_round() == 2
    second = _terms(fed, 2)
    assert payment_differences(_terms(fed, 1), second) == []
    assert second.valuation["combiner"]["max_sample_ratio"] == 20.0
    assert second.valuation["combiner"]["min_cosine"] == -0.5
    logged = (tmp_path / "cli" / "aggregator.log").read_text()
    assert "valuation/combiner/max_sample_ratio 20.0 (this version: 10.0)" in logged
    assert "valuation/combiner/min_cosine -0.5 (this version: -1.0)" in logged
