"""The fedtrail ServerApp: the aggregator's rounds on Flower's deployment runtime.

Each Flower round is one ledger round (:class:`~fedtrail.flower.rounds.LedgerRounds`): the
ServerApp opens it with the aggregator's own key, sends one ``train`` message to every
SuperNode (each site trains, commits, then reveals after the commit deadline), checks every
reply against the chain, and lets the aggregator service value and finalize the round from the
chain alone. Its settings are the run config (the app's ``pyproject.toml``
``[tool.flwr.app.config]``, overridden with ``flwr run --run-config FILE.toml``):

    num-server-rounds   rounds to run                 deployment   the ledger's deployment file
    rpc-url             chain (default: deployment's) store        IPFS RPC API or local:/path
    aggregator-keystore encrypted key of the ledger's aggregator
    aggregator-passphrase-file  its passphrase (else $FEDTRAIL_PASSPHRASE)
    validation          the aggregator's validation data (pneumonia, retina, FILE.npz)
    folder              valuation records and the Flower round reports
    round-seconds / reveal-seconds  commit and reveal windows (chain seconds)
    rule, valuation, metric, seed, explain, threads, min-nodes, grace-seconds
    initial-salt        'random' (default), 'seeded' or 64 hex digits: as
                        ``fedtrail aggregator run --initial-salt``
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedtrail.aggregator.service import (
    AggregatorService,
    AggregatorSettings,
    fresh_or_recorded_salt,
)
from fedtrail.chain import connect
from fedtrail.cli.common import open_checked_store, resolve_rpc
from fedtrail.cli.output import basic_printable_logging
from fedtrail.errors import ConfigError
from fedtrail.flower.rounds import Exchange, LedgerRounds, Received, RoundReport
from fedtrail.flower.site import read_secret
from fedtrail.fsutil import atomic_write
from fedtrail.keys import load_keystore
from fedtrail.ledger import Deployment, Ledger
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.catalog import load_source
from fedtrail.ml.task import task_for
from fedtrail.protocol.terms import seeded_salt, valid_salt
from fedtrail.storage.store import ContentStore

log = logging.getLogger("fedtrail.flower.server")

REQUEST = "request"
REPLY = "reply"


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The ServerApp's settings, validated from the Flower run config."""

    num_server_rounds: int = 3
    deployment: str = ""
    rpc_url: str = ""
    store: str = "http://127.0.0.1:5001"
    aggregator_keystore: str = ""
    aggregator_passphrase_file: str = ""
    validation: str = "pneumonia"
    folder: str = ".fedtrail/flower-aggregator"
    round_seconds: int = 30
    reveal_seconds: int = 20
    rule: str = "weighted"
    valuation: str = "shapley"
    metric: str = "balanced_loss"
    seed: int = 0
    explain: bool = True
    threads: int = 0
    min_nodes: int = 1
    grace_seconds: float = 30.0
    initial_salt: str = "random"
    """Round 1's terms' ``initial_salt``, as ``fedtrail aggregator run --initial-salt``:
    'random' (the latest round's salt, else 32 fresh bytes: no twin deployment shares the start
    model, attack a23), 'seeded' (:func:`~fedtrail.protocol.terms.seeded_salt` of ``seed``: the
    start model repeats run after run, for demos whose figures must repeat) or 64 lowercase hex
    digits."""

    def __post_init__(self) -> None:
        if self.num_server_rounds < 1:
            raise ConfigError("num-server-rounds must be at least 1")
        if not self.deployment:
            raise ConfigError("the run config names no deployment file (deployment=...)")
        if not self.aggregator_keystore:
            raise ConfigError("the run config names no aggregator-keystore")
        if self.min_nodes < 1 or self.threads < 0 or self.grace_seconds < 0:
            raise ConfigError("min-nodes must be >= 1, threads and grace-seconds >= 0")
        if self.initial_salt not in ("random", "seeded") and not valid_salt(self.initial_salt):
            raise ConfigError(
                "initial-salt must be 'random', 'seeded' or 64 lowercase hex digits, "
                f"not {self.initial_salt!r}"
            )

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], *, prefix: str = "") -> ServerConfig:
        """The settings from a Flower run config. Without ``prefix`` every key must be one of
        the settings; with one (``"fedtrail-"`` in a project's own ServerApp, beside its own
        keys) only the keys that start with it are read, without it."""
        if prefix:
            run_config = {
                k.removeprefix(prefix): v for k, v in run_config.items() if k.startswith(prefix)
            }
        known = {f.replace("_", "-"): f for f in cls.__dataclass_fields__}
        unknown = sorted(set(run_config) - set(known))
        if unknown:
            raise ConfigError(f"unknown run config key(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = known[key]
            want = type(getattr(cls(deployment="-", aggregator_keystore="-"), name))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ConfigError(f"run config {key} must be a {want.__name__}, got {value!r}")
            values[name] = value
        return cls(**values)


def initial_salt(cfg: ServerConfig, ledger: Ledger, store: ContentStore) -> str:
    """The ``initial_salt`` ``cfg.initial_salt`` names (see :class:`ServerConfig`)."""
    if cfg.initial_salt == "seeded":
        return seeded_salt(cfg.seed)
    if cfg.initial_salt == "random":
        return fresh_or_recorded_salt(ledger, store)
    return cfg.initial_salt


def build_service(cfg: ServerConfig) -> AggregatorService:
    """The aggregator service ``fedtrail aggregator run`` would build from the same settings."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    deployment = Deployment.from_file(Path(cfg.deployment))
    ledger = Ledger.at(connect(resolve_rpc(cfg.rpc_url or None, deployment)), deployment)
    account = load_keystore(
        Path(cfg.aggregator_keystore),
        read_secret(cfg.aggregator_passphrase_file or None, cfg.aggregator_keystore),
    )
    if account.address != ledger.aggregator():
        raise ConfigError(
            f"{account.address} is not this ledger's aggregator ({ledger.aggregator()})"
        )
    source = load_source(cfg.validation)
    task = task_for(source)
    val = source.splits().val
    if val.image_size != (task.spec.image_size, task.spec.image_size):
        val = val.resized(task.spec.image_size)
    store = open_checked_store(cfg.store)
    settings = AggregatorSettings(
        rule=AggregationRule(name=cfg.rule),
        valuation=cfg.valuation,
        metric=cfg.metric,
        round_seconds=cfg.round_seconds,
        reveal_seconds=cfg.reveal_seconds,
        poll_interval=1.0,
        seed=cfg.seed,
        # 'random' (default): unknown before round 1 opens, so a twin deployment does not
        # share the start model
        initial_salt=initial_salt(cfg, ledger, store),
        model=task.spec,
        class_names=task.class_names,
        explain_method="integrated_gradients" if cfg.explain else None,
    )
    return AggregatorService(
        ledger=ledger,
        store=store,
        account=account,
        validation=val,
        settings=settings,
        folder=Path(cfg.folder),
    )


def grid_exchange(grid: Grid) -> Exchange:
    """An :data:`~fedtrail.flower.rounds.Exchange` over the ServerApp's Grid."""

    def exchange(kind: str, request: Mapping[str, Any], timeout: float) -> list[Received]:
        nodes = sorted(grid.get_node_ids())
        content = dict(request)
        messages = [
            Message(
                RecordDict({REQUEST: ConfigRecord(content)}),
                dst_node_id=node,
                message_type=kind,
                group_id=str(request["round"]),
            )
            for node in nodes
        ]
        got: dict[int, Received] = {}
        for msg in grid.send_and_receive(messages, timeout=timeout):
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                got[node] = Received(node_id=node, reply=None, error=msg.error.reason or "error")
            elif REPLY in msg.content.config_records:
                got[node] = Received(node_id=node, reply=dict(msg.content.config_records[REPLY]))
            else:
                got[node] = Received(
                    node_id=node, reply=None, error="reply holds no 'reply' record"
                )
        for node in nodes:
            got.setdefault(
                node, Received(node_id=node, reply=None, error=f"no reply within {timeout:.0f} s")
            )
        return [got[n] for n in nodes]

    return exchange


def wait_for_nodes(grid: Grid, least: int, timeout: float = 120.0) -> int:
    """Waits until ``least`` SuperNodes are connected (or ``timeout``); how many are."""
    give_up = time.monotonic() + timeout
    while True:
        count = len(list(grid.get_node_ids()))
        if count >= least or time.monotonic() >= give_up:
            return count
        time.sleep(1.0)


def run(grid: Grid, run_config: Mapping[str, Any]) -> list[RoundReport]:
    """Runs ``num-server-rounds`` ledger rounds over ``grid``; their reports."""
    basic_printable_logging()  # replies and Flower errors carry the other side's text
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cfg = ServerConfig.from_run_config(run_config)
    service = build_service(cfg)
    nodes = wait_for_nodes(grid, cfg.min_nodes)
    log.info("%d SuperNode(s) connected; running %d round(s)", nodes, cfg.num_server_rounds)
    rounds = LedgerRounds(
        service=service,
        exchange=grid_exchange(grid),
        folder=Path(cfg.folder),
        grace_seconds=cfg.grace_seconds,
    )
    reports = []
    for _ in range(cfg.num_server_rounds):
        report = rounds.run_round()
        reports.append(report)
        lies = sum(1 for r in report.replies if not r["truthful"])
        log.info(
            "round %d: %s, global model %s (sha256 %s); %d repl(ies) checked, %d differed "
            "from the chain (%d signed by their site: evidence, site scored 0 CONTRADICTED)",
            report.round,
            report.phase,
            report.global_cid,
            report.global_sha256,
            len(report.replies),
            lies,
            len(report.evidence),
        )
    summary = [
        {
            "round": r.round,
            "phase": r.phase,
            "global_cid": r.global_cid,
            "global_sha256": r.global_sha256,
        }
        for r in reports
    ]
    atomic_write(Path(cfg.folder) / "flower-run.json", json.dumps(summary, indent=2).encode())
    return reports


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation's rounds on the ledger, over Flower."""
    run(grid, context.run_config)
