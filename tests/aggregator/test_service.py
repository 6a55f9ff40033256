"""The aggregator service: a full commit-then-reveal round with bad updates on the real Anvil
node, the round's terms on the store and in the log, and a crash between valuation and
finalize on Anvil + IPFS."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from eth_account.signers.local import LocalAccount

from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import advance_time, connect, dev_account, next_block_timestamp
from fedtrail.errors import ConfigError
from fedtrail.ledger import Ledger, Submission, commitment
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.metrics import Metrics
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.roundlog import BlobRef, HeatmapRef, ModelExplanations, RoundLog
from fedtrail.protocol.roundlog import to_bytes as roundlog_to_bytes
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import Federation, SiteSetup, build_federation, make_sites
from fedtrail.storage.store import ContentStore, IpfsStore, LocalStore
from fedtrail.valuation.base import Candidate
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEDTRAIL = Path(sys.executable).parent / "fedtrail"
GOLDEN = Path(__file__).parents[1] / "fedtrail" / "protocol" / "data" / "round-log-built.json"


def _federation(
    store: ContentStore,
    accounts: list[LocalAccount],
    faults: list[SiteFault],
    tmp: Path,
    *,
    by_hand: tuple[tuple[LocalAccount, str], ...] = (),
    **chain: Any,
) -> Federation:
    """Sites ``site-<i>`` training with their faults, then the sites in ``by_hand`` (no node);
    the task names the bundled data's classes, as `aggregator run` and `node init` do."""
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, 8, seed=1)
    trains = [splits.train.subset(parts[i]) for i in range(len(accounts))]
    sites = make_sites(
        accounts,
        trains,
        training=TrainConfig(epochs=2),
        faults=faults,
        data=DataConfig(class_names=source.class_names),
    )
    sites += [SiteSetup(account=acct, name=name, max_samples=100) for acct, name in by_hand]
    settings = chain.pop("settings", None) or AggregatorSettings()
    chain["settings"] = dataclasses.replace(settings, class_names=source.class_names)
    return build_federation(sites=sites, store=store, folder=tmp, validation=splits.val, **chain)


def close_commits(ledger: Ledger, round_id: int) -> None:
    """Moves the chain's clock past the round's commit deadline: reveals open."""
    deadline = ledger.get_round(round_id).commit_deadline
    now = next_block_timestamp(ledger.w3)
    if now <= deadline:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)


def commit(ledger: Ledger, site: LocalAccount, r: int, sha: str, n: int) -> None:
    ledger.commit_update(site, r, commitment(site.address, r, sha, n))


@pytest.mark.anvil
def test_full_round_scores_bad_updates_zero_with_the_right_reason(
    anvil: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    honest = [SiteFault()] * 3
    tamperer, garbler = anvil.sites[4], anvil.sites[5]
    fed = _federation(
        store,
        anvil.sites[:4],
        [*honest, SiteFault(kind="sign_flip")],
        tmp_path,
        by_hand=((tamperer, "tamperer"), (garbler, "garbler")),
        w3=anvil.w3,
        coordinator=anvil.coordinator,
        aggregator=anvil.aggregator,
        settings=AggregatorSettings(seed=3, standing=False, metric="loss"),
    )
    ledger, service = fed.ledger, fed.service
    r = service.open_next()
    for n in fed.nodes:
        n.participate(r)  # commit
    # a site whose stored bytes do not match the hash it recorded (tampered after the fact)
    good = store.put(b"the bytes that were promised")
    fake_sha = hashlib.sha256(b"other bytes").hexdigest()
    commit(ledger, tamperer, r, fake_sha, 100)
    # a site that submits garbage that is not a safetensors update at all
    junk = os.urandom(5000)
    junk_sha = hashlib.sha256(junk).hexdigest()
    commit(ledger, garbler, r, junk_sha, 100)
    assert not service.ready_to_value(r)
    close_commits(ledger, r)
    for n in fed.nodes:
        n.participate(r)  # store, reveal
    ledger.reveal_update(tamperer, r, good, fake_sha, 100)
    ledger.reveal_update(garbler, r, store.put(junk), junk_sha, 100)
    assert service.ready_to_value(r)  # every site active at open revealed

    assert service.step() is None  # valued
    assert ledger.get_round(r).phase == Phase.VALUED
    registry_reads: list[str] = []
    for name in ("get_site", "get_sites"):
        read = getattr(ledger, name)
        monkeypatch.setattr(
            ledger, name, lambda *a, read=read, name=name: registry_reads.append(name) or read(*a)
        )
    stored: list[int] = []  # blobs per store request (LocalStore's put_many is puts)
    put, many = store.put, store.put_many
    inside: set[int] = set()  # the threads inside a put_many (the model's runs in its own)

    def put_many(blobs: list[bytes]) -> list[str]:
        stored.append(len(blobs))
        inside.add(threading.get_ident())
        try:
            return many(blobs)
        finally:
            inside.discard(threading.get_ident())

    def put_one(blob: bytes) -> str:
        if threading.get_ident() not in inside:
            stored.append(1)
        return put(blob)

    monkeypatch.setattr(store, "put", put_one)
    monkeypatch.setattr(store, "put_many", put_many)
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    assert registry_reads == ["get_sites"]  # the log's six names in one read, not one each
    # the global model with the next round's terms in one request (made while the heatmaps
    # are), the heatmaps with the log in another
    assert sorted(stored) == [1 + 1, 8 + 1]
    subs = {s.site: s for s in ledger.get_submissions(r)}
    assert (subs[tamperer.address].score, subs[tamperer.address].reason) == (0, Reason.TAMPERED)
    assert (subs[garbler.address].score, subs[garbler.address].reason) == (0, Reason.MALFORMED)
    flipper = subs[anvil.sites[3].address]
    assert (flipper.score, flipper.reason) == (0, Reason.OUTLIER_DIRECTION)
    for acct in anvil.sites[:3]:
        assert subs[acct.address].score > 0 and subs[acct.address].reason == Reason.OK
    assert sum(s.weight for s in subs.values()) == 10**18

    info = ledger.get_round(r)
    blob = store.get(info.log_cid, info.log_sha256)
    record = RoundLog.from_bytes(blob)  # schema-checked
    assert record.to_bytes() == blob
    # the round ran under the terms committed at open, and the log points at them
    terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
    assert record.settings.terms == BlobRef(info.terms_cid, info.terms_sha256)
    assert terms.round == r and terms.valuation["seed"] == 3 + r
    assert dict(record.settings.aggregation_rule) == dict(terms.aggregation_rule)
    assert record.validation.sha256 == terms.validation_sha256
    tampered = record.site(tamperer.address)
    assert tampered is not None and tampered.reason_label == "TAMPERED"
    assert "sha256" in tampered.explanation
    assert record.metrics.after.loss is not None and record.metrics.before.loss is not None
    assert record.metrics.after.loss < record.metrics.before.loss
    assert record.explanations is not None
    heatmaps = record.explanations["images"]
    assert len(heatmaps) == 8 and record.explanations["probe_sha256"]
    assert store.get(heatmaps[0]["cid"], heatmaps[0]["sha256"])[:4] == b"\x89PNG"
    audits = verify_all(ledger, store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if not c.passed]
    # the next step opens round 2 from the finalized model
    service.step()
    assert ledger.get_round(2).start_sha256 == info.global_sha256


@pytest.mark.anvil
@pytest.mark.ipfs
@pytest.mark.slow
def test_crash_between_valuation_and_finalize_resumes_once(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    store = IpfsStore(ipfs_api)
    fed = _federation(
        store,
        [dev_account(i) for i in (2, 3, 4)],
        [SiteFault()] * 3,
        tmp_path,
        w3=connect(anvil_url),
        coordinator=dev_account(0),
    )
    ledger = fed.ledger
    r = fed.service.open_next()
    for n in fed.nodes:
        n.participate(r)
    close_commits(ledger, r)
    for n in fed.nodes:
        n.participate(r)
    args = [
        "aggregator",
        "run",
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--dev-account",
        "0",
        "--store",
        f"ipfs:{ipfs_api}",
        "--rounds",
        "1",
        "--poll-interval",
        "0.2",
        "--threads",
        "1",
        "--folder",
        str(fed.service.folder),
    ]
    launcher = [sys.executable, "-m", "fedtrail.simulation.crash", "valued", "--"]
    crashed = subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=300)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert ledger.get_round(r).phase == Phase.VALUED
    done = subprocess.run([str(FEDTRAIL), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ledger.get_round(r).phase == Phase.FINALIZED
    assert len(ledger.events("RoundValued", argument_filters={"round": r})) == 1
    assert len(ledger.events("RoundFinalized", argument_filters={"round": r})) == 1
    assert ledger.current_round() == r  # --rounds 1: no new round opened after the last
    assert all(a.passed for a in verify_all(ledger, store))


@pytest.mark.anvil
def test_round_falls_back_to_data_free_scores_when_no_update_lowers_the_loss(
    anvil: ChainEnv, tmp_path: Path
) -> None:
    """Updates that all raise the validation loss (here: a trained delta negated, uphill
    whatever start model the deployment derives) leave the game no gain to share; the round must
    still close (scored by the data-free screening), not stall until it is cancelled."""
    import hashlib as _h

    from fedtrail.ml.training import train_local
    from fedtrail.storage.codec import decode_model, encode_update

    ledger = anvil.deploy()
    store = LocalStore(tmp_path / "store")
    splits = load_bundled()
    for i, acct in enumerate(anvil.sites[:3]):
        ledger.register_site(anvil.coordinator, acct.address, f"site-{i}", 100)
    service = AggregatorService(
        ledger=ledger,
        store=store,
        account=anvil.aggregator,
        validation=splits.val,
        settings=AggregatorSettings(metric="loss", standing=False, explain_method=None),
        folder=tmp_path / "agg",
    )
    r = service.open_next()
    info = ledger.get_round(r)
    spec = ModelSpec()
    start, _ = decode_model(store.get(info.start_cid, info.start_sha256), spec=spec)
    idx = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[:400]
    trained = train_local(
        start, splits.train.subset(idx.numpy()), spec=spec, config=TrainConfig(epochs=1, seed=0)
    ).delta
    # the start model depends on the contract's address (the deployer's nonce in this Anvil),
    # so an overshooting step is not certain; the descent step reversed is uphill
    base = {k: -v for k, v in trained.items()}
    gen = torch.Generator().manual_seed(1)
    blobs = []
    for acct in anvil.sites[:3]:
        delta = {
            # noise shaped like the update (each entry its own share): distinct sites, not the
            # same update plus white noise, which the duplicate rule's white_noise_z marks
            k: v * (1 + 0.01 * torch.randn(v.shape, generator=gen))
            for k, v in base.items()
        }
        blob = encode_update(delta, spec=spec, round=r).blob
        blobs.append(blob)
        commit(ledger, acct, r, _h.sha256(blob).hexdigest(), 100)
    close_commits(ledger, r)
    for acct, blob in zip(anvil.sites[:3], blobs, strict=True):
        ledger.reveal_update(acct, r, store.put(blob), _h.sha256(blob).hexdigest(), 100)
    service.step()
    assert ledger.get_round(r).phase == Phase.VALUED
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    assert all(v["score"] > 0 for v in outcome.valuations)
    assert all("data-free fallback" in v["explanation"] for v in outcome.valuations)
    assert outcome.metrics["after"]["loss"] > outcome.metrics["before"]["loss"]


def test_the_log_builder_writes_the_bytes_it_always_wrote() -> None:
    """The service's log for fixed inputs equals, byte for byte, what the aggregator wrote
    before the log became a typed record (golden file made by that code, see its README)."""
    a, b, c = "0x" + "1a" * 20, "0x" + "2B" * 20, "0x" + "3c" * 20
    names = {a: "alpha", b: "", c: "gamma <b>"}

    class Validation:
        def content_sha256(self) -> str:
            return "cd" * 32

        def __len__(self) -> int:
            return 270

    service = SimpleNamespace(
        settings=AggregatorSettings(
            rule=AggregationRule(name="trimmed_mean", trim_ratio=0.1),
            valuation="mc_shapley",
            metric="auc",
            seed=7,
            explanation_check=True,
        ),
        spec=ModelSpec(width=8),
        validation=Validation(),
        ledger=SimpleNamespace(address="0x" + "Ee" * 20, chain_id=1337),
        _site_name=names.__getitem__,
    )
    settings = service.settings
    # a SmallCNN's terms carry no ``statistics``: the bytes written before the setting existed
    terms = RoundTerms(
        round=4,
        aggregation_rule=settings.rule.to_terms(statistics=False),
        valuation={"method": "mc_shapley", "metric": "auc", "seed": 11, "explanation_check": True},
        model_spec=service.spec.to_json(),
        spec_hash=service.spec.spec_hash(),
        seed=settings.seed,
        validation_sha256="cd" * 32,
        validation_images=270,
        commit_seconds=600,
        reveal_seconds=120,
    )
    ref: list[BlobRef | None] = [None]  # logs before terms references: the golden bytes
    service.terms = lambda round_id: (terms, ref[0])
    c1, c2 = "11" * 32, "22" * 32
    # CID-shaped: a text of no CID's shape is logged as its sha256 stand-in (a126)
    cidA, cidB, cidC = ("Qm" + x * 44 for x in "ABC")
    subs = [
        Submission(4, a, cidA, "aa" * 32, 120, 700_000, 0, 600_000_000_000_000_001, c1, 1, True),
        Submission(4, b, cidB, "bb" * 32, 80, 0, int(Reason.TAMPERED), 0, c2, 3, True),
        Submission(4, c, cidC, "cc" * 32, 1, 350_000, 0, 399_999_999_999_999_999, c1, 2, True),
    ]
    cands = [
        Candidate(site=a, num_samples=120, delta={}),
        Candidate(site=b, num_samples=80, delta=None, status=Reason.TAMPERED, detail="x"),
        Candidate(site=c, num_samples=1, delta={}),
    ]
    saved: dict[str, dict[str, Any]] = {
        a: {
            "components": {
                "gain": 0.0123,
                "cosine": 0.5,
                "note": "fine",
                "flag": True,
                "none": None,
                "inf": float("inf"),
                "list": [1, 2],
                "nested": {"a": 1},
            },
            "explanation": "marginal gain 0.0123",
        },
        b: {"components": {}, "explanation": ""},
    }
    explanations = ModelExplanations(
        method="integrated_gradients",
        probe_sha256="12" * 32,
        probe_images=2,
        images=(
            HeatmapRef("QmH1", "34" * 32, "round 4: predicted normal (51%), truth normal"),
            HeatmapRef("QmH2", "56" * 32, "round 4: predicted pneumonia (90%), truth pneumonia"),
        ),
        summary="2 of 2 probe images classified correctly",
    )
    record = AggregatorService._log(
        service,  # type: ignore[arg-type]
        4,
        "QmStart",
        "de" * 32,
        list(zip(subs, cands, strict=True)),
        saved,
        "ef" * 32,
        Metrics(loss=0.69, accuracy=0.5, auc=float("nan"), f1=0.0, n=270),
        Metrics(loss=0.5, accuracy=0.75, auc=0.8125, f1=2 / 3, n=270),
        explanations=explanations,
    )
    golden = GOLDEN.read_bytes()
    assert record.to_bytes() == golden
    # with the terms reference, the only change is settings.terms
    ref[0] = BlobRef("QmTerms", "77" * 32)
    with_ref = AggregatorService._log(
        service,  # type: ignore[arg-type]
        4,
        "QmStart",
        "de" * 32,
        list(zip(subs, cands, strict=True)),
        saved,
        "ef" * 32,
        Metrics(loss=0.69, accuracy=0.5, auc=float("nan"), f1=0.0, n=270),
        Metrics(loss=0.5, accuracy=0.75, auc=0.8125, f1=2 / 3, n=270),
        explanations=explanations,
    ).to_bytes()
    doc = json.loads(with_ref)
    assert doc["settings"].pop("terms") == {"cid": "QmTerms", "sha256": "77" * 32}
    assert roundlog_to_bytes(doc) == golden


def test_until_round_counts_on_chain_so_a_restart_does_not_overshoot(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """``--until-round`` stops once the ledger's round N is closed; a second (restarted) run
    with the same target opens nothing, where ``--rounds 1`` would open round N+1."""
    fed = _federation(
        LocalStore(tmp_path / "store"),
        [],
        [],
        tmp_path,
        by_hand=((embedded.sites[0], "quiet"),),
        w3=embedded.w3,
        coordinator=embedded.coordinator,
        aggregator=embedded.aggregator,
    )
    ledger, service = fed.ledger, fed.service
    r = service.open_next()
    info = ledger.get_round(r)
    advance_time(
        ledger.w3, info.reveal_deadline - next_block_timestamp(ledger.w3) + 1 + CLOCK_SLACK
    )
    outcomes = service.run(until_round=r)
    assert [(o.round, o.phase) for o in outcomes] == [(r, Phase.CANCELLED)]
    assert service.run(until_round=r) == []  # the restart: nothing new is opened
    assert ledger.current_round() == r
    with pytest.raises(ConfigError):
        service.run(rounds=1, until_round=r)
    with pytest.raises(ConfigError):
        service.run()


@pytest.mark.anvil
def test_the_logs_heatmaps_decide_at_the_calibrated_threshold(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe heatmaps' predictions use the bias the round's metrics record, as the nodes and
    `fedtrail explain` do (not the plain 0.5 decision)."""
    import fedtrail.aggregator.service as service_mod
    from tests.auditor.test_verify import federation, on_anvil

    seen: list[object] = []
    real = service_mod.explain_methods

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("bias"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service_mod, "explain_methods", spy)
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    info = fed.ledger.get_round(1)
    record = RoundLog.from_bytes(fed.store.get(info.log_cid, info.log_sha256))
    assert record.metrics.after.bias is not None
    assert seen == [tuple(record.metrics.after.bias)]
    # and the log states how faithful the method's heatmaps are on the probe set
    assert record.explanations is not None
    scores = record.explanations["faithfulness"]
    assert scores["images"] == record.explanations["probe_images"]
    assert 0.0 <= scores["deletion_auc"] <= 1.0 and 0.0 <= scores["random_deletion_auc"] <= 1.0


def test_run_retries_a_transient_ledger_error_and_stops_on_a_missing_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, point 8: an RPC endpoint briefly unreachable (a plain LedgerError from a view,
    or ChainUnreachable) is logged and retried, as the node does; a contract that is gone is
    not retried forever."""
    from fedtrail.aggregator.service import RoundOutcome
    from fedtrail.errors import ChainUnreachable, ContractNotFound, LedgerError
    from tests.auditor.test_verify import federation

    fed = federation(tmp_path, rounds=0)
    service = fed.service
    service.settings = dataclasses.replace(service.settings, poll_interval=0.01)
    failures: list[Exception] = [LedgerError("rpc read failed"), ChainUnreachable("down")]
    done = RoundOutcome(round=1, phase=Phase.FINALIZED)

    def flaky(**_: object) -> RoundOutcome | None:
        if failures:
            raise failures.pop(0)
        return done

    monkeypatch.setattr(service, "step", flaky)
    assert service.run(rounds=1) == [done]
    assert failures == []

    def gone(**_: object) -> RoundOutcome | None:
        raise ContractNotFound("no code at the ledger's address")

    monkeypatch.setattr(service, "step", gone)
    with pytest.raises(ContractNotFound):
        service.run(rounds=1)


def test_run_retries_a_chain_that_stops_answering_between_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run loop's own reads of the chain (its poll before each step, its look at the
    current round after a failed step) were outside the retry: Anvil restarted under a running
    aggregator ended it with `error: cannot read the ledger at ... (a batch of 6 requests):
    ('Connection aborted.', ConnectionResetError(104, ...))`, exit 1, mid-round. Both are
    retried now, as the step's own reads are."""
    from fedtrail.aggregator.service import RoundOutcome
    from fedtrail.errors import ChainUnreachable
    from tests.auditor.test_verify import federation

    fed = federation(tmp_path, rounds=0)
    service = fed.service
    service.settings = dataclasses.replace(service.settings, poll_interval=0.01)
    down = "cannot read the ledger (a batch of 6 requests): Connection reset by peer"
    polls = [ChainUnreachable(down), ChainUnreachable(down)]
    looks = [ChainUnreachable(down)]
    steps = [ChainUnreachable(down)]
    real_poll, real_current = service.poll, service.ledger.current_round
    done = RoundOutcome(round=1, phase=Phase.FINALIZED)

    def flaky_poll() -> Any:
        if polls:
            raise polls.pop(0)
        return real_poll()

    def flaky_current() -> int:
        if looks:
            raise looks.pop(0)
        return real_current()

    def step(**_: object) -> RoundOutcome | None:
        if steps:
            raise steps.pop(0)
        return done

    real_preflight = service.preflight

    def preflight() -> None:  # the chain answers at start-up, and goes away after it
        real_preflight()
        monkeypatch.setattr(service.ledger, "current_round", flaky_current)

    monkeypatch.setattr(service, "preflight", preflight)
    monkeypatch.setattr(service, "poll", flaky_poll)
    monkeypatch.setattr(service, "step", step)
    assert service.run(rounds=1) == [done]
    assert (polls, looks, steps) == ([], [], [])


def test_an_aggregate_that_fails_is_reported_once_naming_the_stuck_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rule refuses a count of paid updates since session 54 (multi-Krum refused fewer than
    2 * krum_f + 3 before, and the round could never be finalized); should aggregate fail for
    another reason, the aggregator logs and raises one error naming the round, the rule and why
    it stays stuck (an aggregator round cannot be cancelled once Valued), and does not retry."""
    import fedtrail.aggregator.service as service_mod
    from fedtrail.ml.aggregation import AggregationError
    from tests.auditor.test_verify import federation

    fed = federation(tmp_path, rounds=0)
    calls: list[int] = []

    def broken(*_: object, **__: object) -> None:
        calls.append(1)
        raise AggregationError("update 1 contains NaN or infinite values")

    monkeypatch.setattr(service_mod, "aggregate", broken)
    with pytest.raises(AggregationError) as caught:
        fed.run_round()
    message = str(caught.value)
    assert message.startswith("round 1: the paid updates cannot be aggregated under the terms'")
    assert "NaN or infinite" in message and "only while it is Open" in message
    assert calls == [1]
    assert fed.ledger.get_round(1).phase == Phase.VALUED


@pytest.mark.parametrize("fails", ["model put", "heatmaps and log put", "log built"])
def test_a_finalize_that_fails_sends_nothing_and_the_next_step_finalizes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """The finalize stores the global model (and the next terms) in a thread while it builds
    the metrics, heatmaps and log (issue 18): a failure of that put, of the second put or of the
    main thread while the first runs sends no transaction and leaves the round Valued; the next
    step rebuilds the same blobs (content-addressed: a repeated put is harmless) and finalizes
    once, and the audit passes."""
    from fedtrail.errors import StoreError
    from tests.auditor.test_verify import federation

    fed = federation(tmp_path, rounds=0)
    service = fed.service
    calls: list[tuple[str, int]] = []  # the finalize's store requests: (thread, blobs)
    put_many, make_log = service.store.put_many, service._log

    def failing_put(blobs: list[bytes]) -> list[str]:
        thread = threading.current_thread().name
        if thread.startswith("finalize-put") or calls:  # the finalize's two requests
            calls.append((thread.split("_")[0], len(blobs)))
            if (fails == "model put" and len(calls) == 1) or (
                fails == "heatmaps and log put" and len(calls) == 2
            ):
                raise StoreError("the IPFS daemon went away")
        return put_many(blobs)

    def failing_log(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the log could not be built")

    monkeypatch.setattr(service.store, "put_many", failing_put)
    if fails == "log built":
        monkeypatch.setattr(service, "_log", failing_log)
    with pytest.raises((StoreError, RuntimeError)):
        fed.run_round()
    assert fed.ledger.get_round(1).phase == Phase.VALUED
    assert fed.ledger.events("RoundFinalized", argument_filters={"round": 1}) == []
    # the model and the next round's terms went to the store first, in their own thread
    assert calls[0] == ("finalize-put", 2)
    monkeypatch.setattr(service.store, "put_many", put_many)
    monkeypatch.setattr(service, "_log", make_log)
    while fed.ledger.get_round(1).phase != Phase.FINALIZED:
        assert service.step() is not None or fed.ledger.get_round(1).phase == Phase.FINALIZED
    assert len(fed.ledger.events("RoundFinalized", argument_filters={"round": 1})) == 1
    assert all(a.passed for a in verify_all(fed.ledger, fed.service.store))
