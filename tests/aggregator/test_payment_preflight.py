"""An aggregator restarted with settings that change what round 1's terms fixed (the rule, the
valuation, the validation split) does not open a round every honest node would refuse and
``audit verify`` would fail: it raises before any transaction, naming each change."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.aggregator import commands
from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.cli import cli
from fedtrail.errors import ConfigError, PaymentSettingsChanged
from fedtrail.ledger import Ledger
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.datasets import ImageDataset, load_bundled
from fedtrail.protocol.codes import Phase
from tests.aggregator.test_service_reads import CountingStore, _rounds
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIRST = AggregatorSettings(explain_method=None)


def _service(
    env: ChainEnv,
    ledger: Ledger,
    store: CountingStore,
    folder: Path,
    settings: AggregatorSettings,
    validation: ImageDataset | None = None,
) -> AggregatorService:
    return AggregatorService(
        ledger=ledger,
        store=store,
        account=env.aggregator,
        validation=validation if validation is not None else load_bundled().val,
        settings=settings,
        folder=folder,
    )


@pytest.fixture
def after_round_1(embedded: ChainEnv, tmp_path: Path) -> tuple[Ledger, CountingStore]:
    ledger = embedded.deploy()
    store = CountingStore(tmp_path / "store")
    sites = embedded.sites[:3]
    for i, acct in enumerate(sites):
        ledger.register_site(embedded.coordinator, acct.address, f"site-{i}", 100)
    _rounds(_service(embedded, ledger, store, tmp_path / "agg", FIRST), store, sites, 1)
    assert ledger.get_round(1).phase == Phase.FINALIZED
    return ledger, store


def test_a_restart_with_another_rule_or_split_opens_nothing_and_names_the_changes(
    embedded: ChainEnv, tmp_path: Path, after_round_1: tuple[Ledger, CountingStore]
) -> None:
    ledger, store = after_round_1
    changed = AggregatorSettings(
        explain_method=None, rule=AggregationRule(name="median"), valuation="mc_shapley"
    )
    val = load_bundled().val
    smaller = val.subset(list(range(80)))
    restarted = _service(embedded, ledger, store, tmp_path / "agg2", changed, smaller)
    with pytest.raises(PaymentSettingsChanged) as caught:
        restarted.open_next()
    message = str(caught.value)
    assert "round 2 not opened" in message
    assert "aggregation rule" in message and "median" in message
    assert "valuation" in message and "mc_shapley" in message
    assert "(270 images) -> " in message and "(80 images)" in message
    assert isinstance(caught.value, ConfigError)  # the CLI's usage exit (2)
    assert ledger.current_round() == 1  # no transaction was sent


def test_a_restart_with_round_1s_settings_opens_round_2(
    embedded: ChainEnv, tmp_path: Path, after_round_1: tuple[Ledger, CountingStore]
) -> None:
    ledger, store = after_round_1
    restarted = _service(embedded, ledger, store, tmp_path / "agg2", FIRST)
    assert restarted.open_next() == 2


def test_a_restart_during_round_2_with_changed_settings_stops_at_start(
    embedded: ChainEnv, tmp_path: Path, after_round_1: tuple[Ledger, CountingStore]
) -> None:
    """The check at start: round 2 is open under round 1's settings; a restart with another
    rule stops before it values, finalizes or opens anything (without it, the restarted run
    would wait for round 2's deadline and only fail when round 3 is due)."""
    ledger, store = after_round_1
    assert _service(embedded, ledger, store, tmp_path / "agg", FIRST).open_next() == 2
    changed = AggregatorSettings(explain_method=None, rule=AggregationRule(name="median"))
    restarted = _service(embedded, ledger, store, tmp_path / "agg2", changed)
    block = ledger.w3.eth.block_number
    # without the check the run would wait for round 2's deadline: stop it instead of hanging
    timer = threading.Timer(10.0, restarted.stop_event.set)
    timer.start()
    try:
        with pytest.raises(PaymentSettingsChanged, match="round 3 not opened"):
            restarted.run(rounds=1)
    finally:
        timer.cancel()
    assert ledger.w3.eth.block_number == block  # no transaction
    assert ledger.get_round(2).phase == Phase.OPEN


def test_aggregator_run_exits_2_naming_the_change(
    embedded: ChainEnv,
    tmp_path: Path,
    after_round_1: tuple[Ledger, CountingStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator's view: `aggregator run` with another rule prints the change and exits with
    the usage code, and opens nothing."""
    ledger, _ = after_round_1
    monkeypatch.setattr(commands, "open_ledger", lambda *_: ledger)
    monkeypatch.setattr(commands, "load_signer", lambda *_: embedded.aggregator)
    args = ["aggregator", "run", "--store", str(tmp_path / "store"), "--rule", "median"]
    args += ["--folder", str(tmp_path / "cli"), "--threads", "1", "--rounds", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "round 2 not opened" in result.output
    assert "aggregation rule" in result.output and "median" in result.output
    assert ledger.current_round() == 1
