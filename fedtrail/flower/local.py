"""Flower apps in one process: a :class:`~flwr.serverapp.Grid` that delivers each message to a
ClientApp in a thread of this process, and a clock for the embedded chain.

For the tests, the README example's test and ``scripts/bench/flower_overhead.py``: the
ServerApp's strategy and the ClientApps' functions and mods are the deployment's own; what this
replaces is only the transport (SuperLink, SuperNodes, one process per message). Each message
and reply is deep-copied on the way, as serialisation would, so no app shares objects with
another. Not a runtime: nothing here authenticates, retries or survives a crash.
"""

from __future__ import annotations

import copy
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedtrail.chain import advance_time, block_timestamp, is_embedded, next_block_timestamp
from fedtrail.errors import ConfigError
from fedtrail.ledger import Ledger
from fedtrail.protocol.codes import Phase

log = logging.getLogger("fedtrail.flower.local")

APP_ERROR = 1
"""The error code of a reply whose ClientApp raised."""


class LocalGrid(Grid):
    """Delivers messages to in-process ClientApps, one thread per message (the sites of a
    round run side by side, as SuperNodes do). ``nodes``: node id -> (app, context)."""

    def __init__(self, nodes: Mapping[int, tuple[ClientApp, Context]], *, run_id: int = 1) -> None:
        if not nodes:
            raise ConfigError("a LocalGrid needs at least one node")
        if SUPERLINK_NODE_ID in nodes:
            raise ConfigError(f"node id {SUPERLINK_NODE_ID} is the SuperLink's")
        self.nodes = dict(nodes)
        self._run = Run.create_empty(run_id)
        # What Flower's ServerApp runner sets in its process: messages the strategy builds are
        # from this run and the SuperLink's node.
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self._pool = ThreadPoolExecutor(
            max_workers=len(self.nodes), thread_name_prefix="flower-node"
        )
        self._pending: dict[str, Future[Message]] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.nodes)

    def _deliver(self, msg: Message) -> Message:
        app, context = self.nodes[int(msg.metadata.dst_node_id)]
        try:
            reply = app(msg, context)
        except Exception as exc:  # a ClientApp that raises answers with an error reply
            log.warning("node %d: %s: %s", msg.metadata.dst_node_id, type(exc).__name__, exc)
            reply = Message(Error(APP_ERROR, f"{type(exc).__name__}: {exc}"), reply_to=msg)
        reply = copy.deepcopy(reply)
        reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        return reply

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            if int(msg.metadata.dst_node_id) not in self.nodes:
                raise ConfigError(f"no node {msg.metadata.dst_node_id} in this LocalGrid")
            sent = copy.deepcopy(msg)
            sent.metadata.__dict__["_message_id"] = msg_id = str(uuid.uuid4())
            self._pending[msg_id] = self._pool.submit(self._deliver, sent)
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out = []
        for msg_id in list(message_ids):
            future = self._pending.get(msg_id)
            if future is not None and future.done():
                del self._pending[msg_id]
                out.append(future.result())
        return out

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        ids = list(self.push_messages(messages))
        wait([self._pending[i] for i in ids], timeout=timeout)
        return self.pull_messages(ids)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def context_for(node_id: int, node_config: Mapping[str, Any] | None = None) -> Context:
    """A ClientApp context for node ``node_id``."""
    return Context(
        run_id=1,
        node_id=node_id,
        node_config=dict(node_config or {}),
        state=RecordDict(),
        run_config={},
    )


@contextmanager
def dev_clock(ledger: Ledger, *, interval: float = 1.0, step: int = 1) -> Iterator[None]:
    """Runs the embedded chain's clock while the block runs, as Anvil's ``--block-time`` does
    for a real node, and serialises every request to the chain (the in-process chain is not
    thread-safe; sites run in threads). Every ``interval`` wall seconds the clock moves ``step``
    seconds; once every site active at a round's opening has committed, it moves past the
    commit deadline at once (nobody is left to wait for).
    """
    w3 = ledger.w3
    if not is_embedded(w3):
        raise ConfigError("dev_clock drives the embedded chain only (Anvil keeps its own time)")
    provider: Any = w3.provider
    lock = threading.RLock()
    original = provider.make_request

    def locked(method: Any, params: Any) -> Any:
        with lock:
            return original(method, params)

    provider.make_request = locked
    provider.__dict__.pop("_request_func_cache", None)  # rebuild web3's cached request path
    stop = threading.Event()

    def move() -> None:
        current = ledger.current_round()
        if not current:
            return
        info = ledger.get_round(current)
        if info.phase != Phase.OPEN:
            return
        now = block_timestamp(w3)
        # the embedded chain refuses to travel to a time at or before its pending block's
        least = next_block_timestamp(w3) - now + 1
        committed = len(ledger.get_submissions(current, include_unrevealed=True))
        if now <= info.commit_deadline and committed >= info.active_at_open > 0:
            advance_time(w3, max(info.commit_deadline - now + 1 + 2, least))
        else:
            advance_time(w3, max(step, least))

    def tick() -> None:
        while not stop.wait(interval):
            try:
                with lock:
                    move()
            except Exception:  # the clock must keep running: a stopped one hangs every wait
                log.exception("dev_clock: moving the chain's clock failed; will retry")

    thread = threading.Thread(target=tick, name="dev-clock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        provider.make_request = original
        provider.__dict__.pop("_request_func_cache", None)
