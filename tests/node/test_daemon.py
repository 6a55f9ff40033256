"""The site daemon on the embedded chain and local store: a full commit-then-reveal round with
two sites, resuming from every persisted step without a second commitment or reveal, refused
reveals recorded as skipped, and the hooks a caller may give it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.chain import advance_time, block_timestamp
from fedtrail.errors import FedtrailError, TransactionFailed
from fedtrail.ledger import Valuation, commitment
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.metrics import decision_threshold
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.ml.task import TaskMismatch
from fedtrail.ml.training import TrainConfig
from fedtrail.node.commands import _val_decision
from fedtrail.node.daemon import (
    CLOCK_SLACK,
    RESIDUAL_NAME,
    STEPS,
    NodeHooks,
    NodeNotRegistered,
    NodeState,
    NodeStateError,
    Reveal,
    RoundRecord,
    SiteNode,
    UpdateContext,
)
from fedtrail.protocol.codes import Decline, Phase
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.protocol.terms import (
    MAX_TERMS_BYTES,
    DuplicateRule,
    InvalidTerms,
    PrivacyTerms,
    RoundTerms,
)
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.codec import decode_update, encode_model
from fedtrail.storage.store import LocalStore
from fedtrail.valuation.combine import Combiner
from fedtrail.valuation.limits import LoosestLimits, ThresholdLimits
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ModelSpec()


class World:
    """An embedded federation: a ledger, a local store, round 1 open (commits for a minute,
    reveals for an hour after), two registered sites."""

    def __init__(
        self,
        env: ChainEnv,
        tmp: Path,
        terms: bytes | None = None,
        edit: dict[str, Any] | None = None,
        windows: tuple[int, int] | None = None,
    ) -> None:
        self.env = env
        self.tmp = tmp
        splits = load_bundled()
        parts = partition_iid(splits.train.labels, 8, seed=0)
        self.train = [splits.train.subset(p) for p in parts[:2]]
        self.fed = build_federation(
            w3=env.w3,
            coordinator=env.coordinator,
            aggregator=env.aggregator,
            sites=make_sites(
                env.sites[:2],
                self.train,
                training=TrainConfig(epochs=1),
                val=splits.val,
                poll_interval=0.05,
            ),
            store=LocalStore(tmp / "store"),
            folder=tmp,
            validation=splits.val,
        )
        self.ledger, self.store = self.fed.ledger, self.fed.store
        blob = encode_model(initial_model(SPEC, 0).state_dict(), spec=SPEC, round=0)
        self.global_blob = blob
        cid = self.store.put(blob)
        if terms is None:
            own = replace(
                self.fed.service.round_terms(self.ledger.current_round() + 1),
                commit_seconds=60,
                reveal_seconds=3600,
            )
            if edit is not None:  # the aggregator's terms edited by hand
                own = replace(own, **edit)
            terms = own.to_bytes()
        if windows is None:  # the terms' own windows, as an honest aggregator opens them
            windows = (60, 3600)
            with contextlib.suppress(InvalidTerms):
                parsed = RoundTerms.from_bytes(terms)
                windows = (parsed.commit_seconds, parsed.reveal_seconds)
        self.round, _ = self.ledger.open_round(
            env.aggregator,
            cid,
            hashlib.sha256(blob).hexdigest(),
            terms_cid=self.store.put(terms),
            terms_sha256=hashlib.sha256(terms).hexdigest(),
            commit_seconds=windows[0],
            reveal_seconds=windows[1],
        )

    def close_commits(self) -> None:
        """Moves the chain's clock past the commit deadline: reveals open."""
        deadline = self.ledger.get_round(self.round).commit_deadline
        advance_time(self.env.w3, deadline - block_timestamp(self.env.w3) + 1 + CLOCK_SLACK)

    def full(self, node: SiteNode) -> Any:
        """``node`` commits, the commit window closes, ``node`` reveals; its record."""
        node.participate(self.round)
        self.close_commits()
        return node.participate(self.round)

    def node(self, i: int, hooks: NodeHooks | None = None, **config: object) -> SiteNode:
        """A fresh node of site ``i`` (as after a restart)."""
        return self.fed.node(i, hooks=hooks, **config)

    def folder(self, i: int) -> Path:
        return self.tmp / "nodes" / f"site-{i}"


@pytest.fixture
def world(embedded: ChainEnv, tmp_path: Path) -> World:
    return World(embedded, tmp_path)


def test_one_full_round_with_two_sites(world: World) -> None:
    nodes = [world.node(i) for i in range(2)]
    committed = [n.participate(world.round) for n in nodes]
    assert [r.phase for r in committed] == ["committed", "committed"]
    # nothing is on the store or revealed before the commit deadline
    assert world.ledger.get_submissions(world.round) == []
    assert all(r.cid == "" for r in committed)
    assert [n.participate(world.round).phase for n in nodes] == ["committed", "committed"]
    world.close_commits()
    assert [n.run(once=True) for n in nodes] == [1, 1]
    subs = world.ledger.get_submissions(world.round)
    assert len(subs) == 2
    deltas = []
    for sub in subs:
        blob = world.store.get(sub.cid, sub.sha256)
        delta, meta = decode_update(blob, spec=SPEC, expected_round=world.round)
        assert meta.kind == "update" and any(t.abs().sum() > 0 for t in delta.values())
        deltas.append(delta)
    assert {s.num_samples for s in subs} == {len(world.train[0]), len(world.train[1])}
    # the aggregator's part, by hand: value, aggregate, finalize
    world.ledger.record_valuation(
        world.env.aggregator,
        world.round,
        [Valuation(site=s.site, score=1_000_000, reason=0) for s in subs],
    )
    subs = world.ledger.get_submissions(world.round)
    assert sum(s.weight for s in subs) == 10**18
    glob = initial_model(SPEC, 0).state_dict()
    new = {
        k: (
            glob[k].double()
            + sum(s.weight / 1e18 * d[k].double() for s, d in zip(subs, deltas, strict=True))
        ).float()
        for k in glob
    }
    blob = encode_model(new, spec=SPEC, round=world.round)
    cid = world.store.put(blob)
    world.ledger.finalize_round(
        world.env.aggregator,
        world.round,
        global_cid=cid,
        global_sha256=hashlib.sha256(blob).hexdigest(),
        log_cid=cid,
        log_sha256=hashlib.sha256(b"log").hexdigest(),
    )
    assert world.ledger.get_round(world.round).phase == Phase.FINALIZED
    state = NodeState.load(world.folder(0) / "state.json")
    assert state.rounds[world.round].phase == "revealed"
    assert state.rounds[world.round].val_auc is not None


def test_a_crash_before_the_commit_is_mined_resumes_with_the_same_bytes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = world.node(0)

    def boom(*args: object, **kwargs: object) -> None:
        raise TransactionFailed("simulated crash before the transaction is mined")

    monkeypatch.setattr(world.ledger, "commit_update", boom)
    with pytest.raises(TransactionFailed):
        node.participate(world.round)
    monkeypatch.undo()
    encoded = NodeState.load(world.folder(0) / "state.json").rounds[world.round]
    assert encoded.phase == "encoded"
    assert world.ledger.get_submission(world.round, node.address) is None
    record = world.full(world.node(0))
    assert record is not None and record.phase == "revealed"
    on_chain = world.ledger.get_submission(world.round, node.address)
    assert on_chain is not None and on_chain.sha256 == encoded.sha256
    # and again: nothing more happens, the chain already has it
    assert world.node(0).participate(world.round) == record
    assert world.ledger.get_round(world.round).submission_count == 1


def test_a_crash_after_the_commit_was_mined_is_recognised_from_the_chain(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = world.node(0)
    real = world.ledger.commit_update

    def mined_then_crash(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise TransactionFailed("simulated crash after the transaction was mined")

    monkeypatch.setattr(world.ledger, "commit_update", mined_then_crash)
    with pytest.raises(TransactionFailed):
        node.participate(world.round)
    monkeypatch.undo()
    assert NodeState.load(world.folder(0) / "state.json").rounds[world.round].phase == "encoded"
    sent: list[object] = []
    monkeypatch.setattr(world.ledger, "commit_update", lambda *a, **k: sent.append(a))
    record = world.full(world.node(0))
    assert sent == [] and record.phase == "revealed"  # recognised, not committed again


def test_a_crash_after_the_reveal_was_mined_is_recognised_from_the_chain(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = world.node(0)
    node.participate(world.round)
    world.close_commits()
    real = world.ledger.reveal_update

    def mined_then_crash(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise TransactionFailed("simulated crash after the transaction was mined")

    monkeypatch.setattr(world.ledger, "reveal_update", mined_then_crash)
    with pytest.raises(TransactionFailed):
        node.participate(world.round)
    monkeypatch.undo()
    assert NodeState.load(world.folder(0) / "state.json").rounds[world.round].phase == "stored"
    record = world.node(0).participate(world.round)
    assert record is not None and record.phase == "revealed"
    assert not list((world.folder(0) / "pending").iterdir())
    assert world.ledger.get_round(world.round).submission_count == 1


def test_a_node_whose_state_was_lost_never_submits_twice(world: World) -> None:
    world.full(world.node(0))
    (world.folder(0) / "state.json").unlink()
    record = world.node(0).participate(world.round)
    assert record is not None and record.phase == "revealed"
    assert world.ledger.get_round(world.round).submission_count == 1


def test_a_node_that_lost_its_committed_update_skips_the_round(world: World) -> None:
    world.node(0).participate(world.round)
    (world.folder(0) / "state.json").unlink()
    for blob in (world.folder(0) / "pending").glob("update-*"):
        blob.unlink()
    world.close_commits()
    record = world.node(0).participate(world.round)
    assert record is not None and record.phase == "skipped" and "lost" in record.note
    assert world.ledger.get_round(world.round).submission_count == 0


def test_a_node_that_lost_its_state_after_committing_recovers_the_update(world: World) -> None:
    """state.json deleted (an operator's answer to a corrupt state file) after the commit: the
    node skipped the round and deleted the pending blob that opens the commitment. Now the blob
    is recognised by the commitment it opens and the round is revealed as committed."""
    committed = world.node(0).participate(world.round)
    (world.folder(0) / "state.json").unlink()
    world.close_commits()
    record = world.node(0).participate(world.round)
    assert record is not None and record.phase == "revealed", record
    assert (record.sha256, record.num_samples) == (committed.sha256, committed.num_samples)
    on_chain = world.ledger.get_submission(world.round, world.env.sites[0].address)
    assert on_chain is not None and on_chain.revealed and on_chain.sha256 == committed.sha256
    assert "recovered" in record.note and not list((world.folder(0) / "pending").iterdir())


def test_a_state_file_of_another_ledger_is_refused_not_taken_for_its_rounds(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """A node folder reused for a new federation (or a restarted, redeployed chain): its
    state.json recorded round 1 as revealed, so the node sat out the new round 1 in silence."""
    old = World(embedded, tmp_path)
    assert old.full(old.node(0)).phase == "revealed"
    state = tmp_path / "nodes" / "site-0" / "state.json"
    recorded = NodeState.load(state).rounds[old.round]
    assert recorded.opened.startswith(old.ledger.address + "/")
    new = World(embedded, tmp_path)  # a new ledger, the same site key and node folder
    assert new.round == old.round and new.ledger.address != old.ledger.address
    with pytest.raises(NodeStateError, match="not this ledger's"):
        new.node(0).participate(new.round)
    with pytest.raises(NodeStateError, match="not this ledger's"):
        new.node(0).run(once=True)
    # a record written before records said which round they are of: its reveal is not there
    text = state.read_text().replace(old.ledger.address, new.ledger.address)
    opened = recorded.opened.replace(old.ledger.address, new.ledger.address)
    state.write_text(text.replace(f'"opened": "{opened}"', '"opened": ""'))
    assert NodeState.load(state).rounds[old.round].opened == ""
    with pytest.raises(NodeStateError, match="which this ledger does not hold"):
        new.node(0).run(once=True)
    assert new.ledger.get_submission(new.round, new.env.sites[0].address) is None
    # the same address (a chain restarted and redeployed), the round's deadline differs: read
    # as the round opened again (a reorganisation looks the same), the record is set aside and,
    # its update public since its reveal, the round sat out under the new opening, noted
    # (test_reorg.py, test_reopened_round.py; before, NodeStateError)
    state.write_text(text)
    record = new.node(0).participate(new.round)
    assert record is not None and record.phase == "skipped", record
    assert "not committed again" in record.note, record.note
    assert record.opened == new.ledger.get_round(new.round).key(new.ledger.address)
    assert opened in (tmp_path / "nodes" / "site-0" / "superseded.jsonl").read_text()


def test_a_validator_state_of_another_ledger_is_refused(world: World) -> None:
    """scores.json recorded round 1's score vector as revealed on another ledger: the
    validator would not score this ledger's round 1 (its record was final)."""
    folder = world.folder(0)
    folder.mkdir(parents=True, exist_ok=True)
    other = {"round": 1, "phase": "revealed", "opened": f"{'0x' + '11' * 20}/5/{'ab' * 32}"}
    (folder / "scores.json").write_text(json.dumps({"rounds": {"1": other}}))
    with pytest.raises(FedtrailError, match="not this ledger's"):
        world.node(0).scorer.score(world.round)
    (folder / "scores.json").write_text('{"rounds": null}')  # AttributeError traceback before
    with pytest.raises(FedtrailError, match=r"scores\.json is corrupt"):
        world.node(0)


def test_a_record_of_this_ledger_is_accepted_after_a_restart(world: World) -> None:
    record = world.full(world.node(0))
    assert record.opened == f"{world.ledger.address}/" + record.opened.split("/", 1)[1]
    assert world.node(0).participate(world.round) == record


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        "[1]",
        '{"rounds": null}',
        '{"rounds": {"1": 5}}',
        '{"rounds": {"x": {"round": 1, "phase": "encoded"}}}',
        '{"rounds": {"1": {"round": 1, "phase": "encoded", "colour": 1}}}',
        '{"rounds": {"1": {"round": 1, "phase": "lost"}}}',
        '{"rounds": {"1": {"round": 2, "phase": "revealed"}}}',
    ],
)
def test_a_corrupt_state_file_is_an_error_naming_it_never_an_empty_state(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(NodeStateError, match=r"state\.json is corrupt"):
        NodeState.load(path)


def test_a_state_file_that_cannot_be_read_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "state.json").mkdir()
    with pytest.raises(NodeStateError, match=r"state\.json cannot be read"):
        NodeState.load(tmp_path / "state.json")


def test_a_reveal_above_the_sample_cap_is_refused_and_the_round_skipped(world: World) -> None:
    node = world.node(0)
    node.participate(world.round)
    world.ledger.set_max_samples(world.env.coordinator, node.address, 1)
    world.close_commits()
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert "claims" in record.note and "maximum is 1" in record.note
    assert NodeState.load(world.folder(0) / "state.json").rounds[world.round].phase == "skipped"
    assert world.ledger.get_round(world.round).submission_count == 0
    assert node.participate(world.round) == record  # not retried


def test_the_commit_binds_site_round_hash_and_sample_count(world: World) -> None:
    node = world.node(0)
    record = node.participate(world.round)
    on_chain = world.ledger.get_submission(world.round, node.address)
    assert on_chain is not None and not on_chain.revealed
    expected = commitment(node.address, world.round, record.sha256, record.num_samples)
    assert on_chain.commitment == expected


def test_a_node_too_late_to_commit_sends_nothing(world: World) -> None:
    world.close_commits()
    assert world.node(0).participate(world.round) is None
    assert world.ledger.get_submission(world.round, world.env.sites[0].address) is None


def test_compressed_updates_keep_the_error_feedback_residual(world: World) -> None:
    from fedtrail.storage.codec import Compression

    node = world.node(0, compression=Compression(method="topk8", fraction=0.05))
    record = world.full(node)
    assert record is not None and record.phase == "revealed"
    assert (world.folder(0) / RESIDUAL_NAME).exists()
    assert not list((world.folder(0) / "pending").iterdir())
    blob = world.store.get(record.cid, record.sha256)
    assert len(blob) < 0.1 * len(world.global_blob)


class _Crash(Exception):
    """A simulated crash at a named step."""


def _residual_files(folder: Path) -> list[str]:
    return sorted(
        p.name
        for p in [folder / RESIDUAL_NAME, *(folder / "pending").glob("residual-*")]
        if p.exists()
    )


def test_compression_none_writes_no_residual_and_resumes_after_a_crash(world: World) -> None:
    """With compression "none" the residual is zero before and after every round: no residual
    file is written at any step (issue 18: 420 KB written and fsynced a round for nothing), and
    a node crashed after encoding resumes and reveals the update it committed to."""
    folder = world.folder(0)
    files: dict[str, list[str]] = {}
    crashed: list[str] = []

    def at_step(name: str) -> None:
        files[name] = _residual_files(folder)
        if name == "encoded" and not crashed:
            crashed.append(name)
            raise _Crash(name)

    with pytest.raises(_Crash):
        world.node(0, hooks=NodeHooks(at_step=at_step)).participate(world.round)
    encoded = NodeState.load(folder / "state.json").rounds[world.round]
    assert encoded.phase == "encoded"
    record = world.full(world.node(0, hooks=NodeHooks(at_step=at_step)))
    assert record.phase == "revealed" and record.sha256 == encoded.sha256
    assert files == {step: [] for step in STEPS}
    assert _residual_files(folder) == [] and not list((folder / "pending").iterdir())
    assert world.ledger.get_round(world.round).submission_count == 1


def test_a_zero_residual_file_of_an_older_node_is_dropped(world: World) -> None:
    from fedtrail.storage.codec import zero_state
    from fedtrail.storage.residual import save_residual

    save_residual(world.folder(0) / RESIDUAL_NAME, zero_state(SPEC), spec=SPEC, round=0)
    record = world.full(world.node(0))
    assert record.phase == "revealed" and _residual_files(world.folder(0)) == []


def test_compression_none_after_topk8_flushes_the_residual_as_before(world: World) -> None:
    """A residual left by topk8 rounds is sent with the next "none" update; the zero residual
    after it is kept pending and promoted as before (absence would mean "unchanged" there)."""
    from fedtrail.storage.codec import zero_state
    from fedtrail.storage.residual import load_residual, save_residual

    left = {k: torch.full_like(v, 1e-3) for k, v in zero_state(SPEC).items()}
    save_residual(world.folder(0) / RESIDUAL_NAME, left, spec=SPEC, round=0)
    node = world.node(0)
    node.participate(world.round)
    assert _residual_files(world.folder(0)) == sorted(
        [RESIDUAL_NAME, f"residual-{world.round}.safetensors"]
    )
    world.close_commits()
    assert node.participate(world.round).phase == "revealed"
    assert _residual_files(world.folder(0)) == [RESIDUAL_NAME]
    after = load_residual(world.folder(0) / RESIDUAL_NAME, SPEC)
    assert all(not t.any() for t in after.values())


def test_unregistered_site_is_refused_with_a_clear_error(world: World) -> None:
    world.ledger.remove_site(world.env.coordinator, world.env.sites[1].address)
    with pytest.raises(NodeNotRegistered, match="not a registered site"):
        world.node(1).run(once=True)


def test_stop_event_abandons_training_cleanly(world: World) -> None:
    node = world.node(0)
    node.stop_event.set()
    assert node.participate(world.round) is None
    assert world.ledger.get_round(world.round).submission_count == 0
    assert world.round not in NodeState.load(world.folder(0) / "state.json").rounds


def test_daemon_thread_stops_on_request(world: World) -> None:
    node = world.node(0)
    t = threading.Thread(target=node.run)
    t.start()
    assert world.ledger.wait_for(
        lambda: world.ledger.get_submission(world.round, node.address) is not None,
        timeout=60,
        interval=0.1,
    )
    world.close_commits()
    assert world.ledger.wait_for(
        lambda: world.ledger.get_round(world.round).submission_count == 1,
        timeout=60,
        interval=0.1,
    )
    node.stop_event.set()
    t.join(timeout=10)
    assert not t.is_alive()


def test_hooks_see_every_step_and_replace_the_update(world: World) -> None:
    steps: list[str] = []
    contexts: list[tuple[int, UpdateContext]] = []

    def zero(delta: dict[str, torch.Tensor], round_id: int, ctx: UpdateContext) -> Any:
        contexts.append((round_id, ctx))
        return {k: torch.zeros_like(v) for k, v in delta.items()}

    node = world.node(0, hooks=NodeHooks(transform_update=zero, at_step=steps.append))
    record = world.full(node)
    assert record is not None and record.phase == "revealed"
    assert steps == list(STEPS) == ["encoded", "committed", "stored", "revealed"]
    ((round_id, ctx),) = contexts
    assert round_id == world.round and ctx.address == node.address and ctx.ledger is world.ledger
    delta, _ = decode_update(world.store.get(record.cid, record.sha256), spec=SPEC)
    assert all(not t.any() for t in delta.values())
    # a restart after the submission finds it on chain: no step runs again
    assert world.node(0, hooks=NodeHooks(at_step=steps.append)).participate(world.round)
    assert steps == ["encoded", "committed", "stored", "revealed"]


def test_the_reveal_hook_changes_what_is_revealed_and_the_ledger_refuses_it(
    world: World,
) -> None:
    def other(own: Reveal, round_id: int, ctx: UpdateContext) -> Reveal:
        return Reveal(cid=own.cid, sha256="ab" * 32, num_samples=own.num_samples)

    record = world.full(world.node(0, hooks=NodeHooks(transform_reveal=other)))
    assert record.phase == "skipped" and "does not match" in record.note
    assert world.ledger.get_round(world.round).submission_count == 0


def test_an_update_hook_that_returns_none_sends_nothing(world: World) -> None:
    node = world.node(0, hooks=NodeHooks(transform_update=lambda d, r, c: None))
    assert node.participate(world.round) is None
    assert world.ledger.get_round(world.round).submission_count == 0
    assert not list((world.folder(0) / "pending").iterdir())


def test_the_train_hook_chooses_the_training_data(world: World) -> None:
    seen: list[int] = []

    def half(ds: Any) -> Any:
        seen.append(len(ds))
        return ds.subset(np.arange(len(ds) // 2))

    node = world.node(0, hooks=NodeHooks(transform_train=half))
    assert seen == [len(world.train[0])] and len(node.train) == len(world.train[0]) // 2
    record = world.full(node)
    assert record is not None and record.num_samples == len(world.train[0]) // 2


def test_a_stored_update_is_pinned_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    pins: list[str] = []
    real_pin = world.store.pin

    def counted(cid: str) -> None:
        pins.append(cid)
        real_pin(cid)

    monkeypatch.setattr(world.store, "pin", counted)
    record = world.full(world.node(0))
    assert record is not None and record.phase == "revealed"
    updates = [c for c in pins if c == record.cid]
    assert updates == [record.cid]  # by the store's put, not again by the node


def test_the_node_decides_at_the_threshold_of_the_latest_round_log(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Round 1 starts from the initial model, which no log covers: the node's validation F1 is
    at 0.5 and says so. Round 2 starts from round 1's global model: F1 at the threshold round
    1's log records (fitted by the aggregator), named as its source."""
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 8, seed=0)
    fed = build_federation(
        w3=embedded.w3,
        coordinator=embedded.coordinator,
        aggregator=embedded.aggregator,
        sites=make_sites(
            embedded.sites[:2],
            [splits.train.subset(p) for p in parts[:2]],
            training=TrainConfig(epochs=1),
            val=splits.val,
        ),
        store=LocalStore(tmp_path / "store"),
        folder=tmp_path,
        validation=splits.val,
        settings=AggregatorSettings(valuation="loo", explain_method=None),
    )
    assert fed.run_round() is not None and fed.run_round() is not None
    info = fed.ledger.get_round(1)
    bias = RoundLog.from_bytes(fed.store.get(info.log_cid, info.log_sha256)).metrics.after.bias
    assert bias is not None and decision_threshold(bias) != 0.5
    rounds = NodeState.load(tmp_path / "nodes" / "site-0" / "state.json").rounds
    first, second = rounds[1], rounds[2]
    assert first.val_threshold == 0.5 and first.val_f1_calibrated == first.val_f1
    assert first.threshold_from == "default 0.5: no earlier round finalized"
    assert second.val_threshold == decision_threshold(bias)
    assert second.threshold_from == "round 1's log"
    assert second.val_f1_calibrated is not None and second.val_f1 is not None


def test_node_status_shows_the_f1_at_the_threshold_the_node_used(tmp_path: Path) -> None:
    """Records written before the node read the round log decided at 0.5 and still load."""
    path = tmp_path / "state.json"
    path.write_text('{"rounds": {"1": {"round": 1, "phase": "revealed", "val_f1": 0.2}}}')
    old = NodeState.load(path).rounds[1]
    assert _val_decision(old) == {"val_f1": 0.2, "threshold": 0.5}
    new = RoundRecord(
        round=2, phase="revealed", val_f1=0.1, val_threshold=0.49, val_f1_calibrated=0.9
    )
    assert _val_decision(new) == {"val_f1": 0.9, "threshold": 0.49}
    assert _val_decision(None) == {"val_f1": None, "threshold": None}


def test_a_site_whose_task_differs_from_the_terms_stops_with_both_sides_named(
    world: World,
) -> None:
    """A hand-edited class list (or model) is one clear TaskMismatch naming the difference,
    raised before any training — not an endless retry — and nothing is committed."""
    site = world.fed.sites[0]
    renamed = replace(site.config.data, class_names=("healthy", "sick"))
    node = world.node(0, data=renamed)
    with pytest.raises(TaskMismatch) as err:
        node.participate(world.round)
    text = str(err.value)
    assert "this site" in text and f"round {world.round}'s terms" in text
    assert "healthy" in text and "class 0" in text
    assert world.ledger.get_submission(world.round, node.address) is None


def test_a_site_whose_data_does_not_fit_its_model_is_refused_at_start(world: World) -> None:
    with pytest.raises(
        TaskMismatch,
        match=r"images are 1x28x28 .* smallcnn model expects 3x28x28",
    ):
        world.node(0, model=ModelSpec(in_channels=3))


def test_unusable_terms_skip_the_round_without_training(embedded: ChainEnv, tmp_path: Path) -> None:
    world = World(embedded, tmp_path, terms=b'{"not":"terms"}')
    node = world.node(0)
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert "the committed terms are unusable" in record.note
    # declined on chain (a42), not silently absent: no update committed
    assert world.ledger.declines(world.round).get(node.address) is Decline.TERMS_UNUSABLE


def test_oversized_terms_skip_the_round_unread(
    embedded: ChainEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Terms over MAX_TERMS_BYTES (here valid terms padded with spaces) are refused by the store
    before a byte is read: on the parent the node read and parsed them (at the store's 256 MiB
    limit, ~7 GB of memory in every node) and trained."""
    world = World(embedded, tmp_path)
    honest = world.fed.service.round_terms(world.round).to_bytes()
    world = World(embedded, tmp_path / "2", terms=honest + b" " * MAX_TERMS_BYTES)
    node = world.node(0)
    with caplog.at_level("ERROR", logger="fedtrail.node"):
        record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    # declined on chain (a42), not silently absent: no update committed
    assert world.ledger.declines(world.round).get(node.address) is Decline.TERMS_UNUSABLE
    assert f"over the {MAX_TERMS_BYTES}-byte limit" in record.note
    assert "not taking part" in caplog.text


def test_a_later_round_that_rechooses_the_payment_settings_is_refused(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Attacks a17, a18, a20, a39, a40 at the site: round-2 terms that change round 1's
    validation split, standing, aggregation rule or DP delta, or shorten its commit window, are
    refused, naming what changed; round-2 terms that change only what may change per round (the
    round, the valuation seed with it, a longer window) are not."""
    world = World(embedded, tmp_path)
    node = world.node(0)
    first = RoundTerms.from_bytes(
        world.store.get(world.ledger.get_round(1).terms_cid, world.ledger.get_round(1).terms_sha256)
    )
    seed = first.valuation["seed"]
    honest = replace(
        first,
        round=2,
        valuation={**first.valuation, "seed": seed + 1},
        commit_seconds=first.commit_seconds + 7,
    )
    assert node._payment_refusal(first) is None
    assert node._payment_refusal(honest) is None
    for edit, named in (
        ({"validation_sha256": "cd" * 32}, "validation split"),
        ({"valuation": {**honest.valuation, "standing": False}}, '"standing":false'),
        ({"aggregation_rule": {**first.aggregation_rule, "name": "krum"}}, "krum"),
        # a39: a DP delta set (or moved) after round 1 keeps out the sites it does not suit
        ({"privacy": PrivacyTerms(delta=1e-5, required=False)}, "privacy delta None -> 1e-05"),
        # a40: a commit window shortened for a chosen round shuts out the slowest sites
        ({"commit_seconds": first.commit_seconds - 1}, "shorter than round 1's"),
    ):
        why = node._payment_refusal(replace(honest, **edit))
        assert why is not None and "settings that decide payment" in why, why
        assert named in why and "not taking part" in why, why


@pytest.mark.parametrize(
    ("windows", "named"),
    [((50, 3600), "commit window is 50 s"), ((60, 30), "reveal window is 30 s")],
)
def test_a_round_whose_chain_windows_are_not_its_terms_is_refused_before_training(
    embedded: ChainEnv, tmp_path: Path, windows: tuple[int, int], named: str
) -> None:
    """a40's bypass at the site: terms promise a 60 s commit window and a 3,600 s reveal window
    while the aggregator opened the round on chain with other lengths (a commit window cut to
    shut out the slowest sites). The node neither trains nor commits, and says why; verify's
    ``terms.windows`` fails such a round too, but only after the slow site was kept out."""
    world = World(embedded, tmp_path, windows=windows)
    node = world.node(0)
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert "windows on chain are not its terms'" in record.note and named in record.note
    assert "not taking part" in record.note
    # declined on chain (a42), not silently absent: no update committed
    assert world.ledger.declines(world.round).get(node.address) is Decline.WINDOWS
    honest = World(embedded, tmp_path / "honest")
    kept = honest.node(0).participate(honest.round)
    assert kept is not None and kept.phase == "committed", kept


def _all(**thresholds: Any) -> dict[str, Any]:
    """A terms' combiner block as this build writes it (every threshold), with ``thresholds``."""
    return {**asdict(Combiner()), **thresholds}


def _standing(**valuation: Any) -> dict[str, Any]:
    """A terms' valuation block every default ``[accept]`` takes but for ``valuation``."""
    return {"method": "shapley", "metric": "loss", "standing": True, **valuation}


def _peers(valuation: dict[str, Any]) -> dict[str, Any]:
    return {"valuation": valuation, "score_commit_seconds": 60, "score_reveal_seconds": 60}


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ({"valuation": {"method": "shapley"}}, "'metric' is missing"),
        ({"valuation": {"method": "banzhaf", "metric": "balanced_loss"}}, "method must be one of"),
        (
            {"valuation": {"method": "linear_shapley", "metric": "balanced_loss"}},
            "aggregator round",
        ),
        (
            {"valuation": {"method": "loo", "metric": "loss", "combiner": {"max_norm_z": -1.0}}},
            "max_norm_z",
        ),
        ({"valuation": {"method": "loo", "metric": "loss", "combiner": {"nope": 1.0}}}, "nope"),
        (
            {"valuation": _standing(combiner={"stale_cosine": 0.5})},
            "stale_cosine 0.5 (accepted: at least 0.9999)",
        ),
        (
            {"valuation": _standing(combiner={"stale_cosine": 1.0})},
            "looser than this site accepts ([accept.loosest] in its config.toml): stale_cosine 1.0",
        ),
        (
            {"duplicates": DuplicateRule(cosine=1.0, relative_l2=0.0)},
            "duplicate_cosine 1.0 (accepted: at most 0.9999)",
        ),
        (  # the all-passer warm-up floor a default node does not take (h-324), and the same
            # spelled as a float in the terms' JSON: the parsed scope is compared, not its text
            {"valuation": _standing(combiner=_all(warm_up_floor=0.5, warm_up_scope=0))},
            "warm_up_scope 0 under warm_up_floor 0.5",
        ),
        (
            {"valuation": _standing(combiner=_all(warm_up_floor=0.5, warm_up_scope=0.0))},
            "warm_up_scope 0 under warm_up_floor 0.5",
        ),
        (
            _peers(
                {
                    "method": "loo",
                    "metric": "auc",
                    "mode": "peers",
                    "quorum": 2,
                    "large_game": "linear_shapley",
                }
            ),
            "needs a loss metric",
        ),
        ({"aggregation_rule": {"name": "fedprox"}}, "unknown aggregation rule"),
        ({"aggregation_rule": {"name": "weighted", "mu": 0.1}}, "mu"),
        ({"aggregation_rule": {"name": "trimmed_mean", "trim_ratio": 0.9}}, "trim_ratio"),
    ],
    ids=[
        "no-metric",
        "unknown-method",
        "validator-game",
        "bad-threshold",
        "unknown-threshold",
        "stricter-than-accepted",
        "looser-than-accepted",
        "duplicates-off",
        "unscoped-warm-up",
        "unscoped-warm-up-float",
        "peer-auc-linear",
        "unknown-rule",
        "unknown-rule-setting",
        "bad-rule-setting",
    ],
)
def test_terms_no_one_can_run_skip_the_round_before_training(
    embedded: ChainEnv,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    edit: dict[str, Any],
    why: str,
) -> None:
    """A round whose committed aggregation rule or valuation settings no honest party can run can
    be neither scored, aggregated nor audited, and one whose thresholds are stricter than the
    site accepts would zero honest updates: the site neither trains (no privacy budget spent)
    nor commits, and says why: once, in its log and in the round's record (``node status``),
    which ends the round for it (the terms are hash-pinned, so no later poll can change the
    answer: it used to fetch and refuse them again every poll until the commit window closed,
    and ``node run --once`` never returned)."""
    world = World(embedded, tmp_path, edit=edit)
    node = world.node(0)
    with caplog.at_level("ERROR", logger="fedtrail.node"):
        record = node.participate(world.round)
        assert record is not None and record.phase == "skipped"
        assert node.participate(world.round) is record  # recorded: not fetched and refused again
    # declined on chain (a42), not silently absent: no update committed
    assert world.ledger.declines(world.round).get(node.address) is Decline.UNACCEPTED
    assert node.state.rounds[world.round].phase == "skipped"
    assert "cannot or will not run" in record.note and why in record.note
    assert caplog.text.count("cannot or will not run") == 1


def test_a_site_that_accepts_stricter_thresholds_trains_under_them(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """The control: a site whose ``[accept]`` table takes the terms' stricter threshold trains
    and commits as usual."""
    world = World(
        embedded,
        tmp_path,
        edit={"valuation": _standing(combiner=_all(stale_cosine=0.5))},
    )
    node = world.node(0, accept=ThresholdLimits(stale_cosine=0.5))
    record = node.participate(world.round)
    assert record is not None and record.phase != "skipped"
    assert world.ledger.get_submission(world.round, node.address) is not None


def test_a_site_that_accepts_looser_thresholds_trains_under_them(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """The control of the loose side: ``[accept.loosest]`` taking the terms' larger
    ``max_sample_ratio`` (a federation of very unequal hospitals) lets the site train."""
    world = World(
        embedded,
        tmp_path,
        edit={"valuation": _standing(combiner=_all(max_sample_ratio=50.0))},
    )
    node = world.node(0, accept=ThresholdLimits(loosest=LoosestLimits(max_sample_ratio=50.0)))
    record = node.participate(world.round)
    assert record is not None and record.phase != "skipped"
    assert world.ledger.get_submission(world.round, node.address) is not None


def test_a_device_the_machine_lacks_is_refused_when_the_node_starts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`device = "cuda"` in config.toml on a machine without CUDA passed `node run`'s start and
    ended the daemon only when the first round opened (ConfigError from training, exit 2),
    hours later and mid-round. Now the node refuses it when it starts."""
    from fedtrail.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' requested but torch sees no CUDA"):
        world.node(0, training=TrainConfig(epochs=1, device="cuda"))
    world.node(0, training=TrainConfig(epochs=1, device="auto"))  # auto falls back to the CPU
