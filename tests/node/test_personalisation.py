"""Personalisation on the site: after a finalized round whose terms ask for it, the node
fine-tunes that round's global model on its own data, keeps it in its folder (never on the
store), records the global and personalised validation metrics, and does it the same way
every time."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.chain import advance_time, block_timestamp
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.training import TrainConfig
from fedtrail.node.commands import _personal
from fedtrail.node.daemon import CLOCK_SLACK, NodeState, RoundRecord
from fedtrail.protocol.terms import Personalisation, RoundTerms
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.codec import decode_model
from fedtrail.storage.personal import PERSONAL_INFO, PERSONAL_MODEL, load_personal
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _federation(
    env: ChainEnv, tmp: Path, steps: int, method: str = "finetune", sites: int = 2
) -> Federation:
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 8, seed=0)
    return build_federation(
        w3=env.w3,
        coordinator=env.coordinator,
        aggregator=env.aggregator,
        sites=make_sites(
            env.sites[:sites],
            [splits.train.subset(p) for p in parts[:sites]],
            training=TrainConfig(epochs=1),
            val=splits.val,
        ),
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=splits.val,
        settings=AggregatorSettings(
            valuation="loo",
            explain_method=None,
            personalise_steps=steps,
            personalise_lr=0.02,
            personalise_method=method,
        ),
    )


@pytest.mark.anvil
def test_a_site_personalises_the_finalized_global_model_and_keeps_it(
    anvil: ChainEnv, tmp_path: Path
) -> None:
    fed = _federation(anvil, tmp_path, steps=6)
    assert fed.run_round() is not None
    info = fed.ledger.get_round(1)
    terms = RoundTerms.from_bytes(fed.store.get(info.terms_cid, info.terms_sha256))
    assert terms.personalisation == Personalisation(method="finetune", steps=6, lr=0.02)
    folder = tmp_path / "nodes" / "site-0"
    node = fed.node(0)
    record = node.personalise_latest()
    assert record is not None and record.round == 1 and record.personal_note == ""
    blob = (folder / PERSONAL_MODEL).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == record.personal_sha256
    for value in (record.global_val_auc, record.personal_val_auc):
        assert value is not None and 0.0 <= value <= 1.0
    assert record.personal_val_f1_calibrated is not None
    assert record.global_val_f1_calibrated is not None
    # Never on the store: no stored blob has the personal model's bytes.
    stored = [p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert blob not in stored and len(stored) > 0
    # Saved in the node's state, and done once: a restarted node does not redo it.
    saved = NodeState.load(folder / "state.json").rounds[1]
    assert saved.personal_sha256 == record.personal_sha256
    assert saved.personal_val_auc == record.personal_val_auc
    (folder / PERSONAL_MODEL).unlink()
    assert fed.node(0).personalise_latest() is not None
    assert not (folder / PERSONAL_MODEL).exists()
    # Deterministic: the same round and seed give the same bytes again.
    again = fed.node(0).personalise(1)
    assert again is not None and again.personal_sha256 == record.personal_sha256
    assert (folder / PERSONAL_MODEL).read_bytes() == blob
    state, meta = load_personal(folder, ModelSpec())
    assert meta.round == 1 and meta.global_sha256 == info.global_sha256 and meta.steps == 6
    assert set(state) and meta.sha256 == record.personal_sha256
    # The other site's model is its own: other data, other bytes.
    other = fed.node(1).personalise_latest()
    assert other is not None and other.personal_sha256 != record.personal_sha256
    shown = _personal(saved)
    assert shown["personal_val_auc"] == saved.personal_val_auc
    assert shown["global_val_auc"] == saved.global_val_auc
    assert shown["personal_val_f1"] == saved.personal_val_f1_calibrated
    assert saved.global_val_auc is not None and saved.personal_val_auc is not None
    better = saved.personal_val_auc >= saved.global_val_auc
    assert saved.personal_preferred is better
    assert shown["use"] == ("personal" if better else "global")


@pytest.mark.anvil
def test_personalisation_gives_way_to_a_newer_round_the_site_has_work_in(
    anvil: ChainEnv, tmp_path: Path
) -> None:
    """Attack a108: the terms' steps (up to 10,000) are the aggregator's, and the watch loop does
    not look at the chain while they run; the service opens the next round the moment it
    finalizes one, so every honest node was still fine-tuning when that round's commit window
    closed and an ally that skips personalising took the whole round, verify passing. With a
    newer round open and its commit window open to this site (no record yet), personalising
    stops before its first step and keeps nothing; committed there, it runs until the reveal is
    due; once the commit window closed without the site, there is nothing to give way to."""
    fed = _federation(anvil, tmp_path, steps=6)
    assert fed.run_round() is not None
    r2 = fed.service.open_next()
    folder = tmp_path / "nodes" / "site-0"
    node = fed.node(0)
    assert node.personalise_latest() is None  # gave way to round 2's open commit window
    assert not (folder / PERSONAL_MODEL).exists()
    record = node.state.rounds[1]
    assert record.personal_sha256 == "" and record.personal_note == ""
    node.state.rounds[r2] = RoundRecord(round=r2, phase="committed")
    assert not node._round_waiting(1)  # committed: nothing due before the commit deadline
    info = fed.ledger.get_round(r2)
    advance_time(
        fed.ledger.w3, info.commit_deadline - block_timestamp(fed.ledger.w3) + 2 + CLOCK_SLACK
    )
    assert node._round_waiting(1)  # the reveal is due: it gives way
    del node.state.rounds[r2]
    # no record and no commitment, the commit window over: participate does nothing, so
    # personalising does not wait (it used to, for the whole round)
    assert node.participate(r2) is None
    done = node.personalise_latest()
    assert done is not None and done.round == 1 and done.personal_sha256
    assert (folder / PERSONAL_MODEL).exists()


@pytest.mark.anvil
def test_a_newer_round_the_site_missed_does_not_lose_its_personalised_model(
    anvil: ChainEnv, tmp_path: Path
) -> None:
    """a108 follow-up: round 2 finalized without this site (it missed the commit window); the
    node used to move on to round 2, which it has no record of, and round 1, the one it took
    part in, was never personalised."""
    fed = _federation(anvil, tmp_path, steps=6, sites=3)
    assert fed.run_round() is not None
    r2 = fed.service.open_next()
    for n in fed.nodes[1:]:
        n.participate(r2)
    info = fed.ledger.get_round(r2)
    advance_time(
        fed.ledger.w3, info.commit_deadline - block_timestamp(fed.ledger.w3) + 2 + CLOCK_SLACK
    )
    for n in fed.nodes[1:]:
        assert n.participate(r2) is not None
    advance_time(
        fed.ledger.w3, info.reveal_deadline - block_timestamp(fed.ledger.w3) + 2 + CLOCK_SLACK
    )
    for _ in range(3):  # value, then aggregate and finalize
        if fed.ledger.last_finalized_round() < r2:
            fed.service.step()
    assert fed.ledger.last_finalized_round() == r2
    node = fed.node(0)
    assert r2 not in node.state.rounds
    done = node.personalise_latest()
    assert done is not None and done.round == 1 and done.personal_sha256
    assert node.state.rounds[1].personal_sha256 == done.personal_sha256


@pytest.mark.anvil
def test_without_personalisation_in_the_terms_nothing_is_written(
    anvil: ChainEnv, tmp_path: Path
) -> None:
    fed = _federation(anvil, tmp_path, steps=0)
    assert fed.run_round() is not None
    record = fed.node(0).personalise_latest()
    assert record is not None and record.personal_sha256 == ""
    assert record.personal_note == "the round's terms ask for no personalisation"
    folder = tmp_path / "nodes" / "site-0"
    assert not (folder / PERSONAL_MODEL).exists() and not (folder / PERSONAL_INFO).exists()
    assert _personal(record) == {}


def test_older_state_files_load_without_personal_fields(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"rounds": {"1": {"round": 1, "phase": "revealed", "val_auc": 0.7}}}')
    old = NodeState.load(path).rounds[1]
    assert old.personal_sha256 == "" and old.personal_val_auc is None
    assert _personal(old) == {} and _personal(None) == {}
    multi = RoundRecord(
        round=2,
        phase="revealed",
        val_classes=3,
        personal_sha256="ab" * 32,
        global_val_balanced_accuracy_calibrated=0.5,
        personal_val_balanced_accuracy_calibrated=0.6,
    )
    assert _personal(multi)["personal_val_bacc"] == 0.6
    assert _personal(multi)["global_val_bacc"] == 0.5
    assert _personal(multi)["use"] is None
    worse = RoundRecord(round=3, phase="revealed", personal_sha256="cd" * 32)
    worse.personal_preferred = False
    assert _personal(worse)["use"] == "global"


@pytest.mark.anvil
def test_a_diverging_fine_tune_is_recorded_not_fatal(anvil: ChainEnv, tmp_path: Path) -> None:
    fed = _federation(anvil, tmp_path, steps=0)
    assert fed.run_round() is not None
    info = fed.ledger.get_round(1)
    terms = RoundTerms.from_bytes(fed.store.get(info.terms_cid, info.terms_sha256))
    node = fed.node(0)
    # The node reads the terms by the chain's hash; hand it terms asking for a wild lr.
    wild = replace(terms, personalisation=Personalisation(steps=20, lr=1e6))
    real_get = node.store.get

    def get(cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        if cid == info.terms_cid:
            return wild.to_bytes()
        return real_get(cid, sha256, max_bytes=max_bytes)

    node.store = type("S", (), {"get": staticmethod(get)})()  # type: ignore[assignment]
    record = node.personalise(1)
    assert record is not None and record.personal_note.startswith("personalisation diverged")
    assert not (tmp_path / "nodes" / "site-0" / PERSONAL_MODEL).exists()


@pytest.mark.anvil
def test_fedrep_carries_the_site_head_from_round_to_round_over_the_new_global_body(
    anvil: ChainEnv, tmp_path: Path
) -> None:
    fed = _federation(anvil, tmp_path, steps=4, method="fedrep")
    folder = tmp_path / "nodes" / "site-0"
    spec = ModelSpec()
    assert fed.run_round() is not None
    assert fed.node(0).personalise_latest() is not None
    first, info1 = load_personal(folder, spec)
    assert info1.method == "fedrep" and info1.round == 1
    assert fed.run_round() is not None
    record = fed.node(0).personalise_latest()
    assert record is not None and record.round == 2 and record.personal_note == ""
    second, info2 = load_personal(folder, spec)
    # Its decision is calibrated on the site's own validation split, not the round log's.
    assert info2.decision_from == "the site's validation split" and info2.bias is not None
    g = fed.ledger.get_round(2)
    global2, _ = decode_model(fed.store.get(g.global_cid, g.global_sha256), spec=spec)
    head = {"fc2.weight", "fc2.bias"}
    # The shared part is round 2's global model bit for bit; the head is the site's own.
    assert {k for k in global2 if not torch.equal(global2[k], second[k])} == head
    # ... and it went on from round 1's personal head, not from round 2's global head.
    from_previous = (second["fc2.weight"] - first["fc2.weight"]).norm()
    from_global = (second["fc2.weight"] - global2["fc2.weight"]).norm()
    assert from_previous < from_global
    # A crash after the model was written but before the record was saved: the node adopts
    # the written model (same bytes, same figures) instead of training from itself again.
    blob = (folder / PERSONAL_MODEL).read_bytes()
    state = NodeState.load(folder / "state.json")
    saved = state.rounds[2]
    auc = saved.personal_val_auc
    saved.personal_sha256, saved.personal_val_auc = "", None
    state.save(folder / "state.json")
    again = fed.node(0).personalise_latest()
    assert again is not None and again.personal_sha256 == info2.sha256
    assert again.personal_val_auc == auc
    assert (folder / PERSONAL_MODEL).read_bytes() == blob
