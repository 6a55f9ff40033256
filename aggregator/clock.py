"""Watching the chain's clock while the aggregator waits on a deadline (no torch, no web3 at
import: ``fedtrail aggregator --help`` reads :data:`STALL_SECONDS`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fedtrail.chain import next_block_timestamp
from fedtrail.errors import ConfigError, chain_read_error

if TYPE_CHECKING:
    from web3 import Web3

__all__ = ["STALL_SECONDS", "ClockWatch"]

log = logging.getLogger("fedtrail.aggregator")

STALL_SECONDS = 30.0
"""Wall-clock seconds the chain's clock may stand still during a wait before the service says so."""


class ClockWatch:
    """Says so, once per stall, when the chain's clock stands still while the service waits on
    a round's deadline: otherwise the wait is silent and endless.

    Deadlines are chain time, judged by the pending block's timestamp
    (:func:`fedtrail.chain.next_block_timestamp`). A dev chain that mines only on transactions
    never reaches a deadline nobody transacts past: Ganache without ``--miner.blockTime`` and
    the embedded chain keep the pending block at the latest block's time (Anvil's pending block
    follows the wall clock). The service keeps waiting: a later transaction may move the clock.
    ``clock`` is the wall clock (monotonic seconds), injectable for tests.
    """

    def __init__(
        self, *, stall_seconds: float = STALL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not stall_seconds > 0:
            raise ConfigError(f"stall_seconds must be positive, got {stall_seconds}")
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._timestamp: int | None = None
        self._since = 0.0
        self._warned = False

    def observe(self, w3: Web3, round_id: int, deadline: int) -> str | None:
        """One look at the chain's clock during a wait for ``deadline``; the warning, when this
        look is the one that says so (also logged)."""
        now, timestamp = self._clock(), next_block_timestamp(w3)
        if timestamp != self._timestamp:
            self._timestamp, self._since, self._warned = timestamp, now, False
            return None
        frozen = now - self._since
        if self._warned or frozen < self.stall_seconds:
            return None
        try:
            latest = w3.eth.get_block("latest")
        except Exception as exc:  # not warned yet: the next look says so, once it can read
            raise chain_read_error(exc, "cannot read the chain's latest block") from exc
        self._warned = True
        message = (
            f"round {round_id}: the chain's clock has not moved for {frozen:.0f} s (latest block "
            f"{latest['number']} at timestamp {latest['timestamp']}, next block at {timestamp}; "
            f"reveal deadline {deadline}, {deadline - timestamp} s of chain time ahead): a dev "
            "chain without --block-time mines only on transactions, so its time stands still "
            "until someone transacts; start Anvil with --block-time 1 (scripts/anvil.sh does, "
            "Ganache: --miner.blockTime 1). Still waiting."
        )
        log.warning(message)
        return message
