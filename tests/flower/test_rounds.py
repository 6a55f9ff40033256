"""The ServerApp's round driver (fedtrail.flower.rounds) on a real chain (the embedded one) with
real nodes. A site that signs a lying reply (another CID, more samples) gets weight 0 with reason
CONTRADICTED, its signed reply is the evidence in the round's log and ``audit verify`` passes;
the same lie unsigned (or altered on the way) is unattributable: reported, ignored, and the site
keeps the chain's weight. A reply for a site with nothing on chain gets no weight."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import fedtrail.aggregator.service as service_module
from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import advance_time, block_timestamp, next_block_timestamp
from fedtrail.errors import ConfigError
from fedtrail.flower.replies import SiteReply
from fedtrail.flower.rounds import LedgerRounds, Received, RoundReport
from fedtrail.flower.site import answer, sign_as
from fedtrail.ledger import Ledger
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.evidence import ChainUpdate, Evidence, SignedReply, sign_reply
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.protocol.weights import onchain_weights
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv
from tests.flower.test_replies import CID_A, _round_with_reveal

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _federation(env: ChainEnv, tmp: Path) -> Federation:
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, 8, seed=1)
    sites = make_sites(
        env.sites[:3],
        [splits.train.subset(parts[i]) for i in range(3)],
        training=TrainConfig(epochs=1),
        data=DataConfig(class_names=source.class_names),
    )
    settings = AggregatorSettings(
        valuation="loo", class_names=source.class_names, explain_method=None
    )
    return build_federation(
        sites=sites,
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=splits.val,
        w3=env.w3,
        coordinator=env.coordinator,
        aggregator=env.aggregator,
        settings=settings,
    )


def _close_commits(ledger: Ledger, round_id: int) -> None:
    """Moves the chain's clock until the pending block's time (what a node reads) is past the
    commit deadline plus the nodes' CLOCK_SLACK, so a committed node reveals at once.

    Measured from the latest block, which ``advance_time`` moves on the embedded chain: that
    chain stamps its pending block with the wall clock of the last transaction, so the
    latest block lags it by however long passed between the last two transactions (a node
    that trained 30 s under load: 30 s). Measured from the pending block, as before session
    58, the move fell short by that gap, the nodes saw the commit window still open and
    answered ``committed`` (test_site's a69 test failed 3 times under 2 workers at load 8-20)."""
    due = ledger.get_round(round_id).commit_deadline + CLOCK_SLACK
    while next_block_timestamp(ledger.w3) <= due:
        advance_time(ledger.w3, due - block_timestamp(ledger.w3) + 1)


def test_closing_the_commits_passes_the_nodes_slack_after_a_slow_last_commit(
    embedded: ChainEnv,
) -> None:
    """The embedded chain's latest block lags its pending one by the time between the last
    two transactions (here 3 s, as after a node that trained slowly): the close must still
    leave the pending block past the commit deadline plus CLOCK_SLACK."""
    import time

    from fedtrail.protocol.codes import MAX_SITE_SAMPLES

    ledger = embedded.deploy(min_round_window=1)
    coord, agg = embedded.coordinator, embedded.aggregator
    ledger.register_site(coord, embedded.sites[0].address, "s", MAX_SITE_SAMPLES)
    r, _ = ledger.open_round(
        agg, "QmM", "11" * 32, terms_cid="QmT", terms_sha256="22" * 32,
        commit_seconds=600, reveal_seconds=120,
    )  # fmt: skip
    tester = embedded.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    while time.time() < next_block_timestamp(embedded.w3) + 4:  # the wall clock passes it
        time.sleep(0.2)
    tester.mine_blocks(1)
    assert next_block_timestamp(embedded.w3) - block_timestamp(embedded.w3) >= 2
    _close_commits(ledger, r)
    info = ledger.get_round(r)
    assert info.commit_deadline + CLOCK_SLACK < next_block_timestamp(embedded.w3)
    assert next_block_timestamp(embedded.w3) < info.reveal_deadline  # reveals still open


@pytest.mark.parametrize("signed", [True, False], ids=["signed-lie", "unsigned-lie"])
def test_a_lying_reply_gains_nothing(embedded: ChainEnv, tmp_path: Path, signed: bool) -> None:
    fed = _federation(embedded, tmp_path)
    liar = fed.nodes[2]
    sent: list[dict[str, Any]] = []

    def exchange(kind: str, request: Mapping[str, Any], timeout: float) -> list[Received]:
        """The SuperNodes, in process: each node commits (answer returns at once: wait 0),
        the chain's clock passes the commit deadline, each node reveals and replies."""
        assert kind == "train" and timeout > 0
        r = int(request["round"])
        for node in fed.nodes:
            assert answer(node, r, wait_seconds=0).phase == "committed"
        _close_commits(fed.ledger, r)
        out = []
        for i, node in enumerate(fed.nodes):
            doc = answer(node, r, wait_seconds=0).to_config()
            assert doc["phase"] == "revealed"
            if node is liar:
                # another site's CID and ten times its samples: a bid for more weight
                doc["cid"] = fed.ledger.get_submission(r, fed.nodes[0].address).cid  # type: ignore[union-attr]
                doc["num_samples"] = doc["num_samples"] * 10
                if signed:  # the site's own lie, under its own key
                    lie = dict(doc, signature="")
                    doc = sign_as(node, SiteReply.from_config(lie)).to_config()
            sent.append(doc)
            out.append(Received(node_id=100 + i, reply=doc))
        # a SuperNode answering for an account that is no site and submitted nothing
        ghost = dict(sent[0], site=embedded.outsider.address)
        out.append(Received(node_id=999, reply=ghost))
        out.append(Received(node_id=555, reply=None, error="no reply within 30 s"))
        return out

    rounds = LedgerRounds(service=fed.service, exchange=exchange, folder=tmp_path / "flower")
    report = rounds.run_round()

    r = report.round
    assert r == 1 and report.phase == Phase.FINALIZED.label
    subs = fed.ledger.get_submissions(r)
    by_site = {s.site: s for s in subs}
    claimed = [s.num_samples * (10 if s.site == liar.address else 1) for s in subs]
    checks = {d["node_id"]: d for d in report.replies}
    assert checks[100]["truthful"] and checks[101]["truthful"] and checks[100]["attributable"]
    assert checks[102]["mismatches"] == ["cid", "num_samples"]
    assert checks[999]["mismatches"] == ["phase"] and checks[999]["chain_weight"] == 0
    assert not checks[999]["attributable"]  # site 0's signature, another site named
    assert embedded.outsider.address not in report.weights
    liar_sub = by_site[liar.address]
    assert liar_sub.num_samples == len(liar.train)
    assert checks[102]["chain_num_samples"] == liar_sub.num_samples
    expected = onchain_weights([s.num_samples for s in subs], [s.score for s in subs])
    assert [s.weight for s in subs] == expected
    assert report.weights[liar.address] == liar_sub.weight
    info = fed.ledger.get_round(r)
    log = RoundLog.from_bytes(fed.store.get(info.log_cid, info.log_sha256))
    ignored = {d["node_id"]: d for d in report.ignored}
    if signed:
        # the site's own signed lie is evidence: no weight, CONTRADICTED, evidence in the log
        assert checks[102]["attributable"] and checks[102]["evidence"]
        assert liar_sub.weight == 0 and liar_sub.score == 0
        assert liar_sub.reason == Reason.CONTRADICTED
        assert all(s.weight > 0 for s in subs if s.site != liar.address)
        assert [e["reply"]["site"] for e in report.evidence] == [liar.address]
        assert [e.site for e in log.evidence] == [liar.address]
        assert log.evidence[0].contradicts == ("cid", "num_samples")
        assert log.evidence[0].reply.num_samples == 10 * liar_sub.num_samples
        entry = log.site(liar.address)
        assert entry is not None and entry.reason == Reason.CONTRADICTED
        assert set(ignored) == {999, 555}
        # restart-safe: a fresh service on the same folder values the round the same way
        svc = fed.service
        fresh = AggregatorService(
            ledger=fed.ledger,
            store=fed.store,
            account=svc.account,
            validation=svc.validation,
            settings=svc.settings,
            folder=svc.folder,
        )
        pairs = fresh.candidates(r)
        again, _ = fresh._valuate(r, fresh._model(info.start_cid, info.start_sha256), pairs)
        by = {v.site: v for v in again.sites}
        assert (by[liar.address].score, by[liar.address].reason) == (0, Reason.CONTRADICTED)
        assert [(v.site, v.score) for v in again.sites] == [(s.site, s.score) for s in subs]
        # once valued, the chain's scores are fixed: later evidence is refused, not applied
        with pytest.raises(ConfigError, match="only before valuation"):
            svc.submit_evidence(r, [log.evidence[0].reply])
    else:
        # unattributable: ignored and reported; the site keeps the chain's weight
        assert not checks[102]["attributable"] and not checks[102]["evidence"]
        assert liar_sub.weight > 0 and liar_sub.reason == Reason.OK
        assert checks[102]["chain_weight"] == liar_sub.weight
        assert onchain_weights(claimed, [s.score for s in subs]) != expected  # lie would pay
        assert ignored[102]["unattributable"] and report.evidence == [] and log.evidence == ()
        assert set(ignored) == {102, 999, 555}
    written = json.loads((tmp_path / "flower" / f"flower-round-{r}.json").read_text())
    assert written["replies"] == report.replies
    assert written["weights"][liar.address] == str(liar_sub.weight)
    # The round verifies from the chain and the store alone (signed evidence included).
    # With the validation split the replayed valuation gets the same override (signed lie).
    extra = {"validation": fed.service.validation} if signed else {}
    audits = verify_all(fed.ledger, fed.store, **extra)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if not c.passed]
    names = {c.name for a in audits for c in a.checks}
    if signed:
        assert {"evidence.signed", "evidence.contradicted", "scores.recomputed"} <= names
    else:
        assert not names & {"evidence.signed", "evidence.contradicted"}


def test_an_aggregator_cannot_zero_an_honest_site_with_a_forged_lie(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A "lie" the site never signed (unsigned, or signed by another key) is no evidence: the
    service refuses it; an aggregator that zeroes the site on it anyway (its evidence check
    patched out) finalizes, and audit verify fails naming evidence.signed and
    evidence.contradicted."""
    fed = _federation(embedded, tmp_path)
    honest = fed.nodes[1]
    refused: list[list[Evidence]] = []

    def exchange(kind: str, request: Mapping[str, Any], timeout: float) -> list[Received]:
        r = int(request["round"])
        for node in fed.nodes:
            answer(node, r, wait_seconds=0)
        _close_commits(fed.ledger, r)
        out = [
            Received(node_id=100 + i, reply=answer(node, r, wait_seconds=0).to_config())
            for i, node in enumerate(fed.nodes)
        ]
        sub = fed.ledger.get_submission(r, honest.address)
        assert sub is not None
        lie = SignedReply(
            chain_id=fed.ledger.chain_id,
            ledger=fed.ledger.address,
            round=r,
            phase="revealed",
            site=honest.address,
            cid=sub.cid,
            sha256=sub.sha256,
            num_samples=sub.num_samples * 10,
        )
        other = sign_reply(embedded.outsider, replace(lie, site=embedded.outsider.address))
        forged = [lie, replace(lie, signature=other.signature)]
        # what the real check accepts of them against the chain: nothing
        refused.append(
            original(
                forged,
                chain_id=fed.ledger.chain_id,
                ledger=fed.ledger.address,
                round_id=r,
                updates={
                    sub.site: ChainUpdate(
                        cid=sub.cid, sha256=sub.sha256, num_samples=sub.num_samples
                    )
                },
            )
        )
        fed.service.submit_evidence(r, forged)  # kept by the aggregator all the same
        return out

    def anything_goes(replies: Iterable[SignedReply], **_: Any) -> list[Evidence]:
        return [Evidence(reply=rep, contradicts=("num_samples",)) for rep in list(replies)[:1]]

    original = service_module.applicable
    monkeypatch.setattr(service_module, "applicable", anything_goes)  # a lying aggregator
    rounds = LedgerRounds(service=fed.service, exchange=exchange, folder=tmp_path / "flower")
    report = rounds.run_round()
    assert refused == [[]]
    r = report.round
    subs = {s.site: s for s in fed.ledger.get_submissions(r)}
    assert subs[honest.address].reason == Reason.CONTRADICTED  # the lying aggregator's doing
    (audit,) = verify_all(fed.ledger, fed.store)
    failed = {c.name for c in audit.checks if not c.passed}
    assert {"evidence.signed", "evidence.contradicted"} <= failed, failed
    detail = " ".join(c.detail for c in audit.checks if c.name == "evidence.signed")
    # the unsigned one was never kept; the other recovers to some key, not the site's
    assert "the signature recovers to 0x" in detail and "not the site" in detail


def test_one_hostile_reply_does_not_stop_the_check_of_the_others(embedded: ChainEnv) -> None:
    """Replies of every malformed kind (wrong types, bytes, a NaN count, missing or unknown
    fields, no mapping at all, an error) beside one honest reply: each hostile one is reported
    in ``ignored`` with why, and the honest one is still checked against the chain."""
    ledger, sha, r = _round_with_reveal(embedded)
    site = embedded.sites[0].address
    honest = {"round": r, "site": site, "phase": "revealed", "cid": CID_A, "sha256": sha}
    honest["num_samples"] = 40
    hostile: list[Any] = [
        {**honest, "num_samples": float("nan")},
        {**honest, "cid": b"\x00" * 64},
        {**honest, "round": [r]},
        {**honest, "weight": 10**18},
        {"site": site},
        [("round", r)],
        7,
    ]
    got = [Received(node_id=10 + i, reply=doc) for i, doc in enumerate(hostile)]
    got += [Received(node_id=99, reply=None, error="boom"), Received(node_id=1, reply=honest)]
    rounds = LedgerRounds.__new__(LedgerRounds)  # the reply check needs only the ledger
    rounds.ledger, rounds.sites = ledger, {}
    report = RoundReport(round=r)
    checks, evidence = rounds._check(r, got, report)
    assert [(n, s) for n, s, _ in checks] == [(1, site)] and evidence == []
    assert checks[0][2].truthful and checks[0][2].attributable is False  # unsigned, but true
    assert sorted(d["node_id"] for d in report.ignored) == [*range(10, 10 + len(hostile)), 99]
    assert all(d["error"] for d in report.ignored)
