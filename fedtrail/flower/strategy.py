"""A Flower strategy wrapper that puts an existing Flower project's rounds on the ledger.

    strategy = LedgerStrategy(FedAvg(fraction_evaluate=0.5), service=service)
    result = strategy.start(grid, initial_arrays=strategy.start_arrays(), num_rounds=3,
                            timeout=strategy.timeout())

with the mod (:mod:`fedtrail.flower.mod`) on the ClientApp. One Flower round is one ledger round,
run by the same :class:`~fedtrail.flower.rounds.LedgerRounds` as the fedtrail ServerApp:

- ``configure_train``: the aggregator's service opens the round on the ledger (or resumes an
  open one after a restart); the inner strategy picks the nodes and builds its train messages,
  on the round's start model read from the store by the chain's hash (not the ``arrays`` Flower
  hands in: after the first round those are this wrapper's own output, and before it the
  ledger's seeded initial model is the start); each message gets the ``fedtrail`` request.
- ``aggregate_train``: every reply's signed ``fedtrail-reply`` is checked against the chain
  (:func:`~fedtrail.flower.replies.check_reply`; a site's signed contradiction is evidence and
  scores it 0 ``CONTRADICTED``), then the service values the round and finalizes it from the
  chain alone, and the wrapper returns **fedtrail's global model**: the on-chain-weighted
  aggregate under the round's committed rule, as finalized on chain and read back from the
  store by its on-chain sha256, so ``fedtrail audit verify`` passes on the run. The inner
  strategy's own ``aggregate_train`` is never called (its weights would be Flower's
  ``num-examples``, which a site states in a reply that nothing binds); its train metrics
  aggregation is kept for FedAvg and its subclasses (``train_metrics_aggr_fn``), beside the
  wrapper's ``fedtrail-*`` figures. A cancelled round returns no model: Flower keeps the last.
- ``configure_evaluate`` / ``aggregate_evaluate`` / ``summary``: the inner strategy's, unchanged,
  on fedtrail's global model. The sites' evaluation metrics are the project's own: reported by
  Flower, not recorded on the ledger or checked by the audit.

The inner strategy's sampling decides which nodes train; the ledger decides which updates count
(every site that commits and reveals in the window is valued). ``Strategy.start``'s ``timeout``
must cover the commit and reveal windows: :meth:`LedgerStrategy.timeout`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from fedtrail.aggregator.service import AggregatorService
from fedtrail.errors import ConfigError
from fedtrail.flower.mod import DEFAULT_SAMPLES_KEY, REPLY, REQUEST
from fedtrail.flower.rounds import LedgerRounds, Received, RoundReport
from fedtrail.ml.models import ModelSpec, federated_state, initial_model, load_federated
from fedtrail.protocol.codes import Phase
from fedtrail.storage.codec import decode_model, default_max_bytes

log = logging.getLogger("fedtrail.flower.strategy")


def model_arrays(spec: ModelSpec, state: dict[str, torch.Tensor]) -> ArrayRecord:
    """``state`` (federated tensors) as the full state dict of ``spec``'s model, the form a
    Flower app loads with ``model.load_state_dict``."""
    model = spec.build()
    load_federated(model, state)
    return ArrayRecord(model.state_dict())


def received(msg: Message) -> Received:
    """One train reply as the round driver's :class:`~fedtrail.flower.rounds.Received`."""
    node = int(msg.metadata.src_node_id)
    if msg.has_error():
        return Received(node_id=node, reply=None, error=msg.error.reason or "error")
    if REPLY not in msg.content.config_records:
        return Received(
            node_id=node,
            reply=None,
            error=f"reply holds no {REPLY!r} record (is the ClientApp's ledger_mod installed?)",
        )
    return Received(node_id=node, reply=dict(msg.content.config_records[REPLY]))


class LedgerStrategy(Strategy):
    """``inner`` with the ledger, the store, the valuation and the audit trail.

    ``service``: the aggregator's :class:`~fedtrail.aggregator.service.AggregatorService` (its
    ledger, store, key, validation split and settings; built as ``fedtrail aggregator run``
    builds it, e.g. :func:`fedtrail.flower.server_app.build_service`). ``folder``: where the
    round reports ``flower-round-<r>.json`` go (default: the service's folder).
    ``samples_key``: the MetricRecord entry of the app's train reply that states its sample
    count (the sites' mods must name the same: ``make_ledger_mod(samples_key=...)``; a mod
    refuses a message naming another). ``grace_seconds``: how long past the reveal deadline
    replies are awaited.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        service: AggregatorService,
        folder: Path | None = None,
        samples_key: str = DEFAULT_SAMPLES_KEY,
        grace_seconds: float = 30.0,
    ) -> None:
        if not isinstance(inner, Strategy):
            raise ConfigError(f"inner must be a Flower Strategy, got {type(inner).__name__}")
        if isinstance(inner, LedgerStrategy):
            raise ConfigError("a LedgerStrategy cannot wrap another LedgerStrategy")
        if not samples_key:
            raise ConfigError("samples_key must name a MetricRecord entry")
        self.inner = inner
        self.service = service
        self.samples_key = samples_key
        self.rounds = LedgerRounds(
            service=service,
            exchange=_no_exchange,
            folder=Path(folder) if folder is not None else service.folder,
            grace_seconds=grace_seconds,
        )
        self.reports: list[RoundReport] = []
        self._round = 0
        self._sent: list[int] = []
        self._asked = False

    # ------------------------------------------------------------------ the model

    def start_arrays(self) -> ArrayRecord:
        """The model the next round starts from: the open round's start model, else the last
        finalized global model, else the federation's seeded initial model (as the service
        opens it)."""
        ledger = self.service.ledger
        current = ledger.current_round()
        if current and ledger.get_round(current).phase in (Phase.OPEN, Phase.VALUED):
            info = ledger.get_round(current)
            return self._stored(info.start_cid, info.start_sha256)
        last = ledger.last_finalized_round()
        if last:
            info = ledger.get_round(last)
            return self._stored(info.global_cid, info.global_sha256)
        initial = initial_model(self.service.spec, self.service.initial_seed())
        return model_arrays(self.service.spec, federated_state(initial))

    def _stored(self, cid: str, sha256: str) -> ArrayRecord:
        spec = self.service.spec
        blob = self.service.store.get(cid, sha256, max_bytes=default_max_bytes(spec))
        state, _ = decode_model(blob, spec=spec)
        return model_arrays(self.service.spec, state)

    def timeout(self) -> float:
        """A ``Strategy.start`` timeout that covers a round's windows and the grace."""
        settings, least = self.service.settings, self.service.ledger.min_round_window()
        commit, reveal = max(settings.round_seconds, least), max(settings.reveal_seconds, least)
        return float(commit + reveal + 2) + self.rounds.grace

    # ------------------------------------------------------------------ train

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Opens (or resumes) the ledger round; the inner strategy's train messages on its
        start model, each with the ``fedtrail`` request."""
        round_id, request = self.rounds.begin()
        self._round, self._sent, self._asked = round_id, [], request is not None
        if request is None:
            log.info("round %d is past its commit window: valuing it from the chain", round_id)
            return []
        info = self.service.ledger.get_round(round_id)
        start = self._stored(info.start_cid, info.start_sha256)
        messages = list(self.inner.configure_train(server_round, start, config, grid))
        for msg in messages:
            keys = list(msg.content.array_records.keys())
            msg.content[REQUEST] = ConfigRecord(
                {
                    **request,
                    "arrays-key": keys[0] if len(keys) == 1 else "",
                    "samples-key": self.samples_key,
                }
            )
            self._sent.append(int(msg.metadata.dst_node_id))
        log.info(
            "flower round %d = ledger round %d: %d site(s) asked to train",
            server_round,
            round_id,
            len(messages),
        )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Checks the replies against the chain, lets the service value and finalize the round
        from the chain; fedtrail's global model (None when the round was cancelled)."""
        got_msgs = list(replies)
        got: list[Received] | None = None
        if self._asked:
            got = [received(m) for m in got_msgs]
            answered = {r.node_id for r in got}
            got += [
                Received(node_id=n, reply=None, error="no reply within the timeout")
                for n in self._sent
                if n not in answered
            ]
        report = self.rounds.finish(self._round, got)
        self.reports.append(report)
        arrays = None
        if report.phase == Phase.FINALIZED.label:
            arrays = self._stored(report.global_cid, report.global_sha256)
        metrics = self._metrics(got_msgs, report)
        return arrays, metrics

    def _metrics(self, replies: list[Message], report: RoundReport) -> MetricRecord:
        values: dict[str, Any] = {}
        if isinstance(self.inner, FedAvg):
            key = self.inner.weighted_by_key
            contents = [
                m.content
                for m in replies
                if not m.has_error() and len(m.content.metric_records) == 1
            ]
            # A reply's own weight for the project's metrics: a ClientApp stating 0, a negative
            # or a non-finite count would divide by zero (stopping the run after the ledger
            # round finalized) or skew the others' metrics; such replies are left out.
            weighted = [c for c in contents if _positive(c, key)]
            if len(weighted) < len(contents):
                log.warning(
                    "the inner strategy's train metrics: %d repl(ies) left out (%r not a finite "
                    "number > 0)",
                    len(contents) - len(weighted),
                    key,
                )
            if weighted:
                try:
                    values.update(dict(self.inner.train_metrics_aggr_fn(weighted, key)))
                except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
                    log.warning("the inner strategy's train metrics: %s", exc)
        values.update(
            {
                "fedtrail-round": report.round,
                "fedtrail-finalized": int(report.phase == Phase.FINALIZED.label),
                "fedtrail-weighted-sites": sum(1 for w in report.weights.values() if w > 0),
                "fedtrail-replies-differing": sum(1 for r in report.replies if not r["truthful"]),
                "fedtrail-evidence": len(report.evidence),
            }
        )
        return MetricRecord(values)

    # ------------------------------------------------------------------ evaluate: the inner's

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log.info(
            "LedgerStrategy: ledger %s, aggregator %s; training rounds on the ledger, "
            "evaluation by the inner strategy %s:",
            self.service.ledger.address,
            self.service.account.address,
            type(self.inner).__name__,
        )
        self.inner.summary()


def _positive(content: RecordDict, key: str) -> bool:
    """Whether the reply's only MetricRecord states ``key`` as a finite number > 0."""
    value = next(iter(content.metric_records.values())).get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value > 0


def _no_exchange(kind: str, request: Any, timeout: float) -> list[Received]:
    raise ConfigError("a LedgerStrategy's exchange is Flower's Strategy.start, not run_round")
