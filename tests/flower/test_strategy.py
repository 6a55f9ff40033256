"""The README's example for an existing Flower project (LedgerStrategy around FedAvg, ledger_mod on
the ClientApp), run as it stands in one process: Flower's own Strategy.start drives two rounds
over an in-process Grid (threads for SuperNodes) against the embedded chain and a local store.

Every round finalizes on chain, the model Flower hands the evaluate step is the global model the
chain finalized (not FedAvg's own aggregate), each site's sample count on chain is the one its
train function stated, ``audit verify`` passes, and a message delivered again does not train
again. In round 2 one site's reply (signed with its own key) claims ten times its samples: it
gets weight 0, CONTRADICTED, with the reply in the log; the other sites keep their weight."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

import fedtrail.flower.mod as mod_module
import fedtrail.flower.server_app as server_app_module
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.errors import ConfigError
from fedtrail.flower.local import LocalGrid, context_for, dev_clock
from fedtrail.flower.mod import REPLY, REQUEST, check_start, make_ledger_mod
from fedtrail.flower.replies import SiteReply
from fedtrail.flower.rounds import RoundReport
from fedtrail.flower.site import sign_as
from fedtrail.flower.strategy import LedgerStrategy, received
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.models import federated_state
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.codec import decode_model
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
MARK = "**An existing Flower project: one wrapper and one mod.**"


def example() -> str:
    """The README's example block (the first python block after its heading)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```python\n", text.index(MARK)) + len("```python\n")
    return text[start : text.index("```", start)]


def _federation(env: ChainEnv, tmp: Path) -> Federation:
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, 24, seed=1)  # ~100 images a site
    sites = make_sites(
        env.sites[:3],
        [splits.train.subset(parts[i]) for i in range(3)],
        training=TrainConfig(epochs=1),
        data=DataConfig(class_names=source.class_names),
    )
    settings = AggregatorSettings(
        valuation="loo",
        class_names=source.class_names,
        explain_method=None,
        round_seconds=120,  # chain seconds (dev_clock: one a second, and past the deadline
        # once every site has committed)
        reveal_seconds=60,
        poll_interval=0.2,
    )
    return build_federation(
        sites=sites,
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=splits.val.subset(partition_iid(splits.val.labels, 3, seed=0)[0]),
        w3=env.w3,
        coordinator=env.coordinator,
        aggregator=env.aggregator,
        settings=settings,
    )


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class Project:
    """The project's own model and functions the example names (a plain torch loop)."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.nodes = {101 + i: node for i, node in enumerate(fed.nodes)}
        self.trained: list[int] = []
        self.evaluated: dict[int, list[str]] = {}

    def names(self) -> dict[str, Any]:
        return {
            "Net": self.fed.service.spec.build,
            "train_on_my_data": self.train_on_my_data,
            "evaluate_on_my_data": self.evaluate_on_my_data,
        }

    def train_on_my_data(self, model: nn.Module, context: Context) -> int:
        data = self.nodes[context.node_id].train
        x, y = torch.from_numpy(np.array(data.images)), torch.from_numpy(np.array(data.labels))
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(context.node_id))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        model.train()
        for batch in order.split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
        self.trained.append(context.node_id)
        return len(y)

    def evaluate_on_my_data(self, model: nn.Module, context: Context) -> dict[str, float]:
        self.evaluated.setdefault(context.node_id, []).append(fingerprint(federated_state(model)))
        data = self.nodes[context.node_id].train
        model.eval()
        with torch.no_grad():
            out = model(torch.from_numpy(np.array(data.images)))
        acc = float((out.argmax(1).numpy() == np.array(data.labels)).mean())
        return {"num-examples": len(data), "accuracy": acc}


def _run(
    fed: Federation,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
    *,
    rounds: int,
    outer: dict[int, Callable[[Message, Context, ClientAppCallable], Message]] | None = None,
) -> tuple[dict[str, Any], LocalGrid]:
    """Runs the README example's ServerApp over its ClientApp on every site's node; the
    example's namespace and the grid. ``outer``: node id -> a mod put before the example's."""
    nodes = project.nodes
    # The deployment's factories (a keystore, a deployment file, the SuperNode's --node-config)
    # give way to the in-process federation's service and nodes; the example is otherwise as is.
    monkeypatch.setattr(mod_module, "ledger_mod", make_ledger_mod(lambda ctx: nodes[ctx.node_id]))
    monkeypatch.setattr(server_app_module, "build_service", lambda cfg: fed.service)
    ns: dict[str, Any] = dict(project.names())
    exec(compile(example(), "README.md (example)", "exec"), ns)
    apps: dict[int, tuple[ClientApp, Context]] = {}
    for node_id in nodes:
        app = ns["client"]
        if outer and node_id in outer:
            app = ClientApp(mods=[outer[node_id], mod_module.ledger_mod])
            app.train()(ns["train"])
            app.evaluate()(ns["evaluate"])
        apps[node_id] = (app, context_for(node_id))
    grid = LocalGrid(apps)
    run_config: dict[str, bool | float | int | str] = {
        "num-server-rounds": rounds,
        "fedtrail-deployment": "deployment.json",  # read by ServerConfig, used by build_service
        "fedtrail-aggregator-keystore": "aggregator.json",
    }
    server_context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    with dev_clock(fed.ledger):
        ns["server"](grid, server_context)
    return ns, grid


def test_the_readme_example_runs_rounds_on_the_ledger_where_a_signed_lie_gains_nothing(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = _federation(embedded, tmp_path)
    project = Project(fed)
    liar = fed.nodes[2]

    def lie(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        """In round 2, ten times the samples in the reply, signed with the site's own key."""
        reply = call_next(msg, context)
        if reply.has_error() or REPLY not in reply.content.config_records:
            return reply
        doc = dict(reply.content.config_records[REPLY])
        if doc["phase"] == "revealed" and doc["round"] == 2:
            samples = doc["num_samples"]
            assert isinstance(samples, int)
            doc.update(num_samples=samples * 10, signature="")
            signed = sign_as(liar, SiteReply.from_config(doc))
            reply.content[REPLY] = ConfigRecord(signed.to_config())
        return reply

    _, grid = _run(fed, project, monkeypatch, rounds=2, outer={103: lie})
    ledger, store = fed.ledger, fed.store
    assert ledger.current_round() == 2
    spec = fed.service.spec
    for r in (1, 2):
        info = ledger.get_round(r)
        assert info.phase == Phase.FINALIZED
        subs = {s.site: s for s in ledger.get_submissions(r)}
        # every site's sample count on chain is the one its train function stated
        assert {a: s.num_samples for a, s in subs.items()} == {
            n.address: len(n.train) for n in fed.nodes
        }
        # what Flower handed the evaluate step is the chain's global model of the round
        chain_global, _ = decode_model(store.get(info.global_cid, info.global_sha256), spec=spec)
        assert {ev[r - 1] for ev in project.evaluated.values()} == {fingerprint(chain_global)}
        log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256))
        if r == 1:
            assert log.evidence == ()
            assert subs[liar.address].reason != Reason.CONTRADICTED
        else:  # the liar's signed reply is evidence: no weight, CONTRADICTED, in the log
            assert (subs[liar.address].weight, subs[liar.address].reason) == (
                0,
                Reason.CONTRADICTED,
            )
            assert all(s.weight > 0 for a, s in subs.items() if a != liar.address)
            assert [(e.site, e.contradicts) for e in log.evidence] == [
                (liar.address, ("num_samples",))
            ]
    assert sorted(project.trained) == [101, 101, 102, 102, 103, 103]
    audits = verify_all(ledger, store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if not c.passed]

    # A train message for round 2 delivered again (a SuperNode restarted): no training, and the
    # reply states what the chain holds.
    info = ledger.get_round(2)
    start, _ = decode_model(store.get(info.start_cid, info.start_sha256), spec=spec)
    model = spec.build()
    model.load_state_dict({**model.state_dict(), **start})
    again = Message(
        RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "config": ConfigRecord(),
                REQUEST: ConfigRecord({"round": 2, "wait-seconds": 0.0, "arrays-key": "arrays"}),
            }
        ),
        dst_node_id=101,
        message_type="train",
    )
    (reply,) = list(grid.send_and_receive([again], timeout=60))
    grid.close()
    assert sorted(project.trained) == [101, 101, 102, 102, 103, 103]
    doc = SiteReply.from_config(dict(reply.content.config_records[REPLY]))
    sub = ledger.get_submission(2, fed.nodes[0].address)
    assert sub is not None
    assert (doc.phase, doc.cid, doc.sha256, doc.num_samples) == (
        "revealed",
        sub.cid,
        sub.sha256,
        sub.num_samples,
    )


def test_the_mod_trains_only_on_the_chains_start_model() -> None:
    model = nn.Linear(3, 2)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    check_start(ArrayRecord(model.state_dict()), start, 1)  # the same model: accepted
    with torch.no_grad():
        model.bias.add_(1e-3)
    with pytest.raises(ConfigError, match="not the round's start model"):
        check_start(ArrayRecord(model.state_dict()), start, 1)


@pytest.fixture
def flower_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages are made inside a Flower task (as in a ServerApp): its identity set (else such
    a test passes only after one that ran a LocalGrid)."""
    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


@pytest.mark.usefixtures("flower_task")
def test_a_reply_without_the_mods_record_is_no_reply() -> None:
    msg = Message(RecordDict(), dst_node_id=7, message_type="train")
    reply = Message(RecordDict({"config": ConfigRecord({"x": 1})}), reply_to=msg)
    got = received(reply)
    assert got.reply is None and "ledger_mod" in got.error


@pytest.mark.usefixtures("flower_task")
def test_a_replys_sample_count_cannot_stop_the_run(embedded: ChainEnv, tmp_path: Path) -> None:
    """The project's train metrics are FedAvg's, weighted by the count each reply states. A
    ClientApp stating 0 (or -5 against another's 5) divided by zero in ``aggregate_train``
    after the ledger round had finalized, and Flower's ``Strategy.start`` stopped the run: such
    replies are left out of the metrics, and the ledger figures are reported as ever."""
    fed = _federation(embedded, tmp_path)
    strategy = LedgerStrategy(FedAvg(), service=fed.service)
    msg = Message(RecordDict(), dst_node_id=7, message_type="train")

    def reply(n: float, loss: float) -> Message:
        return Message(
            RecordDict({"metrics": MetricRecord({"num-examples": n, "loss": loss})}), reply_to=msg
        )

    report = RoundReport(round=1, phase=Phase.FINALIZED.label)
    for replies in ([reply(5, 1.0), reply(-5, 2.0)], [reply(5, 1.0), reply(0, 9.0)]):
        metrics = strategy._metrics(replies, report)
        assert metrics["loss"] == 1.0 and metrics["fedtrail-finalized"] == 1
    metrics = strategy._metrics([reply(0, 1.0), reply(float("nan"), 2.0)], report)
    assert "loss" not in metrics and metrics["fedtrail-round"] == 1


@pytest.mark.usefixtures("flower_task")
def test_a_replys_arrays_are_never_read() -> None:
    """A ClientApp replying a model of the wrong shape, dtype or with NaNs beside its signed
    fedtrail-reply: the strategy reads only the reply record (the update is on the store under
    the chain's CID; FedAvg's own aggregate_train, which would read the arrays, is never
    called)."""
    msg = Message(RecordDict(), dst_node_id=7, message_type="train")
    doc = {"round": 1, "site": "0x" + "11" * 20, "phase": "none", "note": "n"}
    junk = ArrayRecord([np.full((3, 1000), np.nan), np.arange(5, dtype=np.int8)])
    reply = Message(
        RecordDict({"arrays": junk, REPLY: ConfigRecord(doc)}),  # type: ignore[arg-type]
        reply_to=msg,
    )
    got = received(reply)
    assert got.reply == doc and got.error == ""
