"""``ledger_mod`` against a hostile ServerApp: a LedgerStrategy train message is read without
trusting its values, and the site trains only on the round's start model on chain."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

import fedtrail.flower.client_app as client_app_module
import fedtrail.flower.mod as mod_module
from fedtrail.chain import next_block_timestamp
from fedtrail.errors import ChainUnreachable, ConfigError
from fedtrail.flower.mod import REQUEST, handed_update, make_ledger_mod, start_state
from fedtrail.flower.replies import SiteReply
from fedtrail.flower.site import REVEAL_SLACK, UNKNOWN_ROUND_WAIT, site_wait
from fedtrail.node.daemon import RoundRecord, SiteNode
from tests.fixtures.chain import ChainEnv
from tests.flower.test_rounds import _federation


@pytest.fixture(autouse=True)
def flower_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages are made inside a Flower task (as in a ServerApp): its identity set."""
    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


class Untouched(Exception):
    """Raised by a node factory the mod must not reach."""


def _no_node(context: Context) -> SiteNode:
    raise Untouched


def _no_app(msg: Message, context: Context) -> Message:
    raise Untouched


def _unreachable(round_id: int) -> object:
    raise ChainUnreachable("the RPC endpoint does not answer")


@pytest.mark.parametrize("wait", [math.nan, math.inf, -1.0])
def test_a_wait_that_is_not_finite_is_refused_before_the_node(wait: float) -> None:
    msg = Message(
        RecordDict(
            {
                "arrays": ArrayRecord(nn.Linear(2, 2).state_dict()),
                REQUEST: ConfigRecord({"round": 1, "wait-seconds": wait}),
            }
        ),
        dst_node_id=1,
        message_type="train",
    )
    with pytest.raises(ConfigError, match="wait-seconds"):
        make_ledger_mod(_no_node)(msg, _context(), _no_app)


def test_a_decoy_start_model_beside_another_model_is_refused(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """A ServerApp sends the chain's start model under the key its request names and another
    model under the key the project's train function reads ("arrays"): the site must not train
    on the other model (its update, ``trained - start``, would carry the ServerApp's model into
    the site's signed submission). Every ArrayRecord in the message must be the start model."""
    fed = _federation(embedded, tmp_path)
    r = fed.service.open_next()
    node = fed.nodes[0]
    spec = fed.service.spec
    honest = spec.build()
    honest.load_state_dict({**honest.state_dict(), **start_state(node, r)})
    poisoned = copy.deepcopy(honest)
    with torch.no_grad():
        for p in poisoned.parameters():
            p.add_(0.5)
    msg = Message(
        RecordDict(
            {
                "arrays": ArrayRecord(poisoned.state_dict()),  # what the app loads
                "start": ArrayRecord(honest.state_dict()),  # what the request names
                REQUEST: ConfigRecord({"round": r, "wait-seconds": 0.0, "arrays-key": "start"}),
            }
        ),
        dst_node_id=1,
        message_type="train",
    )
    with pytest.raises(ConfigError, match="not the round's start model"):
        make_ledger_mod(lambda ctx: node)(msg, _context(), _no_app)
    assert r not in node.state.rounds  # nothing trained, encoded or committed
    assert fed.ledger.get_submission(r, node.address) is None


@pytest.mark.parametrize(
    ("sent", "fixed", "why"),
    [
        ({"lr": 0.0}, {}, "does not fix"),  # a setting the site never fixed
        ({"lr": 0.0}, {"lr": 0.05}, "trains with 0.05"),  # another value
        ({"local-epochs": 1.0}, {"local-epochs": 1}, "trains with 1"),  # another type
        ({"local-epochs": True}, {"local-epochs": 1}, "trains with 1"),  # True is not 1
    ],
)
def test_a_training_setting_the_site_did_not_fix_is_refused_before_training(
    embedded: ChainEnv,
    tmp_path: Path,
    sent: dict[str, float | bool],
    fixed: dict[str, float | int],
    why: str,
) -> None:
    """Attack a106: the ServerApp builds each train message, unsigned, and a project's train
    function reads its learning rate from it (``msg.content["config"]["lr"]``): ``lr = 0`` sent
    to one chosen site made it commit and reveal, under its own key, an update of zeros that the
    valuation scored 0 with ``audit verify`` passing. The message's settings must be the ones
    the site fixed (``make_ledger_mod(train_config=...)``), at that type too; nothing is
    trained, encoded or committed otherwise."""
    fed = _federation(embedded, tmp_path)
    r = fed.service.open_next()
    node = fed.nodes[0]
    spec = fed.service.spec
    model = spec.build()
    model.load_state_dict({**model.state_dict(), **start_state(node, r)})
    msg = Message(
        RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "config": ConfigRecord({"server-round": 1, **sent}),
                REQUEST: ConfigRecord({"round": r, "wait-seconds": 0.0, "arrays-key": "arrays"}),
            }
        ),
        dst_node_id=1,
        message_type="train",
    )
    with pytest.raises(ConfigError, match=why):
        make_ledger_mod(lambda ctx: node, train_config=fixed)(msg, _context(), _no_app)
    assert r not in node.state.rounds  # nothing trained, encoded or committed
    assert fed.ledger.get_submission(r, node.address) is None
    # the settings the site fixed, at their types, and Flower's round counter: it trains
    with pytest.raises(Untouched):
        make_ledger_mod(lambda ctx: node, train_config={**fixed, **sent})(msg, _context(), _no_app)


@pytest.mark.parametrize("with_config", [True, False])
def test_the_app_trains_with_the_sites_settings_not_the_aggregators_run_config(
    embedded: ChainEnv, tmp_path: Path, with_config: bool
) -> None:
    """a106 through ``run_config``: Flower builds ``context.run_config`` from the app's
    pyproject and ``flwr run --run-config 'local-epochs=0'`` (the aggregator's choice), and
    Flower's templates read ``context.run_config["local-epochs"]``. The app's train function
    must see the site's ``train_config`` as its run config, and a setting the site fixed but
    the message left out (so the app's ``config.get("lr", default)`` would apply) at the
    site's value, in the message's ConfigRecord or in a ``"config"`` one the mod adds."""
    fed = _federation(embedded, tmp_path)
    r = fed.service.open_next()
    node = fed.nodes[0]
    model = fed.service.spec.build()
    model.load_state_dict({**model.state_dict(), **start_state(node, r)})
    records: dict[str, ArrayRecord | ConfigRecord] = {
        "arrays": ArrayRecord(model.state_dict()),
        REQUEST: ConfigRecord({"round": r, "wait-seconds": 0.0, "arrays-key": "arrays"}),
    }
    if with_config:
        records["config"] = ConfigRecord({"server-round": 1})  # no "lr": the app's default
    msg = Message(RecordDict(records), dst_node_id=1, message_type="train")  # type: ignore[arg-type]
    aggregators = Context(
        run_id=1,
        node_id=1,
        node_config={"config": "site.toml"},
        state=RecordDict(),
        run_config={"local-epochs": 0, "lr": 0.0, "num-server-rounds": 3},
    )
    seen: list[tuple[Message, Context]] = []

    def app(m: Message, context: Context) -> Message:
        seen.append((m, context))
        raise Untouched

    fixed = {"local-epochs": 1, "lr": 0.05}
    with pytest.raises(Untouched):
        make_ledger_mod(lambda ctx: node, train_config=fixed)(msg, aggregators, app)
    [(m, context)] = seen
    assert dict(context.run_config) == fixed
    assert context.node_config == {"config": "site.toml"} and context.state is aggregators.state
    assert m.content["config"]["lr"] == 0.05 and m.content["config"]["local-epochs"] == 1


def test_an_unknown_entry_of_the_fedtrail_request_is_refused() -> None:
    """The ``fedtrail`` request was skipped by the settings check: an entry the ServerApp adds
    to it (``"lr": 0.0``) would reach a train function that reads it unchecked."""
    msg = Message(
        RecordDict({REQUEST: ConfigRecord({"round": 1, "wait-seconds": 0.0, "lr": 0.0})}),
        dst_node_id=1,
        message_type="train",
    )
    with pytest.raises(ConfigError, match="does not know: 'lr'"):
        make_ledger_mod(_no_node)(msg, _context(), _no_app)


@pytest.mark.parametrize("count", [math.nan, math.inf, 0, -3, 2.5])
def test_a_train_reply_without_a_usable_sample_count_is_refused(count: float) -> None:
    """The count the app's train reply states is what the site submits: NaN or infinity raised
    ValueError/OverflowError from int(); every count that is not a positive integer is a
    ConfigError naming the key."""
    start = {k: v.detach().clone() for k, v in nn.Linear(2, 2).state_dict().items()}
    msg = Message(RecordDict(), dst_node_id=1, message_type="train")
    reply = Message(
        RecordDict(
            {
                "arrays": ArrayRecord(nn.Linear(2, 2).state_dict()),
                "metrics": MetricRecord({"num-examples": count}),
            }
        ),
        reply_to=msg,
    )
    with pytest.raises(ConfigError, match="num-examples"):
        handed_update(reply, start, arrays_key="arrays", samples_key="num-examples")


def test_the_site_not_the_message_names_its_sample_count(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """The request's samples-key said which metric of the app's reply the site submits on chain
    as its sample count; the message is not signed, so a SuperLink (or a ServerApp) could point
    it at another positive metric ("epochs": 1) and cut the site's weight. The key is the
    site's own (``make_ledger_mod(samples_key=...)``): a request naming another is refused
    before training."""
    fed = _federation(embedded, tmp_path)
    r = fed.service.open_next()
    node = fed.nodes[0]
    spec = fed.service.spec
    model = spec.build()
    model.load_state_dict({**model.state_dict(), **start_state(node, r)})
    request = {"round": r, "wait-seconds": 0.0, "arrays-key": "arrays", "samples-key": "epochs"}
    msg = Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), REQUEST: ConfigRecord(request)}),
        dst_node_id=1,
        message_type="train",
    )
    with pytest.raises(ConfigError, match="samples-key"):
        make_ledger_mod(lambda ctx: node)(msg, _context(), _no_app)
    assert r not in node.state.rounds


def test_a_train_message_for_another_ledger_is_refused(embedded: ChainEnv, tmp_path: Path) -> None:
    fed = _federation(embedded, tmp_path)
    r = fed.service.open_next()
    node = fed.nodes[0]
    model = fed.service.spec.build()
    model.load_state_dict({**model.state_dict(), **start_state(node, r)})
    request = {"round": r, "wait-seconds": 0.0, "ledger": "0x" + "22" * 20}
    msg = Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), REQUEST: ConfigRecord(request)}),
        dst_node_id=1,
        message_type="train",
    )
    with pytest.raises(ConfigError, match="not this site's"):
        make_ledger_mod(lambda ctx: node)(msg, _context(), _no_app)
    assert r not in node.state.rounds


def test_an_oversized_start_model_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """Attack: the aggregator opens a round whose start model is a 4 MB blob (the SmallCNN's
    models are 0.9 MB). The mod read it whole, up to the store's general 256 MiB limit, before
    the decoder refused it (``InvalidUpdate``); now the store refuses it after its size probe,
    with the limit the node's model spec gives, as ``node run`` does."""
    import hashlib
    from types import SimpleNamespace

    from fedtrail.errors import ContentTooLarge
    from fedtrail.ml.models import ModelSpec
    from fedtrail.storage.codec import default_max_bytes
    from fedtrail.storage.store import LocalStore

    spec = ModelSpec()
    blob = b"\0" * (default_max_bytes(spec) * 4)
    store = LocalStore(tmp_path / "store")
    cid = store.put(blob)
    info = SimpleNamespace(start_cid=cid, start_sha256=hashlib.sha256(blob).hexdigest())
    node = SimpleNamespace(
        ledger=SimpleNamespace(get_round=lambda _: info),
        store=store,
        config=SimpleNamespace(model=spec),
    )
    with pytest.raises(ContentTooLarge):
        start_state(node, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("request_wait", [{"wait-seconds": 0.0}, {}])
def test_a_site_told_to_wait_0_keeps_at_the_round_until_its_reveal_deadline(
    embedded: ChainEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request_wait: dict[str, float],
) -> None:
    """Attack a107: the request's ``wait-seconds`` (0, or left out: the default) was how long
    the site kept at the round, so a ServerApp that sent one site 0 had it commit, answer
    ``committed`` at once and never reveal, its commitment read on chain as its own failure
    with ``audit verify`` passing. Both Flower entry points (the fedtrail ClientApp and the
    mod) now keep at it at least until the chain's reveal deadline plus REVEAL_SLACK."""
    fed = _federation(embedded, tmp_path)
    r = fed.service.open_next()
    node = fed.nodes[0]
    info = fed.ledger.get_round(r)
    least = info.reveal_deadline - next_block_timestamp(fed.ledger.w3) + REVEAL_SLACK
    assert site_wait(node, r, 0.0) >= least
    assert site_wait(node, r, 1e6) == 1e6  # a longer ask stays (wait_limit bounds it)
    # a round the chain does not know, or a chain that cannot be read: a fixed floor, not the
    # message's 0 (a failed read, then a good one in wait_limit, read as "give up now")
    assert site_wait(node, r + 7, 0.0) == UNKNOWN_ROUND_WAIT
    with monkeypatch.context() as m:
        m.setattr(node.ledger, "get_round", _unreachable)
        assert site_wait(node, r, 0.0) == REVEAL_SLACK
    waits: list[float] = []

    def fake_answer(
        n: SiteNode, round_id: int, *, wait_seconds: float, update: object = None
    ) -> SiteReply:
        waits.append(wait_seconds)
        return SiteReply(round=round_id, site=n.address, phase="none", note="stub")

    monkeypatch.setattr(client_app_module, "answer", fake_answer)
    monkeypatch.setattr(mod_module, "answer", fake_answer)
    monkeypatch.setattr(client_app_module, "site_node", lambda setup: node)
    monkeypatch.setattr(client_app_module, "setup_from", lambda context: None)
    values: dict[str, int | float] = {"round": r, **request_wait}
    request = ConfigRecord(values)  # type: ignore[arg-type]  # (flwr's invariant dict type)
    app_request = RecordDict({client_app_module.REQUEST: ConfigRecord(values)})  # type: ignore[arg-type]
    client_app_module.handle(Message(app_request, dst_node_id=1, message_type="train"), _context())
    node.state.rounds[r] = RoundRecord(round=r, phase="committed")  # no training in the mod
    msg = Message(
        RecordDict({"arrays": ArrayRecord(nn.Linear(2, 2).state_dict()), REQUEST: request}),
        dst_node_id=1,
        message_type="train",
    )
    make_ledger_mod(lambda ctx: node)(msg, _context(), _no_app)
    assert len(waits) == 2 and all(w >= least for w in waits), waits
