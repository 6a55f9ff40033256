"""The deadline stall (issue 19): on a chain that mines only on transactions, a round nobody
submits to never reaches its deadline; the aggregator says so once per stall and keeps waiting."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedtrail.aggregator.service import AggregatorService, ClockWatch
from fedtrail.chain import advance_time, connect, dev_account
from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol.codes import Phase
from fedtrail.simulation.federation import SiteSetup, build_federation
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv

STALL = "the chain's clock has not moved"


class FakeClock:
    """The wall clock the watch reads, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _waiting(
    w3: Web3, coordinator: LocalAccount, site: LocalAccount, tmp: Path, watch: ClockWatch
) -> AggregatorService:
    """A service whose round 1 is open and waits on its deadline: its one site never submits."""
    fed = build_federation(
        w3=w3,
        coordinator=coordinator,
        sites=[SiteSetup(account=site, name="silent", max_samples=100)],
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=load_bundled().val,
    )
    service = fed.service
    service.clock_watch = watch
    assert service.step() is None  # opens round 1
    assert fed.ledger.current_round() == 1
    return service


def _stall_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fedtrail.aggregator"
        and r.levelno == logging.WARNING
        and STALL in r.getMessage()
    ]


def test_a_frozen_chain_clock_is_reported_once_per_stall_and_the_wait_goes_on(
    embedded: ChainEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    service = _waiting(
        embedded.w3,
        embedded.coordinator,
        embedded.sites[0],
        tmp_path,
        ClockWatch(stall_seconds=30, clock=clock),
    )
    caplog.set_level(logging.WARNING, logger="fedtrail.aggregator")
    assert service.step() is None  # the watch's first look
    clock.now += 29
    assert service.step() is None
    assert _stall_warnings(caplog) == []  # not yet 30 s

    clock.now += 2
    assert service.step() is None
    [warning] = _stall_warnings(caplog)
    latest = embedded.w3.eth.get_block("latest")
    assert f"not moved for 31 s (latest block {latest['number']} at timestamp" in warning
    assert f"{latest['timestamp']}" in warning
    assert "round 1:" in warning
    assert "--block-time 1" in warning

    clock.now += 300
    assert service.step() is None
    assert len(_stall_warnings(caplog)) == 1  # once per stall
    assert service.ledger.get_round(1).phase == Phase.OPEN  # still waiting, no crash

    # A transaction moves the clock: that stall is over; the next one is reported again.
    advance_time(embedded.w3, 5)
    assert service.step() is None
    clock.now += 31
    assert service.step() is None
    assert len(_stall_warnings(caplog)) == 2


def test_a_chain_clock_that_advances_is_not_reported(
    embedded: ChainEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    service = _waiting(
        embedded.w3,
        embedded.coordinator,
        embedded.sites[0],
        tmp_path,
        ClockWatch(stall_seconds=30, clock=clock),
    )
    caplog.set_level(logging.WARNING, logger="fedtrail.aggregator")
    for _ in range(5):
        advance_time(embedded.w3, 1)  # a block every poll, as with --block-time
        clock.now += 31
        assert service.step() is None
    assert _stall_warnings(caplog) == []
    assert service.ledger.get_round(1).phase == Phase.OPEN


@pytest.mark.anvil
def test_anvil_without_block_time_does_not_stall_the_deadline(
    anvil_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Anvil's pending block follows the wall clock even when it mines only on transactions
    (the test daemon does): the deadline clock moves, so nothing is reported."""
    service = _waiting(
        connect(anvil_url), dev_account(0), dev_account(2), tmp_path, ClockWatch(stall_seconds=1)
    )
    caplog.set_level(logging.WARNING, logger="fedtrail.aggregator")
    for _ in range(3):
        assert service.step() is None
        time.sleep(1.2)
    assert _stall_warnings(caplog) == []


def test_the_stall_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="stall_seconds must be positive"):
        ClockWatch(stall_seconds=0)


def test_a_failed_read_of_the_latest_block_does_not_use_up_the_warning(
    embedded: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch marked the stall as warned before it read the latest block for its message:
    one failed read (an outage, retried by the service) and the stall was never reported."""
    from fedtrail.errors import ChainUnreachable

    clock = FakeClock()
    watch = ClockWatch(stall_seconds=30, clock=clock)
    w3 = embedded.w3
    assert watch.observe(w3, 1, 10**12) is None
    clock.now += 31
    real = w3.eth.get_block

    def down(block: object, *args: object, **kwargs: object) -> object:
        if block == "latest":
            raise ConnectionResetError(104, "Connection reset by peer")
        return real(block, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(w3.eth, "get_block", down)
    with pytest.raises(ChainUnreachable, match="latest block"):
        watch.observe(w3, 1, 10**12)
    monkeypatch.setattr(w3.eth, "get_block", real)
    clock.now += 1
    warning = watch.observe(w3, 1, 10**12)
    assert warning is not None and STALL in warning
    assert watch.observe(w3, 1, 10**12) is None  # still once per stall
