#!/usr/bin/env python3
"""fedtrail on Flower vs plain Flower FedAvg: the same 3 sites, data, seeds and training, one run.

    python scripts/bench/flower_overhead.py [--rounds 3] [--epochs 1] [--parts 8]
        [--out .run/bench/flower_overhead.json]

Both halves run Flower's own ``Strategy.start`` over the same in-process Grid
(:class:`fedtrail.flower.local.LocalGrid`: one thread per site, messages deep-copied; the
SuperLink/SuperNode transport is left out of both), with the same ClientApp train function
(fedtrail's ``train_local`` on the site's data, seeded per site and round, returning the trained
model and ``num-examples``), from the same initial model (the fedtrail half's round-1 model,
bound to the deployment):

- plain: ``FedAvg(fraction_evaluate=0)``; the ClientApp without mods;
- fedtrail: ``LedgerStrategy(FedAvg(fraction_evaluate=0), service=...)`` and ``ledger_mod`` on
  the ClientApp, on Anvil (a block a second, its clock the wall clock) and the IPFS daemon
  (scripts/bench/_daemons.py): the aggregator service opens each round (terms + start model on
  IPFS, openRound), every site trains, encodes, commits, waits for the commit deadline, puts
  the update on IPFS and reveals it; the service checks the replies, values (the product's
  default: Shapley on the balanced loss), aggregates with the on-chain weights, writes the
  global model, heatmaps and log to IPFS and finalizes.

The commit window is the one thing fedtrail adds that is a setting, not work: it must cover the
slowest site's training, and a round cannot reveal before it ends. It is set from the plain
half's slowest training (2.5x it + 5 s, at least the ledger's 10 s minimum) and the time sites
spend waiting on it is reported as ``idle`` (``ratio_without_idle`` leaves it out).

A warm-up training runs first (first-call costs count for neither half), and the plain half
runs before and after the fedtrail half, averaged: the machine is shared.

Parts, on the server's clock (they add up to the round's wall time): ``training`` (the slowest
site's, per round), ``chain`` (JSON-RPC requests: the server's, and the slowest site's),
``store`` (IPFS: likewise), ``valuation`` (the service's value step without its chain and store
calls), ``aggregation`` (plain: FedAvg's aggregate_train; fedtrail: the finalize step without its
chain and store calls: aggregation, metrics before/after, heatmaps, log), ``idle`` (sites
waiting for the commit deadline) and ``other`` (the rest: encoding, signing, copying messages,
Flower's bookkeeping).

Targets (exit 1 when one is missed): both halves start from the same model and complete every
round, every fedtrail round is finalized on chain, ``audit verify`` passes, and the whole-run
ratio is <= 30. The issue asks only for the ratio, and no ratio bound holds for every workload:
a fedtrail round adds a fixed cost (the commit window, at least the ledger's 10 s minimum; the
transactions, the IPFS puts and gets, the valuation and the finalize step) to a plain round of
one training, so the ratio falls as training grows. For the default workload (3 sites of 304
images, 1 epoch: about 2 s of training a round) it measured 15.5 on the loaded 2-core machine;
30 leaves room for a machine twice as loaded and still fails a service that waits for the
60-s reveal deadline instead of the last reveal (+60 s a round, 30x the plain round on its own).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

import fedtrail.flower.site as site_module  # noqa: E402
from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.auditor.verify import verify_all  # noqa: E402
from fedtrail.chain import connect, dev_account  # noqa: E402
from fedtrail.flower.local import LocalGrid, context_for  # noqa: E402
from fedtrail.flower.mod import make_ledger_mod  # noqa: E402
from fedtrail.flower.strategy import LedgerStrategy, model_arrays  # noqa: E402
from fedtrail.ml.catalog import load_source  # noqa: E402
from fedtrail.ml.datasets import ImageDataset, partition_iid  # noqa: E402
from fedtrail.ml.models import federated_state, initial_model  # noqa: E402
from fedtrail.ml.training import TrainConfig, train_local  # noqa: E402
from fedtrail.node.config import DataConfig  # noqa: E402
from fedtrail.node.daemon import _round_seed  # noqa: E402
from fedtrail.protocol.codes import Phase  # noqa: E402
from fedtrail.simulation.federation import build_federation, make_sites  # noqa: E402
from fedtrail.storage.codec import encode_model  # noqa: E402
from fedtrail.storage.store import IpfsStore  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402

RATIO_BOUND = 30.0
SEED = 0


class Profile:
    """Exclusive seconds per (thread, part): a part nested in another is taken out of it."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        stack: list[list[float]] = self._local.__dict__.setdefault("stack", [])
        frame = [time.perf_counter(), 0.0]  # start, seconds of the parts nested in it
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()
            total = time.perf_counter() - frame[0]
            if stack:
                stack[-1][1] += total
            with self._lock:
                self.seconds[(threading.current_thread().name, name)] += total - frame[1]

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            with self.part(name):
                return fn(*a, **k)

        return timed

    def take(self) -> dict[tuple[str, str], float]:
        with self._lock:
            out, self.seconds = dict(self.seconds), defaultdict(float)
        return out


def make_client(
    trains: dict[int, ImageDataset], spec: Any, epochs: int, prof: Profile, mods: list[Any]
) -> ClientApp:
    """The project's ClientApp: fedtrail's train_local on the node's data, seeded per site
    and round (the same function in both halves)."""
    app = ClientApp(mods=mods)
    names = set(federated_state(spec.build()))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        state = msg.content.array_records["arrays"].to_torch_state_dict()
        start = {k: v for k, v in state.items() if k in names}
        rnd = msg.content.config_records["config"]["server-round"]
        assert isinstance(rnd, int)
        cfg = TrainConfig(epochs=epochs, seed=_round_seed(context.node_id, rnd))
        with prof.part("training"):
            res = train_local(start, trains[context.node_id], spec=spec, config=cfg)
        trained = {k: start[k] + res.delta[k] for k in start}
        content = RecordDict(
            {
                "arrays": model_arrays(spec, trained),
                "metrics": MetricRecord({"num-examples": res.num_samples}),
            }
        )
        return Message(content, reply_to=msg)

    return app


def split_round(
    seconds: dict[tuple[str, str], float], wall: float, server: str
) -> dict[str, float]:
    """One round's parts on the server's clock: the server thread's parts, plus the slowest
    site thread's (the one the exchange waited for)."""
    sites: dict[str, dict[str, float]] = defaultdict(dict)
    mine: dict[str, float] = {}
    for (thread, part), s in seconds.items():
        if thread == server:
            mine[part] = mine.get(part, 0.0) + s
        else:
            sites[thread][part] = sites[thread].get(part, 0.0) + s
    slowest = max(sites.values(), key=lambda p: sum(p.values()), default={})
    parts = {
        k: mine.get(k, 0.0) + slowest.get(k, 0.0)
        for k in ("training", "chain", "store", "valuation", "aggregation", "idle")
    }
    parts["other"] = max(wall - sum(parts.values()), 0.0)
    return parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--parts", type=int, default=8, help="split the training set in this many")
    ap.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "flower_overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, args.parts, seed=1)
    datasets = [splits.train.subset(parts[i]) for i in range(3)]
    node_ids = [101, 102, 103]
    trains = dict(zip(node_ids, datasets, strict=True))
    settings = AggregatorSettings(class_names=source.class_names, seed=SEED, poll_interval=0.5)
    spec = settings.model
    prof = Profile()
    server = threading.current_thread().name
    initial = federated_state(initial_model(spec, SEED))

    # ---------------------------------------------------------------- plain Flower FedAvg
    class Timed(FedAvg):
        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            with prof.part("aggregation"):
                return super().aggregate_train(server_round, replies)

    plain_app = make_client(trains, spec, args.epochs, prof, mods=[])

    def run_plain(start: Any) -> tuple[float, list[float], list[dict[str, float]]]:
        """One plain run from the model ``start``: its wall seconds, per-round walls and parts."""
        grid = LocalGrid({n: (plain_app, context_for(n)) for n in node_ids})
        walls: list[float] = []
        rows: list[dict[str, float]] = []
        last = [0.0]

        def on_round(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
            now = time.perf_counter()
            if rnd > 0:
                walls.append(now - last[0])
                rows.append(split_round(prof.take(), now - last[0], server))
            prof.take()
            last[0] = time.perf_counter()
            return None

        strategy = Timed(fraction_evaluate=0.0, min_available_nodes=3, min_train_nodes=3)
        t0 = time.perf_counter()
        strategy.start(
            grid,
            model_arrays(spec, start),
            num_rounds=args.rounds,
            train_config=ConfigRecord(),
            evaluate_fn=on_round,
        )
        total_s = time.perf_counter() - t0
        grid.close()
        return total_s, walls, rows

    # warm-up: first-call costs (allocator, kernels, imports) must not count for either half
    warm = TrainConfig(epochs=1, seed=0)
    train_local(initial, datasets[0].subset(list(range(64))), spec=spec, config=warm)
    # a calibration run sets the commit window; the timed plain runs start from the fedtrail
    # half's round-1 model, which since the a23 fix is bound to the deployment (chain id,
    # contract, salt) and so known only once the ledger is deployed
    _, _, calibration_rounds = run_plain(initial)
    slowest_training = max(r["training"] for r in calibration_rounds)
    commit_seconds = max(10, math.ceil(2.5 * slowest_training + 5))

    # ---------------------------------------------------------------- fedtrail on Flower
    with daemons() as (rpc, api):
        fed = build_federation(
            w3=connect(rpc),
            coordinator=dev_account(0),
            aggregator=dev_account(1),
            sites=make_sites(
                [dev_account(2 + i) for i in range(3)],
                datasets,
                training=TrainConfig(epochs=args.epochs),
                data=DataConfig(class_names=source.class_names),
            ),
            store=IpfsStore(api),
            folder=Path(tempfile.mkdtemp(prefix="flower-overhead-")),
            validation=splits.val,
            settings=replace(settings, round_seconds=commit_seconds, reveal_seconds=60),
        )
        service = fed.service
        start = federated_state(initial_model(spec, service.initial_seed()))
        plain_before, plain_walls, plain_rounds = run_plain(start)
        provider: Any = fed.ledger.w3.provider
        provider.make_request = prof.wrap("chain", provider.make_request)
        provider.__dict__.pop("_request_func_cache", None)
        for name in ("get", "put", "pin"):
            setattr(fed.store, name, prof.wrap("store", getattr(fed.store, name)))
        service.value = prof.wrap("valuation", service.value)  # type: ignore[method-assign]
        service.finalize = prof.wrap("aggregation", service.finalize)  # type: ignore[method-assign]

        class Sleep:  # the sites' waits for the commit deadline (flower.site.answer)
            monotonic = staticmethod(time.monotonic)
            sleep = staticmethod(prof.wrap("idle", time.sleep))

        site_module.time = Sleep  # type: ignore[attr-defined,assignment]
        nodes = dict(zip(node_ids, fed.nodes, strict=True))
        mod = make_ledger_mod(lambda ctx: nodes[ctx.node_id])
        app = make_client(trains, spec, args.epochs, prof, mods=[mod])
        grid = LocalGrid({n: (app, context_for(n)) for n in node_ids})
        ledger_strategy = LedgerStrategy(
            FedAvg(fraction_evaluate=0.0, min_available_nodes=3, min_train_nodes=3),
            service=service,
        )
        ft_rounds: list[dict[str, float]] = []
        ft_walls: list[float] = []

        def on_round_ft(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
            now = time.perf_counter()
            if rnd > 0:
                wall = now - on_round_ft.last  # type: ignore[attr-defined]
                ft_walls.append(wall)
                ft_rounds.append(split_round(prof.take(), wall, server))
            prof.take()
            on_round_ft.last = time.perf_counter()  # type: ignore[attr-defined]
            return None

        prof.take()
        t0 = time.perf_counter()
        ft = ledger_strategy.start(
            grid,
            ledger_strategy.start_arrays(),
            num_rounds=args.rounds,
            timeout=ledger_strategy.timeout(),
            evaluate_fn=on_round_ft,
        )
        ft_total = time.perf_counter() - t0
        grid.close()
        site_module.time = time  # type: ignore[attr-defined]
        finalized = [
            fed.ledger.get_round(r).phase == Phase.FINALIZED
            for r in range(1, fed.ledger.current_round() + 1)
        ]
        # the sites' table (their consent to the bench's windows, which may be under 30 s)
        audits = verify_all(fed.ledger, fed.store, accept=fed.sites[0].config.accept)
        verified = all(a.passed for a in audits)
        same_start = (
            fed.ledger.get_round(1).start_sha256
            == hashlib.sha256(encode_model(start, spec=spec, round=0)).hexdigest()
        )
    del ft
    # bracket the fedtrail run with a second plain run: the machine is shared
    plain_after, plain_walls_after, plain_rounds_after = run_plain(start)
    plain_total = (plain_before + plain_after) / 2
    plain_rounds = [
        {k: (a[k] + b[k]) / 2 for k in a}
        for a, b in zip(plain_rounds, plain_rounds_after, strict=True)
    ]
    plain_walls = [(a + b) / 2 for a, b in zip(plain_walls, plain_walls_after, strict=True)]

    def total(rows: list[dict[str, float]]) -> dict[str, float]:
        keys = rows[0].keys() if rows else ()
        return {k: round(sum(r[k] for r in rows), 3) for k in keys}

    ratio = ft_total / plain_total
    result = {
        "rounds": args.rounds,
        "epochs": args.epochs,
        "site_images": [len(d) for d in datasets],
        "commit_seconds": commit_seconds,
        "plain_seconds": round(plain_total, 3),
        "plain_runs_seconds": [round(plain_before, 3), round(plain_after, 3)],
        "fedtrail_seconds": round(ft_total, 3),
        "ratio": round(ratio, 3),
        "ratio_without_idle": round((ft_total - total(ft_rounds)["idle"]) / plain_total, 3),
        "plain_parts": total(plain_rounds),
        "fedtrail_parts": total(ft_rounds),
        "plain_round_seconds": [round(w, 3) for w in plain_walls],
        "fedtrail_round_seconds": [round(w, 3) for w in ft_walls],
        "fedtrail_rounds_finalized": sum(finalized),
        "audit_verify": "PASS" if verified else "FAIL",
        "same_start_model": same_start,
    }
    for k, v in result.items():
        print(f"{k:<28} {v}")
    checks = {
        "both halves start from the same model": same_start,
        "both halves ran every round": len(plain_walls) == len(ft_walls) == args.rounds,
        "every fedtrail round finalized": len(finalized) == args.rounds and all(finalized),
        "audit verify --all passes": verified,
        f"ratio <= {RATIO_BOUND:g}": ratio <= RATIO_BOUND,
    }
    for name, ok in checks.items():
        print(f"target: {name} -> {'met' if ok else 'MISSED'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
