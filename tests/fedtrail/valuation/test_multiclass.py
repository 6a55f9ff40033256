"""A five-class task (RetinaMNIST's shape: 28x28 RGB, 5 grades) through the valuation and a
whole round: every utility metric is defined, the scores are finite, and the round finalizes
with its metrics and per-class recall recorded, recomputed by the audit and shown by the node.

Synthetic data stand in for RetinaMNIST (each class brightens one colour channel and one band
of rows), so the test needs no data file and runs in seconds."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.report import write_report
from fedtrail.auditor.verify import verify_round
from fedtrail.chain import connect, dev_account
from fedtrail.cli import cli
from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.metrics import evaluate
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.node.commands import _val_decision
from fedtrail.node.daemon import NodeState
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.store import LocalStore
from fedtrail.valuation import value_round
from fedtrail.valuation.base import METRICS, Candidate, ValuationContext
from fedtrail.valuation.combine import any_positive
from fedtrail.valuation.utility import CoalitionUtility

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K = 5
SPEC = ModelSpec(in_channels=3, num_classes=K)


def five_classes(n: int, seed: int) -> ImageDataset:
    """``n`` 28x28 RGB images, classes 0..4 in turn, each class visible in the pixels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    x = rng.uniform(0.0, 0.5, size=(n, 3, 28, 28)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, c % 3] += 0.25
        x[i, :, 5 * c : 5 * c + 5, :] += 0.25
    return ImageDataset(x, y.astype(np.int64))


@dataclass(frozen=True)
class Sites:
    global_state: dict[str, torch.Tensor]
    validation: ImageDataset
    candidates: list[Candidate]


@functools.cache
def sites() -> Sites:
    global_state = initial_model(SPEC, seed=0).state_dict()
    candidates = []
    for i in range(3):
        result = train_local(
            global_state,
            five_classes(60, seed=10 + i),
            spec=SPEC,
            config=TrainConfig(epochs=2, seed=i),
        )
        candidates.append(Candidate(f"s{i}", result.num_samples, result.delta))
    return Sites(global_state, five_classes(50, seed=1), candidates)


@pytest.mark.parametrize("metric", METRICS)
def test_every_utility_metric_is_defined_for_five_classes(metric: str) -> None:
    s = sites()
    ctx = ValuationContext(
        global_state=s.global_state,
        spec=SPEC,
        candidates=s.candidates,
        validation=s.validation,
        metric=metric,  # type: ignore[arg-type]
    )
    util = CoalitionUtility(ctx)
    values = [util(frozenset()), util(frozenset({"s0"})), util(frozenset(util.players))]
    assert all(math.isfinite(v) for v in values), values
    if metric == "auc":  # the macro one-vs-rest AUC of the global model
        model = initial_model(SPEC, seed=1)
        model.load_state_dict(s.global_state)
        assert values[0] == evaluate(model, s.validation).auc


@pytest.mark.parametrize("metric", METRICS)
def test_a_five_class_round_is_valued_with_finite_scores(metric: str) -> None:
    s = sites()
    report = value_round(
        global_state=s.global_state,
        spec=SPEC,
        candidates=s.candidates,
        validation=s.validation,
        method="shapley",
        metric=metric,
        seed=0,
    )
    assert [v.site for v in report.sites] == ["s0", "s1", "s2"]
    assert report.method in ("shapley", "cosine")
    assert report.v_empty is not None and math.isfinite(report.v_empty)
    assert report.v_full is not None and math.isfinite(report.v_full)
    for v in report.sites:
        assert v.status is Reason.OK
        assert v.value is not None and math.isfinite(v.value)
    assert any_positive(report.sites)
    assert all(0 <= v.score <= 10**6 for v in report.sites)


def test_a_model_with_fewer_outputs_than_the_labels_need_is_one_clear_error() -> None:
    s = sites()
    two = ModelSpec(in_channels=3, num_classes=2)
    delta = {k: torch.zeros_like(v) for k, v in initial_model(two, seed=0).state_dict().items()}
    for metric in METRICS:
        ctx = ValuationContext(
            global_state=initial_model(two, seed=0).state_dict(),
            spec=two,
            candidates=[Candidate("s0", 10, delta)],
            validation=s.validation,
            metric=metric,  # type: ignore[arg-type]
        )
        with pytest.raises(ConfigError, match=r"2 (output )?classes.*4|4.*2 (output )?classes"):
            CoalitionUtility(ctx)(frozenset())


@pytest.mark.anvil
def test_a_five_class_round_finalizes_with_per_class_recall(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's path on the real Anvil node: three 5-class sites train, the round is valued
    (balanced loss, standing), aggregated and finalized; its log records the macro figures and
    the recall of every class, which the audit recomputes, `audit log` and the report show, and
    the node shows."""
    w3 = connect(anvil_url)
    accounts = [dev_account(i) for i in (0, 5, 6, 7)]
    validation = five_classes(50, seed=1)
    store = LocalStore(tmp_path / "store")
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        sites=make_sites(
            accounts[1:],
            [five_classes(60, seed=10 + i) for i in range(3)],
            training=TrainConfig(epochs=2),
            val=five_classes(25, seed=2),
            model=SPEC,
        ),
        store=store,
        folder=tmp_path,
        validation=validation,
        settings=AggregatorSettings(model=SPEC, explain_method=None),
    )
    for round_id in (1, 2):
        outcome = fed.run_round()
        assert outcome is not None and outcome.phase is Phase.FINALIZED, outcome
        assert all(math.isfinite(v["score"]) for v in outcome.valuations)
        info = fed.ledger.get_round(round_id)
        after = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256)).metrics.after
        assert after.classes == K and after.recall is not None and len(after.recall) == K
        assert after.recall_calibrated is not None and len(after.recall_calibrated) == K
        assert after.bias is not None and len(after.bias) == K
        assert after.threshold is None  # a two-class figure
        assert after.auc is not None and 0.0 <= after.auc <= 1.0
        assert after.balanced_accuracy_calibrated == pytest.approx(
            sum(r for r in after.recall_calibrated if r is not None) / K, abs=1e-12
        )
        audit = verify_round(fed.ledger, store, round_id, validation=validation)
        check = next(c for c in audit.checks if c.name == "metrics.recomputed")
        assert check.passed and "per-class recall" in check.detail, check.detail
    # round 2 decided at round 1's bias: the node's record and `node status` show the macro F1
    # and balanced accuracy of that decision and the recall of every class
    state = NodeState.load(tmp_path / "nodes" / "site-0" / "state.json")
    assert state.rounds[1].threshold_from == "default argmax: no earlier round finalized"
    record = state.rounds[2]
    assert record.threshold_from == "round 1's log" and record.val_classes == K
    assert record.val_recall_calibrated is not None and len(record.val_recall_calibrated) == K
    shown = _val_decision(record)
    assert shown["threshold"] is None and shown["val_f1"] == record.val_f1_calibrated
    assert shown["val_recall"] == record.val_recall_calibrated
    assert shown["val_bacc"] == record.val_balanced_accuracy_calibrated
    # the auditor's views: `audit log` (the CLI's ledger opener pointed at the test's ledger)
    # and the report's metrics table
    import fedtrail.auditor.commands as commands

    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    out = CliRunner().invoke(cli, ["audit", "log", "2", "--store", f"local:{store.root}"])
    assert out.exit_code == 0, out.output
    assert "5 classes (AUC and F1 above: macro)" in out.output
    assert "threshold fitted" not in out.output
    recall = after.recall_calibrated
    assert "recall per class after " + " ".join(f"{r:.3f}" for r in recall if r is not None) in (
        out.output
    )
    page = write_report(fed.ledger, store, tmp_path / "report").read_text(encoding="utf-8")
    assert "Macro AUC before" in page and "Recall class 4 (after)" in page
    assert "Threshold before" not in page
