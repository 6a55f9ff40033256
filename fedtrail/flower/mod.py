"""A ClientApp mod that puts an existing Flower app's own training on the ledger.

    app = ClientApp(mods=[ledger_mod])          # the app's @app.train() stays as it is

The server side is :class:`~fedtrail.flower.strategy.LedgerStrategy`. Its ``train`` messages
carry a ``fedtrail`` ConfigRecord (round, seconds to the reveal deadline, and which records hold
the model and the sample count). On such a message the mod, with the site's own
:class:`~fedtrail.node.daemon.SiteNode` (built from the SuperNode's ``--node-config
'config="/srv/site/config.toml" passphrase-file="..."'``, as for the fedtrail ClientApp):

1. checks that the model in the message (every ArrayRecord it holds) is the round's start
   model on chain (the store's bytes under the sha256 the chain holds): the ServerApp cannot
   make a site train on anything else;
2. checks that every other setting in the message (each ConfigRecord and MetricRecord entry
   but the ``fedtrail`` request and Flower's ``server-round``) is one the site fixed itself
   (``make_ledger_mod(train_config=...)``): Flower's messages are not signed and a project's
   train function reads its learning rate or epochs from them, so a ServerApp could otherwise
   hand one chosen site ``lr = 0`` and have it submit, under its own key, an update worth
   nothing (attack a106); an entry the site fixed that the message lacks is written in at the
   site's value (the app's default does not apply), an entry of the ``fedtrail`` request
   other than its own is refused;
3. calls the app's own train function with a context whose ``run_config`` is the site's
   ``train_config`` (Flower's ``run_config`` is the aggregator's ``flwr run --run-config``),
   takes the trained model from its reply takes the trained model from its reply (the
   ArrayRecord) and the sample count (the MetricRecord entry ``num-examples``, or the key the
   strategy names);
4. hands ``trained - start`` to the node (``SiteNode.participate(update=...)``), which encodes it
   with its codec and residual, commits, waits for the commit deadline, puts it on the store and
   reveals it, with the site's key; every step is recorded in the node's state.json, so a
   message delivered again after a crash resumes the submission instead of training again;
5. replies with the app's MetricRecords and ConfigRecords, without its ArrayRecord (the update
   travels on the store under the CID on chain, not in the reply), and a ``fedtrail-reply``
   ConfigRecord: the signed :class:`~fedtrail.flower.replies.SiteReply` that the strategy
   checks against the chain.

Any other message (evaluate, query, a train message of another strategy) passes through.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedtrail.chain import next_block_timestamp
from fedtrail.errors import ConfigError
from fedtrail.flower.replies import SiteReply
from fedtrail.flower.site import answer, check_ledger, check_wait, site_node, site_wait
from fedtrail.node.daemon import HandedUpdate, SiteNode
from fedtrail.protocol.codes import Phase
from fedtrail.storage.codec import decode_model, default_max_bytes

log = logging.getLogger("fedtrail.flower.mod")

REQUEST = "fedtrail"
"""The ConfigRecord a LedgerStrategy adds to its train messages."""
REQUEST_KEYS = frozenset(
    {
        "round",
        "wait-seconds",
        "start-cid",
        "start-sha256",
        "ledger",
        "chain-id",
        "arrays-key",
        "samples-key",
    }
)
"""The entries of that ConfigRecord (:meth:`fedtrail.flower.rounds.LedgerRounds.begin` and
:class:`~fedtrail.flower.strategy.LedgerStrategy`); any other entry is refused: it would be a
setting the ServerApp passes to the app's train function unchecked."""
REPLY = "fedtrail-reply"
"""The ConfigRecord the mod adds to the app's reply: the site's signed SiteReply."""
DEFAULT_SAMPLES_KEY = "num-examples"
CONFIG = "config"
"""The ConfigRecord Flower's strategies send their train settings in (``configrecord_key``)."""

NodeFor = Callable[[Context], SiteNode]


def node_from_config(context: Context) -> SiteNode:
    """The site's node from the SuperNode's ``--node-config`` (``config``, ``passphrase-file``,
    ``threads``), built once per process."""
    from fedtrail.flower.client_app import setup_from

    return site_node(setup_from(context))


def _request(msg: Message) -> tuple[int, float, str, str] | None:
    """(round, wait seconds, model record key, sample count key) of a LedgerStrategy train
    message; None for any other message."""
    if not msg.metadata.message_type.startswith("train") or not msg.has_content():
        return None
    if REQUEST not in msg.content.config_records:
        return None
    req = msg.content.config_records[REQUEST]
    unknown = sorted(set(req) - REQUEST_KEYS)
    if unknown:
        raise ConfigError(
            f"the fedtrail request holds entries this site does not know: "
            f"{', '.join(repr(k[:80]) for k in unknown[:5])}; not training"
        )
    round_id, wait = req.get("round"), req.get("wait-seconds", 0.0)
    arrays_key, samples_key = req.get("arrays-key", ""), req.get("samples-key", "")
    if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 1:
        raise ConfigError(f"fedtrail request round must be a positive integer, got {round_id!r}")
    try:
        wait = check_wait(wait)
    except ConfigError as exc:
        raise ConfigError(f"fedtrail request {exc}") from None
    if not isinstance(arrays_key, str) or not isinstance(samples_key, str):
        raise ConfigError("fedtrail request arrays-key and samples-key must be strings")
    return round_id, wait, arrays_key, samples_key


def _arrays(content: RecordDict, key: str, what: str) -> ArrayRecord:
    records = content.array_records
    if key:
        if key not in records:
            raise ConfigError(f"{what} holds no ArrayRecord {key!r}")
        return records[key]
    if len(records) != 1:
        raise ConfigError(f"{what} holds {len(records)} ArrayRecords; the strategy names none")
    return next(iter(records.values()))


def _samples(content: RecordDict, key: str) -> int:
    for record in content.metric_records.values():
        if key in record:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                break
            if not math.isfinite(value) or value != int(value) or value < 1:
                break  # NaN and infinity first: int() of them raises ValueError/OverflowError
            return int(value)
    raise ConfigError(f"the app's train reply states no positive integer sample count {key!r}")


def start_state(node: SiteNode, round_id: int) -> dict[str, torch.Tensor]:
    """The round's start model (federated tensors) from the store, by the chain's sha256."""
    info = node.ledger.get_round(round_id)
    spec = node.config.model
    # the aggregator chose this blob: refused after the store's size probe, not after reading
    # up to the store's general limit (256 MiB where the SmallCNN's models are 0.9 MB)
    blob = node.store.get(info.start_cid, info.start_sha256, max_bytes=default_max_bytes(spec))
    state, _ = decode_model(blob, spec=spec)
    return state


FLOWER_KEYS = frozenset({"server-round"})
"""Entries Flower's own strategies put in every train message (FedAvg's round counter), left
to the ServerApp."""

TrainSetting = int | float | str | bool | bytes | list[int] | list[float] | list[str] | list[bool]


def _same(a: object, b: object) -> bool:
    """Equal values of the same type (``True`` is not ``1``, ``1`` not ``1.0``)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def check_settings(
    content: RecordDict, train_config: Mapping[str, TrainSetting], round_id: int
) -> None:
    """Raises ConfigError unless every entry of the train message's ConfigRecords and
    MetricRecords (but the ``fedtrail`` request and :data:`FLOWER_KEYS`) holds the value the
    site fixed for it in ``train_config``. The ServerApp chooses these messages, unsigned, node
    by node: a learning rate of 0 (or 1e3, or 0 local epochs) sent to one site made it commit
    and reveal, under its own key, an update the valuation scores 0, with ``audit verify``
    passing (a106). An entry the site did not fix is refused too: it would be the ServerApp's
    choice."""
    records: list[tuple[str, Mapping[str, object]]] = [
        (key, record) for key, record in content.config_records.items() if key != REQUEST
    ]
    records += list(content.metric_records.items())
    for name, record in records:
        for key, value in record.items():
            if key in FLOWER_KEYS:
                continue
            if key not in train_config:
                raise ConfigError(
                    f"round {round_id}: the train message sets {name}[{key[:80]!r}] = "
                    f"{str(value)[:80]}, a setting this site does not fix "
                    "(make_ledger_mod(train_config=...)): Flower's messages are not signed, so "
                    "the ServerApp could set it for this site alone; not training"
                )
            if not _same(value, train_config[key]):
                raise ConfigError(
                    f"round {round_id}: the train message sets {name}[{key[:80]!r}] = "
                    f"{str(value)[:80]}, but this site trains with {train_config[key]!r} "
                    "(make_ledger_mod(train_config=...)); not training"
                )


def with_site_settings(content: RecordDict, train_config: Mapping[str, TrainSetting]) -> None:
    """Writes every setting the site fixed into each ConfigRecord of a train message (but the
    ``fedtrail`` request) that lacks it, and into a ``"config"`` ConfigRecord (the record
    Flower's strategies send) when the message holds none: a train function reading
    ``config.get("local-epochs", 5)`` then reads the site's value, not its default, when the
    ServerApp leaves the entry out. Run after :func:`check_settings`, so an entry present
    already holds the site's value."""
    if not train_config:
        return
    records = [(k, r) for k, r in content.config_records.items() if k != REQUEST]
    if not records:
        content[CONFIG] = ConfigRecord(dict(train_config))
        return
    for _, record in records:
        for key, value in train_config.items():
            if key not in record:
                record[key] = value


def site_context(context: Context, train_config: Mapping[str, TrainSetting]) -> Context:
    """``context`` with the site's fixed settings as its ``run_config``, for the app's train
    function. Flower builds ``run_config`` from the app's pyproject and the ``flwr run
    --run-config`` overrides: the aggregator's choice, for every site alike, and read by
    Flower's own templates (``context.run_config["local-epochs"]``). The app sees only what the
    site fixed (``make_ledger_mod(train_config=...)``); a key it reads that the site did not
    fix raises in the app (or takes the app's own default), never the aggregator's value. The
    node config and the state are the context's own (the state object is shared, so what the
    app keeps there persists)."""
    run_config = {k: v for k, v in train_config.items() if isinstance(v, bool | int | float | str)}
    return dataclasses.replace(context, run_config=run_config)


def check_start(arrays: ArrayRecord, start: dict[str, torch.Tensor], round_id: int) -> None:
    """Raises ConfigError unless ``arrays`` holds exactly the round's start model."""
    sent = arrays.to_torch_state_dict()
    differ = [
        k
        for k, v in start.items()
        if k not in sent or sent[k].shape != v.shape or not torch.equal(sent[k].float(), v)
    ]
    if differ:
        raise ConfigError(
            f"round {round_id}: the model in the message is not the round's start model on "
            f"chain ({len(differ)} tensor(s) differ, e.g. {differ[0]}); not training on it"
        )


def handed_update(
    reply: Message, start: dict[str, torch.Tensor], *, arrays_key: str, samples_key: str
) -> HandedUpdate:
    """``trained - start`` and the sample count from the app's train reply."""
    trained = _arrays(reply.content, arrays_key, "the app's train reply").to_torch_state_dict()
    missing = [k for k in start if k not in trained]
    if missing:
        raise ConfigError(f"the app's trained model lacks {len(missing)} tensor(s): {missing[:3]}")
    delta = {k: trained[k].detach().to(torch.float32) - v for k, v in start.items()}
    wrong = [k for k, v in start.items() if delta[k].shape != v.shape]
    if wrong:
        raise ConfigError(f"the app's trained model changed the shape of {wrong[:3]}")
    return HandedUpdate(delta=delta, num_samples=_samples(reply.content, samples_key))


def _reply(msg: Message, app_reply: Message | None, reply: SiteReply) -> Message:
    content = RecordDict()
    if app_reply is not None:
        for key, metrics in app_reply.content.metric_records.items():
            content[key] = metrics
        for key, config in app_reply.content.config_records.items():
            content[key] = config
    content[REPLY] = ConfigRecord(reply.to_config())
    return Message(content, reply_to=msg)


def make_ledger_mod(
    node_for: NodeFor = node_from_config,
    *,
    samples_key: str = DEFAULT_SAMPLES_KEY,
    train_config: Mapping[str, TrainSetting] | None = None,
) -> Mod:
    """The mod, with the site's node from ``node_for(context)`` (default: the SuperNode's
    ``--node-config``; an in-process federation passes its own nodes).

    ``samples_key``: the MetricRecord entry of the app's train reply that states the sample
    count the site submits on chain. The site's own setting, not the message's: Flower's
    messages are not signed, so a request naming another key (a SuperLink pointing it at
    ``"epochs": 1`` to cut the site's weight) is refused; a LedgerStrategy names the same key
    (its ``samples_key``).

    ``train_config``: the training settings the site accepts in a train message (its
    ConfigRecords' and MetricRecords' entries, e.g. ``{"lr": 0.05, "local-epochs": 1}``), each
    at exactly that value and type; a message setting anything else is refused before training
    (:func:`check_settings`; Flower's ``server-round`` is allowed). Default: none, so a train
    message may carry no setting but ``server-round``. A fixed entry the message lacks is
    written into its ConfigRecords at the site's value (:func:`with_site_settings`), and the
    app's train function gets ``train_config`` as its ``context.run_config``
    (:func:`site_context`), not the aggregator's run config."""
    if not samples_key:
        raise ConfigError("samples_key must name a MetricRecord entry")
    fixed = dict(train_config or {})

    def ledger_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        request = _request(msg)
        if request is None:
            return call_next(msg, context)
        round_id, wait, arrays_key, asked_key = request
        if asked_key and asked_key != samples_key:
            raise ConfigError(
                f"the train message's samples-key is {asked_key[:80]!r}, but this site states its "
                f"sample count under {samples_key!r} (make_ledger_mod(samples_key=...)); "
                "not training"
            )
        node = node_for(context)
        check_ledger(node, msg.content.config_records[REQUEST])
        info = node.ledger.get_round(round_id)
        app_reply: Message | None = None
        update: HandedUpdate | None = None
        open_now = (
            info.phase == Phase.OPEN
            and next_block_timestamp(node.ledger.w3) <= info.commit_deadline
        )
        if round_id not in node.state.rounds and open_now:
            start = start_state(node, round_id)
            _arrays(msg.content, arrays_key, "the train message")
            check_settings(msg.content, fixed, round_id)
            # Every ArrayRecord, not only the one the request names: the app's train function
            # reads its own key, and a start model beside another model would make the site
            # train on the other one (its update, trained - start, carrying it).
            for record in msg.content.array_records.values():
                check_start(record, start, round_id)
            with_site_settings(msg.content, fixed)
            began = time.perf_counter()
            app_reply = call_next(msg, site_context(context, fixed))
            if app_reply.has_error():
                return app_reply
            update = handed_update(app_reply, start, arrays_key=arrays_key, samples_key=samples_key)
            update = HandedUpdate(
                delta=update.delta,
                num_samples=update.num_samples,
                train_seconds=time.perf_counter() - began,
            )
        # else: already encoded (a message delivered again) or too late: no training
        reply = answer(node, round_id, wait_seconds=site_wait(node, round_id, wait), update=update)
        log.info("round %d: %s", round_id, reply)
        return _reply(msg, app_reply, reply)

    return ledger_mod


ledger_mod: Mod = make_ledger_mod()
"""The mod for a SuperNode started with ``--node-config 'config="/srv/site/config.toml"'``."""
