"""The auditor: verify passes on an honest federation, and fails naming the check when an
update's bytes changed, when the aggregator finalized a model that is not the on-chain-weighted
aggregate, or when the explanation log disagrees with the chain. Plus an independent reader of
the raw event logs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

import fedtrail.aggregator.service as service_mod
from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.auditor.verify import (
    FetchFailure,
    RoundAudit,
    _check_task_fixed,
    _check_terms,
    _fetch,
    verify_all,
    verify_round,
)
from fedtrail.chain import connect, dev_account, funded_accounts
from fedtrail.cli import cli
from fedtrail.ledger import Ledger
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.metrics import decision_threshold
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.training import TrainConfig
from fedtrail.protocol import roundlog
from fedtrail.protocol.roundlog import MetricsPair, RoundLog, RoundMetrics
from fedtrail.protocol.weights import WEIGHT_SCALE
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.store import ContentStore, IpfsStore, LocalStore
from fedtrail.valuation.limits import ThresholdLimits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def federation(
    tmp: Path,
    rounds: int = 2,
    *,
    w3: Web3 | None = None,
    store: ContentStore | None = None,
    accounts: list[LocalAccount] | None = None,
    settings: AggregatorSettings | None = None,
    accept: ThresholdLimits | None = None,
) -> Federation:
    """Three hospitals after ``rounds`` rounds; ``accounts[0]`` coordinates and aggregates.
    Default: the embedded chain, its funded accounts and a local store in ``tmp``, valued with
    leave-one-out (and standing, the aggregator's default). The sites accept the settings'
    thresholds (``[accept]``), however strict, or ``accept`` when given."""
    w3 = w3 or connect("embedded")
    accounts = accounts or funded_accounts(w3)[:4]
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 10, seed=0)
    sites = accounts[1:]
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        sites=make_sites(
            sites,
            [splits.train.subset(parts[i]) for i in range(len(sites))],
            names=[f"hospital-{i}" for i in range(len(sites))],
            training=TrainConfig(epochs=1),
            accept=accept
            or (
                ThresholdLimits()
                if settings is None or settings.combiner is None
                else ThresholdLimits.accepting(settings.combiner)
            ),
        ),
        store=store or LocalStore(tmp / "store"),
        folder=tmp,
        validation=splits.val,
        settings=settings or AggregatorSettings(valuation="loo"),
    )
    for _ in range(rounds):
        fed.run_round()
    return fed


def on_anvil(url: str) -> dict[str, Any]:
    """``federation``'s arguments for a build on the real Anvil node at ``url`` (development
    accounts 0, 5, 6, 7): a third of the time of one on the embedded chain, whose gas
    estimation and event reads run in pure Python."""
    return {"w3": connect(url), "accounts": [dev_account(i) for i in (0, 5, 6, 7)]}


def _on_one_thread(tmp: Path, **kwargs: Any) -> Federation:
    """``federation`` on one torch thread, as the function-scoped ``one_torch_thread`` gives
    the tests that re-derive its figures (a module-scoped fixture is built before it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return federation(tmp, **kwargs)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_fed(
    anvil_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Ledger, LocalStore, AggregatorService]:
    """One honest two-round federation on Anvil with a local store, for the module's read-only
    tests (on Anvil, not the embedded chain: a third of the build time, see ``on_anvil``); a
    test that alters it works on a copy of the store."""
    tmp = tmp_path_factory.mktemp("honest")
    store = LocalStore(tmp / "store")
    fed = _on_one_thread(tmp, store=store, **on_anvil(anvil_url))
    return fed.ledger, store, fed.service


@pytest.mark.anvil
def test_verify_passes_on_an_honest_federation(local_fed: Any) -> None:
    ledger, store, _ = local_fed
    audits = verify_all(ledger, store)
    assert len(audits) == 2
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if not c.passed]
    names = {c.name for c in audits[0].checks}
    assert {
        "log.hash",
        "log.schema",
        "log.agrees",
        "weights",
        "global.recomputed",
        "terms.windows",
    } <= names


@pytest.mark.anvil
def test_verify_recomputes_the_scores_from_the_same_validation_set(local_fed: Any) -> None:
    ledger, store, _ = local_fed
    audit = verify_round(ledger, store, 1, validation=load_bundled().val)
    check = next(c for c in audit.checks if c.name == "scores.recomputed")
    assert check.passed, check.detail
    assert "largest score difference 0" in check.detail  # same machine, same threads: exact
    other = load_bundled().test
    audit = verify_round(ledger, store, 1, validation=other)
    check = next(c for c in audit.checks if c.name == "scores.recomputed")
    assert not check.passed and "not the one the aggregator used" in check.detail


@pytest.mark.anvil
def test_verify_recomputes_the_metrics_and_threshold_of_each_round(local_fed: Any) -> None:
    """The log records the calibrated decision (bias, threshold) and its figures; an auditor
    with the same validation set recomputes them exactly on the same machine."""
    ledger, store, _ = local_fed
    val = load_bundled().val
    for r in (1, 2):
        info = ledger.get_round(r)
        after = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256)).metrics.after
        assert after.bias is not None and after.threshold == decision_threshold(after.bias)
        assert after.f1_calibrated is not None and after.ece is not None
        check = next(
            c
            for c in verify_round(ledger, store, r, validation=val).checks
            if c.name == "metrics.recomputed"
        )
        assert check.passed, check.detail
        assert "threshold" in check.detail and "largest difference 0 " in check.detail
    audit = verify_round(ledger, store, 1, validation=load_bundled().test)
    check = next(c for c in audit.checks if c.name == "metrics.recomputed")
    assert not check.passed and "not the one the aggregator used" in check.detail


def _lie_about(after: RoundMetrics, lie: str) -> RoundMetrics:
    assert after.auc is not None and after.threshold is not None
    if lie == "auc":
        return dataclasses.replace(after, auc=min(1.0, after.auc + 0.01))
    # a consistent lie: the threshold and the bias that gives it
    return dataclasses.replace(after, threshold=0.3, bias=(0.0, math.log(0.7 / 0.3)))


@pytest.mark.parametrize("lie", ["auc", "threshold"])
@pytest.mark.anvil
def test_verify_fails_a_log_that_misstates_the_metrics(
    lie: str, tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aggregator writes (and hashes on chain) a log with an inflated AUC or another
    decision threshold, its summary stating the same (log.agrees checks that the summary is
    the metrics'): only the metrics check fails, naming the field."""
    real = RoundLog.to_bytes

    def lying(log: RoundLog) -> bytes:
        metrics = MetricsPair(log.metrics.before, _lie_about(log.metrics.after, lie))
        forged = dataclasses.replace(log, metrics=metrics)
        return real(dataclasses.replace(forged, summary=roundlog.summary_of(forged)))

    monkeypatch.setattr(RoundLog, "to_bytes", lying)
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    audit = verify_round(fed.ledger, fed.store, 1, validation=load_bundled().val)
    bad = {c.name: c.detail for c in audit.checks if not c.passed}
    assert set(bad) == {"metrics.recomputed"}
    assert f"after.{lie} " in bad["metrics.recomputed"]
    assert "before." not in bad["metrics.recomputed"]
    assert verify_round(fed.ledger, fed.store, 1).passed  # without the validation set: silent


@pytest.mark.anvil
def test_verify_compares_a_log_without_calibrated_metrics_on_the_plain_ones(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log in the format before calibration (no bias, threshold, ECE...) still verifies on
    AUC, F1, accuracy and loss."""
    real = RoundLog.to_bytes
    dropped = dict.fromkeys((*RoundMetrics.NUMBERS[4:], "bias"))

    def older(log: RoundLog) -> bytes:
        m = log.metrics
        pair = MetricsPair(
            dataclasses.replace(m.before, **dropped), dataclasses.replace(m.after, **dropped)
        )
        return real(dataclasses.replace(log, metrics=pair))

    monkeypatch.setattr(RoundLog, "to_bytes", older)
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    audit = verify_round(fed.ledger, fed.store, 1, validation=load_bundled().val)
    check = next(c for c in audit.checks if c.name == "metrics.recomputed")
    assert check.passed and "records no calibrated metrics" in check.detail, check.detail


@pytest.mark.anvil
def test_verify_fails_when_a_stored_update_was_altered(local_fed: Any, tmp_path: Path) -> None:
    ledger, shared, _ = local_fed
    shutil.copytree(shared.root, tmp_path / "store")  # the shared federation stays honest
    store = LocalStore(tmp_path / "store")
    sub = next(s for s in ledger.get_submissions(1) if s.weight > 0)
    blob_path = store.root / "blobs" / sub.cid
    data = bytearray(blob_path.read_bytes())
    data[-1] ^= 0xFF
    blob_path.chmod(0o644)
    blob_path.write_bytes(bytes(data))
    audit = verify_round(ledger, store, 1)
    assert not audit.passed
    bad = [c for c in audit.checks if not c.passed]
    assert any(c.name.startswith("update.") and "sha256" in c.detail for c in bad)
    assert any(c.name == "global.recomputed" for c in bad)


@pytest.mark.anvil
@pytest.mark.parametrize("damage", ["altered", "missing"])
def test_verify_fails_when_the_stored_global_model_was_altered_or_lost(
    local_fed: Any, tmp_path: Path, damage: str
) -> None:
    """The finalized global model of round 1 is read back by its CID and hashed (global.hash;
    global.recomputed compares a replayed digest with the chain and never reads the blob), and
    it is round 2's start model (start_model.hash): a flipped byte or a lost blob fails both,
    naming them, and nothing else of round 1 depends on it (round 2's checks that need its
    start model fail as not checked)."""
    ledger, shared, _ = local_fed
    shutil.copytree(shared.root, tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    info = ledger.get_round(1)
    assert ledger.get_round(2).start_cid == info.global_cid
    blob_path = store.root / "blobs" / info.global_cid
    blob_path.chmod(0o644)
    if damage == "altered":
        data = bytearray(blob_path.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob_path.write_bytes(bytes(data))
    else:
        blob_path.unlink()
    first = {c.name: c.detail for c in verify_round(ledger, store, 1).checks if not c.passed}
    second = {c.name for c in verify_round(ledger, store, 2).checks if not c.passed}
    assert set(first) == {"global.hash"}, first
    want = "do not match the on-chain sha256" if damage == "altered" else "(missing)"
    assert want in first["global.hash"] and info.global_cid in first["global.hash"]
    # round 2 starts from it: what needs the start model is listed as not checked
    assert second == {
        "start_model.hash",
        "global.recomputed",
        "reasons.oversized",
        "reasons.free_rider",
    }, second


@pytest.mark.anvil
def test_verify_fails_when_the_aggregator_used_its_own_weights(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service_mod.aggregate

    def dishonest(rule: Any, deltas: Any, weights: Any, **kw: Any) -> Any:
        # Its own weights: twice the on-chain ones (they sum to 2, not 1).
        return {k: 2 * v for k, v in real(rule, deltas, weights, **kw).items()}

    monkeypatch.setattr(service_mod, "aggregate", dishonest)
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    ledger, store = fed.ledger, fed.store
    audit = verify_round(ledger, store, 1)
    bad = {c.name for c in audit.checks if not c.passed}
    assert bad == {"global.recomputed"}


@pytest.mark.anvil
def test_verify_fails_when_the_log_disagrees_with_the_chain(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = RoundLog.to_bytes

    def lying(log: RoundLog) -> bytes:
        first = dataclasses.replace(log.sites[0], weight=log.sites[0].weight + 1)
        return real(dataclasses.replace(log, sites=(first, *log.sites[1:])))

    monkeypatch.setattr(RoundLog, "to_bytes", lying)
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    ledger, store = fed.ledger, fed.store
    audit = verify_round(ledger, store, 1)
    bad = {c.name: c.detail for c in audit.checks if not c.passed}
    assert set(bad) == {"log.agrees"} and "weight" in bad["log.agrees"]


OTHER_LEDGER = "0x000000000000000000000000000000000000dEaD"


def _lied_fraction(fraction: float) -> float:
    return fraction + 0.25 if fraction < 0.5 else fraction - 0.25


def _lie_weight_fraction(doc: dict[str, Any]) -> None:
    for e in doc["sites"]:  # the integer weights stay the chain's
        e["weight_fraction"] = _lied_fraction(e["weight_fraction"])


def _lie_ledger(doc: dict[str, Any]) -> None:
    doc["ledger"] = {"address": OTHER_LEDGER, "chain_id": 1}


def _lie_start_cid(doc: dict[str, Any]) -> None:
    doc["start_model"]["cid"] = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


def _lie_rule(doc: dict[str, Any]) -> None:
    doc["aggregation"]["rule"] = "median"  # the terms' (and the replayed) rule is weighted


LOG_FIELD_LIES = {
    "weight_fraction": (_lie_weight_fraction, "weight_fraction"),
    "ledger": (_lie_ledger, f"log names ledger {OTHER_LEDGER} on chain 1"),
    "start_model.cid": (_lie_start_cid, "log's start model CID QmYwAPJz"),
    "aggregation.rule": (_lie_rule, "log's aggregation rule 'median', the replayed 'weighted'"),
}


def _federation_writing(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch, edit: Any
) -> Federation:
    """A one-round federation whose aggregator edits its log's JSON before storing it."""

    def lying(log: RoundLog) -> bytes:
        doc = log.to_json()
        edit(doc)
        return roundlog.to_bytes(doc)

    with monkeypatch.context() as patch:
        patch.setattr(RoundLog, "to_bytes", lying)
        return federation(tmp_path, rounds=1, **on_anvil(anvil_url))


@pytest.mark.parametrize("lie", list(LOG_FIELD_LIES))
@pytest.mark.anvil
def test_verify_fails_a_log_whose_unpinned_fields_lie(
    lie: str, tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Log fields verify used not to compare: each site's weight fraction (it must be the
    on-chain weight over 1e18, as the aggregator writes it), the ledger (the valuation replay
    binds evidence to it), the start model's CID and the aggregation rule's name. A lie in any
    of them fails log.agrees, naming the field, and nothing else."""
    edit, needle = LOG_FIELD_LIES[lie]
    fed = _federation_writing(tmp_path, anvil_url, monkeypatch, edit)
    audit = verify_round(fed.ledger, fed.store, 1)
    bad = {c.name: c.detail for c in audit.checks if c.failed}
    assert set(bad) == {"log.agrees"}, bad
    assert needle in bad["log.agrees"]


@pytest.mark.anvil
def test_audit_log_marks_a_lying_weight_fraction(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``audit log`` prints the log's weight fraction; it is marked [chain] only when it is the
    on-chain weight's, else it shows the chain's and the command exits 1."""
    fed = _federation_writing(tmp_path, anvil_url, monkeypatch, _lie_weight_fraction)
    chain = [s.weight / WEIGHT_SCALE for s in fed.ledger.get_submissions(1)]
    out = CliRunner().invoke(
        cli,
        [
            "audit",
            "log",
            "1",
            "--rpc-url",
            anvil_url,
            "--contract",
            fed.ledger.address,
            "--store",
            f"local:{tmp_path / 'store'}",
        ],
    )
    assert out.exit_code == 1, out.output
    for w in chain:
        shown = f"weight {_lied_fraction(w):.2%}"
        assert f"{shown} [DIFFERS FROM CHAIN] (chain: {w!r})" in out.output
        assert f"{shown} [chain]" not in out.output
    assert "weight_fraction" in out.output  # named among the differences


@pytest.mark.anvil
def test_verify_rescores_against_the_validation_split_the_terms_committed(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log that names another validation split (here the test split's hash) fails
    terms.validation; the valuation replay checks the auditor's split against the terms' hash,
    not the log's (the line that meant to do so sat after a return): the committed split is
    re-scored and passes, the log's split is refused."""
    splits = load_bundled()
    other = splits.test.content_sha256()

    def edit(doc: dict[str, Any]) -> None:
        doc["validation"]["sha256"] = other

    fed = _federation_writing(tmp_path, anvil_url, monkeypatch, edit)
    audit = verify_round(fed.ledger, fed.store, 1, validation=splits.val)
    bad = {c.name: c.detail for c in audit.checks if c.failed}
    assert set(bad) == {"terms.validation"}, bad
    scores = next(c for c in audit.checks if c.name == "scores.recomputed")
    assert scores.passed and "largest score difference 0" in scores.detail
    audit = verify_round(fed.ledger, fed.store, 1, validation=splits.test)
    scores = next(c for c in audit.checks if c.name == "scores.recomputed")
    assert not scores.passed and "not the one the aggregator used" in scores.detail


@pytest.mark.anvil
def test_verify_fails_a_round_whose_log_names_an_invalid_model_spec(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log naming no valid spec fails the round (it used to fall back to the default spec
    silently); the updates are still decoded with the spec of the round's committed terms,
    which the log fails to repeat."""
    real = RoundLog.to_bytes

    def bad_spec(log: RoundLog) -> bytes:
        spec = {**log.settings.model_spec, "arch": "no-such-arch"}
        settings = dataclasses.replace(log.settings, model_spec=spec)
        return real(dataclasses.replace(log, settings=settings))

    monkeypatch.setattr(RoundLog, "to_bytes", bad_spec)
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    ledger, store = fed.ledger, fed.store
    audit = verify_round(ledger, store, 1, validation=load_bundled().val)
    bad = {c.name: c.detail for c in audit.checks if not c.passed}
    assert set(bad) == {"log.model_spec", "terms.model"}
    assert "model_spec is not a valid model spec" in bad["log.model_spec"]
    assert "no-such-arch" in bad["log.model_spec"]
    assert "differ from the terms" in bad["terms.model"]
    assert any(c.name == "scores.recomputed" and c.passed for c in audit.checks)


def test_fetch_says_why_a_blob_is_unusable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", max_bytes=64)
    small, big = b"small blob", b"x" * 100
    cid = store.put(small)
    sha = hashlib.sha256(small).hexdigest()
    assert _fetch(store, cid, sha).blob == small and _fetch(store, cid, sha).failure is None
    other = hashlib.sha256(b"other bytes").hexdigest()
    assert _fetch(store, cid, other).failure is FetchFailure.TAMPERED
    assert "sha256" in _fetch(store, cid, other).detail
    missing = LocalStore(tmp_path / "empty")
    assert _fetch(missing, cid, sha).failure is FetchFailure.MISSING
    big_cid = store.put(big)
    assert _fetch(store, big_cid, hashlib.sha256(big).hexdigest()).failure is FetchFailure.TOO_LARGE
    assert _fetch(store, "not-a-cid", sha).failure is FetchFailure.INVALID_CID


def test_audit_cli_verify_usage_error_exits_2() -> None:
    result = CliRunner().invoke(cli, ["audit", "verify", "--round", "1", "--all"])
    assert result.exit_code == 2


def test_audit_cli_says_a_ledger_with_no_rounds_has_nothing_to_verify(
    embedded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing verified is not a pass, nor a failed check: a freshly deployed ledger printed
    `FAIL: 0 checks over 0 round(s)`, exit 1 (and `audit report` printed FAIL and exited 0).
    Now both say there is nothing to verify, exit 2, in every format; no report is written."""
    import fedtrail.auditor.commands as commands

    ledger = embedded.deploy()
    monkeypatch.setattr(commands, "_open", lambda *_: ledger)
    monkeypatch.setattr(commands, "open_checked_store", lambda *_, **__: LocalStore(tmp_path / "s"))
    said = f"error: nothing to verify: the ledger at {ledger.address} has opened no round yet"
    out = tmp_path / "report"
    for args in (
        ["audit", "verify", "--all"],
        ["audit", "verify", "--format", "json"],
        ["audit", "report", "--out", str(out)],
        ["audit", "report", "--out", str(out), "--format", "json"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(said) and result.stdout == "", args
    assert not out.exists()


@pytest.mark.anvil
def test_audit_cli_verify_exits_1_naming_the_failed_check(
    local_fed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``audit verify`` exits 0 only when every check passes: with round 1's stored global
    model altered it exits 1, ``passed`` false, and the JSON names the failing checks (round
    1's global.hash, round 2's start_model.hash and the checks that need round 2's start
    model); the untouched copy exits 0."""
    import fedtrail.auditor.commands as commands

    ledger, shared, _ = local_fed
    shutil.copytree(shared.root, tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    monkeypatch.setattr(commands, "_open", lambda *_: ledger)
    monkeypatch.setattr(commands, "open_checked_store", lambda *_, **__: store)
    args = ["audit", "verify", "--all", "--format", "json"]
    honest = CliRunner().invoke(cli, args)
    assert honest.exit_code == 0, honest.output
    blob_path = store.root / "blobs" / ledger.get_round(1).global_cid
    blob_path.chmod(0o644)
    data = bytearray(blob_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob_path.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    failed = {(c["round"], c["check"]) for c in doc["checks"] if c["result"] == "FAIL"}
    # round 2 starts from it: its checks that need the start model are listed, not checked
    needs_start = {"global.recomputed", "reasons.oversized", "reasons.free_rider"}
    assert doc["passed"] is False and failed == {(1, "global.hash"), (2, "start_model.hash")} | {
        (2, name) for name in needs_start
    }


# ----------------------------------------------------------------- real Anvil + IPFS


@pytest.fixture(scope="module")
def anvil_fed(
    anvil_url: str, ipfs_api: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Ledger, IpfsStore, str]:
    """One honest two-round federation on Anvil + IPFS, read by the tests below."""
    store = IpfsStore(ipfs_api)
    tmp = tmp_path_factory.mktemp("anvil-fed")
    fed = _on_one_thread(tmp, store=store, **on_anvil(anvil_url))
    return fed.ledger, store, ipfs_api


@pytest.mark.anvil
@pytest.mark.ipfs
@pytest.mark.slow
def test_verify_cli_passes_on_anvil_and_ipfs(anvil_fed: Any, anvil_url: str) -> None:
    ledger, _, api = anvil_fed
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "verify",
            "--all",
            "--rpc-url",
            anvil_url,
            "--contract",
            ledger.address,
            "--store",
            f"ipfs:{api}",
            "--format",
            "json",
            "--validation",
            "bundled",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["passed"] is True and {c["round"] for c in doc["checks"]} == {1, 2}
    assert sum(c["check"] == "scores.recomputed" for c in doc["checks"]) == 2
    assert sum(c["check"] == "metrics.recomputed" for c in doc["checks"]) == 2
    for sub in ("rounds", "log 1", "site " + dev_account(5).address):
        r = CliRunner().invoke(
            cli,
            [
                "audit",
                *sub.split(),
                "--rpc-url",
                anvil_url,
                "--contract",
                ledger.address,
                *(["--store", f"ipfs:{api}"] if "log" in sub else []),
            ],
        )
        assert r.exit_code == 0, (sub, r.output)
    assert (
        "hospital-0"
        in CliRunner()
        .invoke(
            cli,
            [
                "audit",
                "log",
                "1",
                "--rpc-url",
                anvil_url,
                "--contract",
                ledger.address,
                "--store",
                f"ipfs:{api}",
            ],
        )
        .stdout
    )


@pytest.mark.anvil
@pytest.mark.ipfs
@pytest.mark.slow
def test_an_independent_reader_of_raw_logs_agrees_with_audit_round(
    anvil_fed: Any, anvil_url: str
) -> None:
    """Decode the round's events with eth_getLogs + the ABI alone (no fedtrail code)."""
    import requests

    ledger, _, _ = anvil_fed
    abi = json.loads(
        (
            Path(__file__).resolve().parents[2] / "contracts" / "build" / "FederationLedger.json"
        ).read_text()
    )["abi"]
    events = {e["name"]: e for e in abi if e["type"] == "event"}

    def topic(name: str) -> str:
        ev = events[name]
        sig = f"{name}({','.join(i['type'] for i in ev['inputs'])})"
        return "0x" + keccak(text=sig).hex()

    def get_logs(name: str, round_id: int) -> list[dict[str, Any]]:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getLogs",
            "params": [
                {
                    "address": ledger.address,
                    "fromBlock": "0x0",
                    "toBlock": "latest",
                    "topics": [topic(name), "0x" + round_id.to_bytes(32, "big").hex()],
                }
            ],
        }
        logs: list[dict[str, Any]] = requests.post(anvil_url, json=body, timeout=10).json()[
            "result"
        ]
        out = []
        for log in logs:
            ev = events[name]
            data_inputs = [i for i in ev["inputs"] if not i["indexed"]]
            values = abi_decode([i["type"] for i in data_inputs], bytes.fromhex(log["data"][2:]))
            rec = dict(zip([i["name"] for i in data_inputs], values, strict=True))
            indexed = [i for i in ev["inputs"] if i["indexed"]]
            for inp, t in zip(indexed, log["topics"][1:], strict=True):
                raw = bytes.fromhex(t[2:])
                rec[inp["name"]] = ("0x" + raw[-20:].hex()) if inp["type"] == "address" else raw
            out.append(rec)
        return out

    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "round",
            "1",
            "--rpc-url",
            anvil_url,
            "--contract",
            ledger.address,
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    submitted = {r["site"].lower(): r for r in get_logs("UpdateSubmitted", 1)}
    valued = {r["site"].lower(): r for r in get_logs("UpdateValued", 1)}
    assert len(submitted) == len(doc["updates"]) == 3
    for u in doc["updates"]:
        s, v = submitted[u["site"].lower()], valued[u["site"].lower()]
        assert (s["cid"], s["sha256"].hex(), s["numSamples"]) == (
            u["cid"],
            u["sha256"],
            u["num_samples"],
        )
        assert (v["score"], v["reason"], v["weight"]) == (u["score"], u["reason"], int(u["weight"]))
    (opened,) = get_logs("RoundOpened", 1)
    (final,) = get_logs("RoundFinalized", 1)
    assert (opened["modelCid"], opened["modelSha256"].hex()) == (
        doc["start_model"]["cid"],
        doc["start_model"]["sha256"],
    )
    assert (final["globalCid"], final["globalSha256"].hex(), final["logCid"]) == (
        doc["global_model"]["cid"],
        doc["global_model"]["sha256"],
        doc["log"]["cid"],
    )


@pytest.mark.anvil
def test_verify_fails_a_round_whose_terms_change_the_task_round_1_fixed(
    local_fed: Any,
) -> None:
    """Round 2 passes under round 1's task; the same round's terms with the classes relabelled
    (or another model) fail terms.task_fixed, naming both tasks."""
    ledger, store, service = local_fed
    audit = verify_round(ledger, store, 2)
    check = next(c for c in audit.checks if c.name == "terms.task_fixed")
    assert check.passed, check.detail
    terms = service.round_terms(2)
    for changed in (
        dataclasses.replace(terms, class_names=("class 1", "class 0")),
        dataclasses.replace(terms, spec_hash="ab" * 32),
    ):
        lied = RoundAudit(2)
        _check_task_fixed(lied, ledger, store, changed)
        (got,) = lied.checks
        assert got.name == "terms.task_fixed" and not got.passed
        assert "the task changed since round 1" in got.detail


@pytest.mark.anvil
def test_verify_fails_a_round_whose_terms_rechoose_the_payment_settings(
    local_fed: Any,
) -> None:
    """Attacks a17, a18, a20: round 2's terms with another validation split, standing off,
    another valuation method, or another aggregation rule or rule parameter fail
    terms.task_fixed, naming what changed; the honest round-2 terms (another valuation seed,
    windows and round number) pass."""
    ledger, store, service = local_fed
    terms = service.round_terms(2)
    honest = RoundAudit(2)
    _check_task_fixed(honest, ledger, store, terms)
    (ok,) = honest.checks
    assert ok.passed, ok.detail
    assert terms.valuation.get("seed") != service.round_terms(1).valuation.get("seed")
    changes = {
        "validation split": dataclasses.replace(terms, validation_sha256="cd" * 32),
        "standing": dataclasses.replace(terms, valuation={**terms.valuation, "standing": False}),
        "method": dataclasses.replace(
            terms,
            valuation={
                **terms.valuation,
                "method": "shapley" if terms.valuation["method"] == "loo" else "loo",
            },
        ),
        "seed minus round": dataclasses.replace(
            terms, valuation={**terms.valuation, "seed": 12345}
        ),
        "aggregation rule": dataclasses.replace(
            terms, aggregation_rule={**terms.aggregation_rule, "name": "krum"}
        ),
        "max_norm": dataclasses.replace(
            terms, aggregation_rule={**terms.aggregation_rule, "max_norm": 1e-12}
        ),
    }
    for what, changed in changes.items():
        lied = RoundAudit(2)
        _check_task_fixed(lied, ledger, store, changed)
        (got,) = lied.checks
        assert got.name == "terms.task_fixed" and not got.passed, what
        assert "the payment settings changed since round 1" in got.detail, got.detail
        assert what.split()[0] in got.detail, (what, got.detail)


@pytest.mark.anvil
def test_verify_binds_the_terms_spec_hash_to_their_model_spec(local_fed: Any) -> None:
    """Round-2 terms that change the model (input_norm none -> zscore: the same tensor layout,
    so every update still decodes) but repeat round 1's spec_hash, with a log repeating them:
    terms.model fails (the hash is not the spec's: nodes refuse such terms) and
    terms.task_fixed fails (the model spec changed since round 1). Both used to pass."""
    ledger, store, service = local_fed
    terms = service.round_terms(2)
    changed = {**terms.model_spec, "input_norm": "zscore"}
    assert ModelSpec(**changed).tensor_layout() == ModelSpec(**terms.model_spec).tensor_layout()
    lied = dataclasses.replace(terms, model_spec=changed)  # spec_hash kept: round 1's
    info = ledger.get_round(2)
    log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256))
    settings = dataclasses.replace(log.settings, model_spec=changed)
    audit = RoundAudit(2)
    _check_terms(audit, dataclasses.replace(log, settings=settings), lied)
    _check_task_fixed(audit, ledger, store, lied)
    bad = {c.name: c.detail for c in audit.checks if c.failed}
    assert set(bad) == {"terms.model", "terms.task_fixed"}, bad
    assert "is not the hash of their model_spec" in bad["terms.model"]
    assert "differ from the terms" not in bad["terms.model"]  # the log repeats the terms
    assert "model spec" in bad["terms.task_fixed"] and "zscore" in bad["terms.task_fixed"]
    honest = RoundAudit(2)
    _check_terms(honest, log, terms)
    _check_task_fixed(honest, ledger, store, terms)
    assert honest.passed, honest.checks


@pytest.mark.anvil
def test_verify_fails_an_aggregator_round_valued_with_a_validator_game(
    anvil_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """value_round plays a validator's game (linear_shapley) as a method, for peer rounds; an
    aggregator whose terms name it as its method (its settings refuse it: forced here) would be
    replayed bit for bit and pass, so verify refuses the method itself. Honest nodes refuse to
    take part under such terms; these sites run software that does not check them."""
    import fedtrail.node.daemon as daemon

    monkeypatch.setattr(daemon, "_unrunnable", lambda terms, accept=None: None)
    chain = on_anvil(anvil_url)
    w3, accounts = chain["w3"], chain["accounts"]
    settings = AggregatorSettings(valuation="loo")
    object.__setattr__(settings, "valuation", "linear_shapley")
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 10, seed=0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fed = build_federation(
            w3=w3,
            coordinator=accounts[0],
            sites=make_sites(
                accounts[1:],
                [splits.train.subset(parts[i]) for i in range(3)],
                names=[f"hospital-{i}" for i in range(3)],
                training=TrainConfig(epochs=1),
            ),
            store=LocalStore(tmp_path / "store"),
            folder=tmp_path,
            validation=splits.val,
            settings=settings,
        )
        fed.run_round()
    finally:
        torch.set_num_threads(before)
    audit = verify_round(fed.ledger, fed.store, 1, validation=splits.val)
    check = next(c for c in audit.checks if c.name == "scores.recomputed")
    assert not check.passed and "not one an aggregator plays" in check.detail
    assert not audit.passed


@pytest.mark.anvil
@pytest.mark.ipfs
@pytest.mark.slow
def test_verify_cli_metrics_tolerance_on_another_thread_count(
    anvil_fed: Any, anvil_url: str
) -> None:
    """The federation was valued on one torch thread; an auditor on two recomputes the metrics
    up to last-bit noise (a testnet run failed 1e-9 by 3.7e-9). The default tolerance passes
    it; ``--metrics-tolerance 0`` fails exactly when the audit saw a difference, and names it;
    a negative tolerance is a usage error."""
    ledger, _, api = anvil_fed
    args = ["audit", "verify", "--all", "--rpc-url", anvil_url, "--contract", ledger.address]
    args += ["--store", f"ipfs:{api}", "--validation", "pneumonia", "--format", "json"]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loose = CliRunner().invoke(cli, args)
        strict = CliRunner().invoke(cli, [*args, "--metrics-tolerance", "0"])
    finally:
        torch.set_num_threads(before)
    assert loose.exit_code == 0, loose.output
    details = [
        c["detail"]
        for c in json.loads(loose.stdout)["checks"]
        if c["check"] == "metrics.recomputed"
    ]
    largest = [float(re.search(r"largest difference (\S+) ", d).group(1)) for d in details]  # type: ignore[union-attr]
    assert len(largest) == 2 and all(x <= 1e-6 for x in largest), details
    # at tolerance 0 exactly the rounds whose metrics moved fail, and only that check (whether
    # any moved depends on the machine; test_verify_cli_metrics_tolerance_is_the_bound makes
    # one move on every machine)
    failed = [c for c in json.loads(strict.stdout)["checks"] if c["result"] == "FAIL"]
    moved = {r for r, x in zip((1, 2), largest, strict=True) if x > 0}
    assert {(c["round"], c["check"]) for c in failed} == {(r, "metrics.recomputed") for r in moved}
    assert all("tolerance 0" in c["detail"] for c in failed), failed
    assert strict.exit_code == (1 if moved else 0), strict.output
    assert CliRunner().invoke(cli, [*args, "--metrics-tolerance", "-1"]).exit_code == 2


@pytest.mark.anvil
def test_verify_cli_metrics_tolerance_is_the_bound(
    local_fed: Any, anvil_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log whose loss after the round is 5e-7 off the recomputed one (last-bit noise of
    another thread count is ~1e-8; stored and pinned on chain as the aggregator's): the
    default ``--metrics-tolerance`` (1e-6) passes it, 1e-7 fails ``metrics.recomputed`` alone,
    naming the field and the tolerance. Unconditional, unlike the thread-count test above."""
    ledger, shared, _ = local_fed
    shutil.copytree(shared.root, tmp_path / "store")  # the shared federation stays honest
    store = LocalStore(tmp_path / "store")
    info = ledger.get_round(1)
    log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256))
    after = log.metrics.after
    assert after.loss is not None
    drifted = dataclasses.replace(after, loss=after.loss + 5e-7)
    blob = dataclasses.replace(log, metrics=MetricsPair(log.metrics.before, drifted)).to_bytes()
    forged = dataclasses.replace(
        info, log_cid=store.put(blob), log_sha256=hashlib.sha256(blob).hexdigest()
    )
    real = Ledger.get_round
    monkeypatch.setattr(Ledger, "get_round", lambda self, r: forged if r == 1 else real(self, r))
    args = ["audit", "verify", "--round", "1", "--rpc-url", anvil_url]
    args += ["--contract", ledger.address, "--store", f"local:{store.root}"]
    args += ["--validation", "bundled", "--format", "json"]
    loose = CliRunner().invoke(cli, args)
    assert loose.exit_code == 0, loose.output
    (check,) = [c for c in json.loads(loose.stdout)["checks"] if c["check"] == "metrics.recomputed"]
    assert check["result"] == "PASS" and "tolerance 1e-06" in check["detail"], check
    gap = float(re.search(r"largest difference (\S+) ", check["detail"]).group(1))  # type: ignore[union-attr]
    assert 4e-7 < gap < 6e-7, check
    strict = CliRunner().invoke(cli, [*args, "--metrics-tolerance", "1e-7"])
    assert strict.exit_code == 1, strict.output
    failed = [c for c in json.loads(strict.stdout)["checks"] if c["result"] == "FAIL"]
    assert [c["check"] for c in failed] == ["metrics.recomputed"], failed
    detail = failed[0]["detail"]
    assert detail.startswith("after.loss ") and detail.endswith(" (tolerance 1e-07)"), detail
    off = float(re.search(r"\(off by (\S+)\)", detail).group(1))  # type: ignore[union-attr]
    assert off == pytest.approx(gap, rel=1e-2), detail
