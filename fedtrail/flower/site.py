"""A site on Flower: its :class:`~fedtrail.node.daemon.SiteNode`, built from the node's own
config.toml, answering the ServerApp's round message with what it did on chain.

The ClientApp (:mod:`fedtrail.flower.client_app`) is a thin layer over :func:`answer`; this
module holds no Flower types, so the logic is tested without a SuperNode.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedtrail.chain import connect, next_block_timestamp
from fedtrail.cli.common import open_checked_store
from fedtrail.errors import ConfigError, LedgerError, RoundStateError, StoreError
from fedtrail.flower.replies import MAX_FIELD_CHARS, SiteReply, sign
from fedtrail.keys import PASSPHRASE_ENV, load_keystore
from fedtrail.ledger import Ledger, Submission
from fedtrail.node.config import load_node_config
from fedtrail.node.daemon import FINAL_PHASES, HandedUpdate, RoundRecord, SiteNode

log = logging.getLogger("fedtrail.flower.site")

UNKNOWN_ROUND_WAIT = 10.0
"""Seconds a site retries a round its chain does not know (an RPC node a block behind the
ServerApp's) before it answers ``none``: a round id from the message alone holds no node."""
REVEAL_SLACK = 30.0
"""Seconds past the chain's reveal deadline a site keeps retrying a failing step (the store or
the chain unreachable for a while): after it the ledger refuses the reveal anyway."""


def check_wait(wait_seconds: object) -> float:
    """``wait_seconds`` from a ServerApp's message as a finite number >= 0; raises
    :class:`ConfigError` otherwise (NaN or infinity would keep the site retrying forever)."""
    if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, int | float):
        raise ConfigError(f"wait-seconds must be a number, got {wait_seconds!r}")
    if not math.isfinite(wait_seconds) or wait_seconds < 0:
        raise ConfigError(f"wait-seconds must be a finite number >= 0, got {wait_seconds!r}")
    return float(wait_seconds)


def check_ledger(node: SiteNode, request: Mapping[str, Any]) -> None:
    """Raises :class:`ConfigError` when a round request names another ledger or chain than
    the site's own (``ledger``, ``chain-id``; a SuperNode serving two federations, or a
    ServerApp of another one). The site acts only on its own config's ledger whatever the
    message says; this refuses such a message clearly instead of taking part in whatever
    round of the site's own ledger has the same number."""
    ledger, chain_id = request.get("ledger"), request.get("chain-id")
    if ledger is not None and (
        not isinstance(ledger, str) or ledger.lower() != node.ledger.address.lower()
    ):
        raise ConfigError(
            f"the round request is for ledger {str(ledger)[:64]!r}, not this site's "
            f"{node.ledger.address}; not taking part"
        )
    if chain_id is not None and (
        isinstance(chain_id, bool)
        or not isinstance(chain_id, int)
        or chain_id != node.ledger.chain_id
    ):
        raise ConfigError(
            f"the round request is for chain {str(chain_id)[:32]!r}, not this site's "
            f"{node.ledger.chain_id}; not taking part"
        )


def wait_limit(node: SiteNode, round_id: int, wait_seconds: float) -> float:
    """How long the site may retry ``round_id``: what the message asks, but never past the
    chain's reveal deadline (plus :data:`REVEAL_SLACK`), nor more than
    :data:`UNKNOWN_ROUND_WAIT` for a round the chain does not have. The chain bounds it, not
    the message: a ServerApp cannot hold a site's ClientApp by asking it to wait."""
    wait = check_wait(wait_seconds)
    try:
        info = node.ledger.get_round(round_id)
        now = next_block_timestamp(node.ledger.w3)
    except RoundStateError:
        return min(wait, UNKNOWN_ROUND_WAIT)
    except LedgerError:  # ChainUnreachable included
        return wait  # the chain unreachable: retried for as long as asked (finite)
    left = info.reveal_deadline - now
    return min(wait, max(float(left), 0.0) + REVEAL_SLACK)


def site_wait(node: SiteNode, round_id: int, asked: float) -> float:
    """How long the site keeps at ``round_id`` for a ServerApp's message that asks ``asked``
    seconds: at least until the chain's reveal deadline (plus :data:`REVEAL_SLACK`), whatever
    the message says, since a site that stops after committing withholds its own update. The
    message is not signed and the ServerApp writes it node by node: one site told to wait 0
    (or sent no wait: the default) committed, answered ``committed`` at once and never revealed,
    its commitment read on chain as its own failure and ``audit verify`` passing (attack a107).
    The site still stops as soon as its round is over (revealed, skipped, declined), and
    :func:`wait_limit` still bounds the wait by the deadline; ``asked`` alone counts only for
    a round the chain does not know or while the chain cannot be read, and then never less
    than :data:`UNKNOWN_ROUND_WAIT` (a round the chain does not know) or :data:`REVEAL_SLACK`
    (the chain unreachable): one failed read must not turn a ServerApp's ``0`` into "give up
    now" (a107 again)."""
    try:
        info = node.ledger.get_round(round_id)
        now = next_block_timestamp(node.ledger.w3)
    except RoundStateError:
        return max(asked, UNKNOWN_ROUND_WAIT)
    except LedgerError:  # ChainUnreachable included
        return max(asked, REVEAL_SLACK)
    return max(asked, max(float(info.reveal_deadline - now), 0.0) + REVEAL_SLACK)


def read_secret(path: str | Path | None, what: str) -> str:
    """A passphrase from ``path`` (its first line), else from ``$FEDTRAIL_PASSPHRASE``."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:  # not UTF-8: was a traceback
            raise ConfigError(f"cannot read the passphrase file of {what}: {exc}") from None
        line = text.splitlines()[0] if text else ""
        if not line:
            raise ConfigError(f"the passphrase file of {what} ({path}) is empty")
        return line
    env = os.environ.get(PASSPHRASE_ENV)
    if not env:
        raise ConfigError(
            f"no passphrase for {what}: give a passphrase file or set {PASSPHRASE_ENV}"
        )
    return env


@dataclass(frozen=True, kw_only=True)
class SiteSetup:
    """Where a SuperNode's site lives: its node config file (the folder is the file's) and
    optionally a file holding the keystore's passphrase (from the SuperNode's --node-config)."""

    config: Path
    passphrase_file: Path | None = None
    threads: int = 1
    """torch CPU threads for training (1: several sites on one machine do not oversubscribe
    it, and a site's update is reproducible only for a fixed thread count)."""

    def __post_init__(self) -> None:
        if not Path(self.config).is_file():
            raise ConfigError(f"node config {self.config} does not exist")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {self.threads!r}")


_SITES: dict[Path, SiteNode] = {}
_LOCK = threading.Lock()


def site_node(setup: SiteSetup) -> SiteNode:
    """The site's node, built once per process (every step is recorded in the node's
    state.json, so a node built afresh for each message resumes where the last one stopped)."""
    import torch

    torch.set_num_threads(setup.threads)
    path = Path(setup.config).resolve()
    with _LOCK:
        if path in _SITES:
            return _SITES[path]
        folder = path.parent
        config = load_node_config(path)
        if not config.contract:
            raise ConfigError(f"{path} names no contract")
        ledger = Ledger.connect(connect(config.rpc_url), config.contract)
        account = load_keystore(
            folder / config.keystore, read_secret(setup.passphrase_file, str(path))
        )
        store = open_checked_store(config.store)
        train, val = config.data.load(base=folder, image_size=config.model.image_size)
        node = SiteNode(
            ledger=ledger,
            store=store,
            account=account,
            config=config,
            folder=folder,
            train=train,
            val=val,
        )
        node.check_registered()
        _SITES[path] = node
        return node


def sign_as(node: SiteNode, reply: SiteReply) -> SiteReply:
    """``reply`` signed with the site's own key, bound to the node's ledger and chain."""
    return sign(reply, node.account, chain_id=node.ledger.chain_id, ledger=node.ledger.address)


def _reply(node: SiteNode, round_id: int, record: RoundRecord | None, note: str = "") -> SiteReply:
    return sign_as(node, _unsigned(node, round_id, record, note))


def _unsigned(
    node: SiteNode, round_id: int, record: RoundRecord | None, note: str = ""
) -> SiteReply:
    most = MAX_FIELD_CHARS["note"]
    note = note if len(note) <= most else note[: most - 3] + "..."  # an error's text can be long
    if record is None or record.phase == "skipped":
        why = note or (record.note[:most] if record is not None else "did not take part")
        return SiteReply(round=round_id, site=node.address, phase="none", note=why)
    if record.phase in ("revealed", "submitted"):
        # What the site signs is its reveal as the chain holds it (a transaction under its own
        # key), not the local record: a record rebuilt after a lost state.json has no sample
        # count (0), and a signed claim of 0 samples would be evidence against an honest site.
        # But only where the chain's record agrees with every field the local record holds.
        sub = node.ledger.get_submission(round_id, node.address)
        if sub is None or not sub.revealed:
            return SiteReply(
                round=round_id,
                site=node.address,
                phase="committed" if sub is not None else "none",
                note="this node's record says revealed, but the chain holds no reveal of ours",
            )
        differ = _unlike_record(record, sub)
        if differ:
            # a69: the endpoint reports a reveal other than the one this node sent (an endpoint
            # the aggregator runs can answer one read falsely); signed, that read would be
            # evidence against the site. A claim of a commitment is never evidence.
            return SiteReply(
                round=round_id,
                site=node.address,
                phase="committed",
                note=f"the chain's reveal as this node's endpoint reports it differs from the "
                f"update this node sent in {', '.join(differ)}; not signing it",
            )
        return SiteReply(
            round=round_id,
            site=node.address,
            phase="revealed",
            cid=sub.cid,
            sha256=sub.sha256,
            num_samples=sub.num_samples,
        )
    return SiteReply(round=round_id, site=node.address, phase="committed", note=note)


def _unlike_record(record: RoundRecord, sub: Submission) -> tuple[str, ...]:
    """The fields in which the reveal ``sub`` (as the node's endpoint reports it) differs from
    what the node's own ``record`` says it sent; a field the record lacks (rebuilt after a lost
    state.json: no sample count) is not compared."""
    out = []
    if record.cid and record.cid != sub.cid:
        out.append("cid")
    if record.sha256 and _hex(record.sha256) != _hex(sub.sha256):
        out.append("sha256")
    if record.num_samples and record.num_samples != sub.num_samples:
        out.append("num_samples")
    return tuple(out)


def _hex(value: str) -> str:
    return value.lower().removeprefix("0x")


def answer(
    node: SiteNode, round_id: int, *, wait_seconds: float, update: HandedUpdate | None = None
) -> SiteReply:
    """Takes part in ``round_id`` to the end and says what the chain now holds.

    The node's own restart-safe steps, as ``fedtrail node run`` takes them: train, encode and
    commit before the commit deadline; once the chain's clock passes it, store the update and
    reveal it. The node retries for up to ``wait_seconds`` (the ServerApp sends the time left
    until the reveal deadline; the chain's reveal deadline bounds it, :func:`wait_limit`, and a
    wait that is not a finite number >= 0 raises :class:`ConfigError`). The reply is the node's
    record of what it sent, which the ServerApp checks against the chain anyway. The reply is
    signed with the site's key: what it states is then the site's own statement, which the
    aggregator holds against it (score 0, ``CONTRADICTED``) when it contradicts the chain.

    ``update``: an update the caller trained (:mod:`fedtrail.flower.mod`), submitted in place
    of the node's own training (:meth:`~fedtrail.node.daemon.SiteNode.participate`).
    """
    give_up = time.monotonic() + wait_limit(node, round_id, wait_seconds)
    while True:
        try:
            record = node.participate(round_id, update=update)
        except (StoreError, LedgerError) as exc:
            log.error("round %d failed: %s", round_id, exc)
            if time.monotonic() >= give_up:
                return _reply(node, round_id, None, f"failed: {exc}")
            time.sleep(node.config.poll_interval)
            continue
        if record is None or record.phase in FINAL_PHASES or time.monotonic() >= give_up:
            return _reply(node, round_id, record)
        time.sleep(min(node.config.poll_interval, 1.0))
