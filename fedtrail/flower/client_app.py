"""The fedtrail ClientApp: one site per SuperNode, with the site's own key.

Start each site's SuperNode with its node folder's config (written by ``fedtrail node init``)::

    flower-supernode --superlink LINK:PORT --node-config 'config="/srv/site/config.toml"
        passphrase-file="/srv/site/passphrase"'

``passphrase-file`` is optional (else ``$FEDTRAIL_PASSPHRASE``, as for ``fedtrail node run``);
``threads`` (default 1) sets torch's CPU threads for training.
The app answers one ``train`` message per round, carrying ``round`` and ``wait-seconds`` (and
the ServerApp's ``ledger`` and ``chain-id``: a message for another ledger is refused): the
site trains, commits on chain, waits for the commit deadline, stores the update on IPFS and
reveals it, then replies with a ``reply`` ConfigRecord
(:class:`~fedtrail.flower.replies.SiteReply`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedtrail.cli.output import basic_printable_logging
from fedtrail.errors import ConfigError
from fedtrail.flower.replies import SiteReply
from fedtrail.flower.site import (
    SiteSetup,
    answer,
    check_ledger,
    check_wait,
    site_node,
    site_wait,
)

log = logging.getLogger("fedtrail.flower.client")

REPLY = "reply"
REQUEST = "request"

app = ClientApp()


def setup_from(context: Context) -> SiteSetup:
    """The site this SuperNode runs, from its ``--node-config``."""
    cfg = context.node_config
    path = cfg.get("config")
    if not isinstance(path, str) or not path:
        raise ConfigError(
            "this SuperNode has no fedtrail site: start it with "
            "--node-config 'config=\"/path/to/site/config.toml\"'"
        )
    secret = cfg.get("passphrase-file")
    threads = cfg.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise ConfigError(f"node config threads must be an integer, got {threads!r}")
    return SiteSetup(
        config=Path(path),
        passphrase_file=Path(secret) if isinstance(secret, str) and secret else None,
        threads=threads,
    )


def request_of(msg: Message) -> tuple[int, float]:
    """(round, wait seconds) from a ServerApp message."""
    records = msg.content.config_records
    if REQUEST not in records:
        raise ConfigError("message holds no 'request' ConfigRecord")
    req = records[REQUEST]
    round_id, wait = req.get("round"), req.get("wait-seconds", 0.0)
    if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 1:
        raise ConfigError(f"request round must be a positive integer, got {round_id!r}")
    try:
        return round_id, check_wait(wait)
    except ConfigError as exc:
        raise ConfigError(f"request {exc}") from None


def reply_message(msg: Message, reply: SiteReply) -> Message:
    return Message(RecordDict({REPLY: ConfigRecord(reply.to_config())}), reply_to=msg)


def handle(msg: Message, context: Context) -> SiteReply:
    """What this SuperNode's site answers to a round's ``train`` message."""
    basic_printable_logging()  # replies and Flower errors carry the other side's text
    logging.getLogger("httpx").setLevel(logging.WARNING)
    round_id, wait = request_of(msg)
    node = site_node(setup_from(context))
    check_ledger(node, msg.content.config_records[REQUEST])
    reply = answer(node, round_id, wait_seconds=site_wait(node, round_id, wait))
    log.info("round %d: %s", round_id, reply)
    return reply


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Take part in the round: train on its start model, commit, then (after the commit
    deadline) store the update and reveal it; reply with what was submitted."""
    return reply_message(msg, handle(msg, context))
