"""DP-SGD with topk8 compression (issue 16): the node compresses its DP-noised delta, the
error-feedback residual it keeps is built from that noised delta alone (post-processing), the
declared epsilon is the dense update's, and the round verifies; terms that keep the per-update
noise check (which no compressed update can pass) are refused before any budget is spent.

Two rounds on the embedded chain with a ``LocalStore``: two DP sites send ``topk8``, one DP site
sends dense updates, under aggregator terms whose ``dp_noise_check`` is 0 (the sites consent
with ``[accept.loosest] dp_noise_check = 0``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.privacy import audit_privacy
from fedtrail.auditor.verify import RoundAudit, verify_round
from fedtrail.chain import advance_time, block_timestamp, connect, funded_accounts
from fedtrail.ledger import Ledger
from fedtrail.ledger.records import read_decline
from fedtrail.ml.datasets import ImageDataset, load_bundled, partition_iid
from fedtrail.ml.dp_noise import noise_breach
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.privacy import declared_micro, plan_privacy
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import PrivacyConfig
from fedtrail.node.daemon import CLOCK_SLACK, RESIDUAL_NAME, NodeHooks, RoundRecord
from fedtrail.protocol.codes import Decline, Phase, Reason
from fedtrail.protocol.privacy import DpParams
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.codec import Compression, decode_update
from fedtrail.storage.residual import load_residual
from fedtrail.storage.store import ContentStore, LocalStore
from fedtrail.valuation.combine import default_combiner
from fedtrail.valuation.limits import LoosestLimits, ThresholdLimits
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ModelSpec()
DP_ON = PrivacyConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0)
TOPK8 = Compression(method="topk8")
WAIVED = ThresholdLimits(loosest=LoosestLimits(dp_noise_check=0))
ROUNDS = 2
Delta = dict[str, torch.Tensor]


@dataclass
class Run:
    fed: Federation
    trains: list[ImageDataset]
    validation: ImageDataset
    trained: dict[int, Delta]
    """site-0's DP-noised delta of each round, as train_private returned it"""
    residuals: dict[int, Delta]
    """site-0's residual file after each round"""
    records: dict[tuple[int, int], RoundRecord]
    """(round, site index) -> the node's record after its reveal"""

    @property
    def ledger(self) -> Ledger:
        return self.fed.ledger

    @property
    def store(self) -> ContentStore:
        return self.fed.store


def _pass(ledger: Ledger, deadline: int) -> None:
    """Moves the chain's clock just past ``deadline`` (and the nodes' clock slack)."""
    now = block_timestamp(ledger.w3)
    if now <= deadline + CLOCK_SLACK:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tmp = tmp_path_factory.mktemp("dp-topk8")
        w3 = connect("embedded")
        accounts = funded_accounts(w3)
        splits = load_bundled()
        parts = partition_iid(splits.train.labels, 8, seed=0)
        trains = [splits.train.subset(p) for p in parts[:3]]
        common = {
            "training": TrainConfig(epochs=1),
            "val": splits.val,
            "poll_interval": 0.05,
            "privacy": DP_ON,
            "accept": WAIVED,
        }
        sites = [
            *make_sites(accounts[2:4], trains[:2], compression=TOPK8, **common),  # type: ignore[arg-type]
            *make_sites(accounts[4:5], trains[2:], names=["site-2"], **common),  # type: ignore[arg-type]
        ]
        settings = AggregatorSettings(
            explain_method=None,
            dp_delta=1e-5,
            combiner=replace(default_combiner(AggregatorSettings().standing), dp_noise_check=0),
        )
        fed = build_federation(
            w3=w3,
            coordinator=accounts[0],
            aggregator=accounts[1],
            sites=sites,
            store=LocalStore(tmp / "store"),
            folder=tmp,
            validation=splits.val,
            settings=settings,
        )
        trained: dict[int, Delta] = {}

        def capture(delta: Delta, round_id: int, _: object) -> Delta:
            trained[round_id] = {k: v.clone() for k, v in delta.items()}
            return delta

        out = Run(fed, trains, splits.val, trained, {}, {})
        for _ in range(ROUNDS):
            r = fed.service.open_next()
            nodes = [fed.node(0, hooks=NodeHooks(transform_update=capture)), fed.node(1)]
            nodes.append(fed.node(2))
            for n in nodes:
                n.participate(r)  # train, encode, commit
            _pass(fed.ledger, fed.ledger.get_round(r).commit_deadline)
            for i, n in enumerate(nodes):
                record = n.participate(r)  # store, reveal
                assert record is not None and record.phase == "revealed", record
                out.records[(r, i)] = record
            if not fed.service.ready_to_value(r):
                _pass(fed.ledger, fed.ledger.get_round(r).reveal_deadline)
            outcome = fed.service.step() or fed.service.step()  # value, then finalize
            assert outcome is not None and outcome.phase == Phase.FINALIZED
            out.residuals[r] = load_residual(tmp / "nodes" / "site-0" / RESIDUAL_NAME, SPEC)
        yield out
    finally:
        torch.set_num_threads(before)


def _blob(run: Run, r: int, i: int) -> tuple[Delta, DpParams, str]:
    sub = run.ledger.get_submission(r, run.fed.sites[i].account.address)
    assert sub is not None and sub.revealed
    delta, meta = decode_update(run.store.get(sub.cid, sub.sha256), spec=SPEC, expected_round=r)
    assert meta.dp is not None
    return delta, meta.dp, meta.compression.method


def test_the_topk8_sites_send_compressed_dp_updates_declaring_the_dense_epsilon(run: Run) -> None:
    for r in range(1, ROUNDS + 1):
        for i, method in enumerate(("topk8", "topk8", "none")):
            delta, params, sent = _blob(run, r, i)
            assert sent == method
            # the DP parameters, and so the epsilon, are what the node plans before training,
            # whatever it then sends
            training = run.fed.sites[i].config.training
            assert params == plan_privacy(DP_ON.settings(), len(run.trains[i]), training, 1e-5)
            record = run.records[(r, i)]
            assert record.phase == "revealed"
            earlier = [_blob(run, e, i)[1] for e in range(1, r)]
            before = sum(run.records[(e, i)].epsilon_micro for e in range(1, r))
            assert record.epsilon_micro == declared_micro(params, earlier, before) > 0
            if method == "topk8":  # most coordinates are not sent
                zeros = sum(int((v == 0).sum()) for v in delta.values())
                assert zeros > 0.5 * sum(v.numel() for v in delta.values())
    for i in range(3):  # the chain charged every declaration
        total = sum(run.records[(r, i)].epsilon_micro for r in range(1, ROUNDS + 1))
        assert run.ledger.privacy(run.fed.sites[i].account.address).spent_micro == total


def test_the_residual_holds_only_what_the_noised_delta_left_unsent(run: Run) -> None:
    """residual_r = trained_r + residual_(r-1) - sent_r, with trained_r the delta DP-SGD returned
    (which carries the Gaussian noise its parameters add): nothing else enters it."""
    previous = {k: torch.zeros_like(v) for k, v in run.residuals[1].items()}
    for r in range(1, ROUNDS + 1):
        sent, params, _ = _blob(run, r, 0)
        trained = run.trained[r]
        assert noise_breach(trained, params, len(run.trains[0]), "none") is None
        residual = run.residuals[r]
        assert any(bool(v.abs().sum() > 0) for v in residual.values())
        for name, value in trained.items():
            torch.testing.assert_close(
                residual[name] + sent[name], value + previous[name], rtol=0, atol=1e-6
            )
        previous = residual


def _failed(audit: RoundAudit) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.applicable and not c.passed}


def test_the_rounds_verify_and_the_compressed_updates_are_valued(run: Run) -> None:
    for r in range(1, ROUNDS + 1):
        audit = verify_round(run.ledger, run.store, r, validation=run.validation, accept=WAIVED)
        assert _failed(audit) == {}
        applied = {c.name for c in audit.checks if c.applicable}
        assert "privacy.spend" in applied  # recomputed from each blob's DP parameters
        assert "privacy.noise" not in applied  # the terms waive the per-update noise check
        info = run.ledger.get_round(r)
        log = RoundLog.from_bytes(run.store.get(info.log_cid, info.log_sha256))
        by_site = {e.site: e for e in log.sites}
        for i in (0, 1):
            entry = by_site[run.fed.sites[i].account.address]
            assert entry.reason != Reason.MALFORMED, entry.explanation
            assert "UNCHECKABLE" not in entry.explanation
    privacy = audit_privacy(run.ledger, run.store)
    assert privacy.passed, privacy.problems
    assert len(privacy.updates) == 3 * ROUNDS
    assert all(u.recomputed_micro == u.declared_micro for u in privacy.updates)


def test_terms_that_check_the_noise_are_refused_before_training(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Under the default terms (dp_noise_check 1) a topk8 DP update would be scored 0 as
    UNCHECKABLE after spending budget: the node skips the round, spends nothing and declares
    its refusal on chain (a47: before, the skip left no trace, and terms keeping the default
    check shut every DP topk8 site out unseen); the same node sending dense updates takes
    part."""
    world = World(embedded, tmp_path)
    node = world.node(0, privacy=DP_ON, compression=TOPK8, accept=WAIVED)
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert "dp_noise_check 1" in record.note and "topk8" in record.note
    declared = world.ledger.get_submission(world.round, node.address)
    assert declared is not None and not declared.revealed
    info = world.ledger.get_round(world.round)
    assert (
        read_decline(declared.commitment, node.address, world.round, info.terms_sha256)
        is Decline.PRIVACY
    )
    assert world.ledger.privacy(node.address).spent_micro == 0
    assert not (world.folder(0) / "pending").exists() or not any(
        (world.folder(0) / "pending").iterdir()
    )
    dense = world.node(1, privacy=DP_ON, accept=WAIVED).participate(world.round)
    assert dense is not None and dense.phase == "committed"
    assert math.isfinite(dense.train_loss)
