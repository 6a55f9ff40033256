"""``audit verify`` on a peer-scored federation (issue 14), on Anvil + IPFS: it passes from the
chain and the store alone, with no validation split, and fails naming the check when the log's
votes differ from the chain's, a score is not the median of the revealed vectors, or a weight
was moved. The report and ``audit site`` / ``audit round`` show the vectors and the validators'
reputations."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedtrail.auditor.report import write_report
from fedtrail.auditor.verify import RoundAudit, verify_all, verify_round
from fedtrail.cli import cli
from fedtrail.errors import FedtrailError
from fedtrail.ledger import Valuation
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import address_key, median
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.storage.store import IpfsStore
from tests.auditor.peer_federation import PeerFed, new_peer_federation, peer_round, reader_results

pytestmark = [pytest.mark.anvil, pytest.mark.ipfs]

PEER_CHECKS = {"peers.votes", "peers.median", "peers.quorum", "peers.reputation"}


@pytest.fixture(scope="module")
def pf(anvil_url: str, ipfs_api: str, tmp_path_factory: pytest.TempPathFactory) -> PeerFed:
    """Round 1 valued by the aggregator, rounds 2 and 3 by the sites (honest logs)."""
    pf = new_peer_federation(tmp_path_factory.mktemp("peers"), anvil_url, IpfsStore(ipfs_api))
    for seed in (2, 3):
        peer_round(pf, seed=seed)
    return pf


def failed(audit: RoundAudit) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.failed}


def test_verify_passes_a_peer_federation_without_a_validation_split(pf: PeerFed) -> None:
    audits = [verify_round(pf.fed.ledger, pf.fed.store, r) for r in (1, 2, 3)]
    assert all(a.passed for a in audits), [failed(a) for a in audits]
    aggregator, *peers = audits
    assert not {c.name for c in aggregator.checks} & PEER_CHECKS
    assert all(c.applicable for c in aggregator.checks)  # an aggregator round as before
    for audit in peers:
        by_name = {c.name: c for c in audit.checks}
        assert set(by_name) >= PEER_CHECKS
        assert all(by_name[n].passed for n in PEER_CHECKS)
        assert {"weights", "global.recomputed", "log.hash", "log.agrees"} <= set(by_name)
        na = by_name["scores.recomputed"]
        assert (na.status, na.passed) == ("N/A", False)  # never reported as passed


def test_verify_all_fetches_each_rounds_log_once(pf: PeerFed, ipfs_api: str) -> None:
    """A later round's heatmap checks read the latest earlier round's log; in one audit that
    is the log the earlier round's own checks fetched, not a second fetch from the store."""
    fetched: Counter[str] = Counter()

    class Counting(IpfsStore):
        def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
            fetched[cid] += 1
            return super().get(cid, sha256, max_bytes=max_bytes)

    ledger = pf.fed.ledger
    audits = verify_all(ledger, Counting(ipfs_api))
    assert all(a.passed for a in audits[:3]), [failed(a) for a in audits[:3]]
    logs = [ledger.get_round(r).log_cid for r in (1, 2, 3)]
    assert len(set(logs)) == 3
    assert [fetched[cid] for cid in logs] == [1, 1, 1], dict(fetched)


def test_the_chain_scores_are_the_medians_of_the_revealed_vectors(pf: PeerFed) -> None:
    """The scores the contract recorded, against the median worked out here over the other
    validators' entries (a hospital's own entry is left out)."""
    ledger = pf.fed.ledger
    subs = sorted(ledger.get_submissions(3), key=lambda s: address_key(s.site))
    for i, sub in enumerate(subs):
        others = [v.scores[i] for v in pf.votes[3] if v.validator != sub.site]
        assert len(others) == 3 and sub.score == median(others) > 0


def test_a_log_whose_votes_differ_from_the_chain_fails_peers_votes(
    pf: PeerFed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """audit verify names peers.votes; audit log marks the forged vector against the chain's
    and exits 1, while it marks an honest round's votes [chain]."""
    import fedtrail.auditor.commands as commands

    def forge(doc: dict[str, Any]) -> None:
        doc["peers"]["votes"][0]["scores"][1] += 1

    r = peer_round(pf, seed=4, edit=forge)
    bad = failed(verify_round(pf.fed.ledger, pf.fed.store, r))
    assert set(bad) == {"peers.votes"}, bad
    assert "the log's votes are not the chain's" in bad["peers.votes"]

    monkeypatch.setattr(commands, "_open", lambda *_: pf.fed.ledger)
    monkeypatch.setattr(commands, "open_checked_store", lambda *_, **__: pf.fed.store)
    out = CliRunner().invoke(cli, ["audit", "log", str(r)])
    assert out.exit_code == 1 and out.stdout.count("[DIFFERS FROM CHAIN] (chain: ") == 1
    honest = CliRunner().invoke(cli, ["audit", "log", "2"])
    assert honest.exit_code == 0, honest.output
    votes = [line for line in honest.stdout.splitlines() if line.endswith("  [chain]")]
    assert len(votes) == len(pf.validators)
    # on audit round's scale, a validator's own (uncounted) entry in brackets, where it has one
    sites = {address_key(s.site) for s in pf.fed.ledger.get_submissions(2) if s.revealed}
    for line in votes:
        own = address_key(line.split()[0]) in sites
        assert len(re.findall(r"\[[01]\.\d{6}\]", line)) == int(own), line
    assert any("[" in line.removesuffix("[chain]") for line in votes)


def test_a_score_that_is_not_the_median_fails_peers_median(pf: PeerFed) -> None:
    """The contract refuses an aggregator's valuation of a peer round, so the lie can only be
    in the log: one site scored above its median."""
    ledger = pf.fed.ledger
    site = min((s.address for s in pf.fed.sites), key=address_key)

    def forge(doc: dict[str, Any]) -> None:
        entry = next(e for e in doc["sites"] if e["site"] == site)
        entry["score"] = min(SCORE_SCALE, entry["score"] + 50_000)

    def aggregator_values(round_id: int) -> None:
        subs = ledger.get_submissions(round_id)
        with pytest.raises(FedtrailError, match="peer round"):
            ledger.record_valuation(
                pf.fed.coordinator, round_id, [Valuation(s.site, SCORE_SCALE, 0) for s in subs]
            )

    r = peer_round(pf, seed=5, edit=forge, during=aggregator_values)
    bad = failed(verify_round(ledger, pf.fed.store, r))
    assert set(bad) == {"peers.median", "log.agrees"}, bad
    assert f"log {site[:10]} score" in bad["peers.median"]


def test_log_weights_moved_between_sites_fail_peers_median(pf: PeerFed) -> None:
    def forge(doc: dict[str, Any]) -> None:
        a, b = doc["sites"][0], doc["sites"][1]
        moved = 10**16
        a["weight"], b["weight"] = str(int(a["weight"]) + moved), str(int(b["weight"]) - moved)

    r = peer_round(pf, seed=6, edit=forge)
    bad = failed(verify_round(pf.fed.ledger, pf.fed.store, r))
    assert set(bad) == {"peers.median", "log.agrees"}, bad
    assert "weight" in bad["peers.median"] and "weight" in bad["log.agrees"]


def test_a_why_that_misstates_the_votes_fails_peers_median_and_the_reader(
    pf: PeerFed, anvil_url: str, ipfs_api: str
) -> None:
    """Session 56, attack a125: a peer round's explanation is the sentence of the chain's
    median and count (and gate, and WITHHELD drop): a paid site's text telling of a median of
    0.050 and a WITHHELD drop (its components and every pinned field left honest, no reason
    label to contradict) fails ``peers.median`` and the independent reader's ``log.explanation
    [peers]``; both passed it before. The honest rounds pass both (the fixture writes the
    product's sentence)."""
    site = min((s.address for s in pf.fed.sites), key=address_key)
    lie = (
        "Scored by its peers: the median of the 3 other validator(s)' scores is 0.050. It was "
        "then dropped: the aggregator could not read the update back by the score reveal "
        "deadline (reason WITHHELD), and its weight went to the others."
    )

    def forge(doc: dict[str, Any]) -> None:
        next(e for e in doc["sites"] if e["site"] == site)["explanation"] = lie

    r = peer_round(pf, seed=11, edit=forge)
    bad = failed(verify_round(pf.fed.ledger, pf.fed.store, r))
    assert set(bad) == {"peers.median"}, bad
    assert (
        f'log {site[:10]} explanation "Scored by its peers: the median of the 3'
        in (bad["peers.median"])
    )
    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[r, "log.explanation [peers]"]["result"] == "FAIL"
    assert all(results[k, "log.explanation [peers]"]["result"] == "PASS" for k in (2, 3))


def test_a_peer_log_with_a_standing_block_fails_standing_chain(pf: PeerFed) -> None:
    """Attack: the aggregator writes a standing block into a peer round's log (it valued
    nothing, so nothing checks it) that sets a site's accumulated value to -100. The next round
    valued with standing continues the latest log with a block, i.e. this one, and would demote
    the site from made-up values. Before, the block was reported N/A and the round passed."""
    site = min((s.address for s in pf.fed.sites), key=address_key)

    def forge(doc: dict[str, Any]) -> None:
        doc["standing"] = {
            "previous": None,
            "valued_rounds": 0,
            "before": {},
            "normalised": None,
            "after": {site: -100.0},
            "references": [],
        }

    r = peer_round(pf, seed=8, edit=forge)
    bad = failed(verify_round(pf.fed.ledger, pf.fed.store, r))
    assert set(bad) == {"standing.chain"}, bad
    assert "a peer round's log has a standing block" in bad["standing.chain"]


def test_an_update_nobody_could_read_rejected_by_the_peers_is_consistent(pf: PeerFed) -> None:
    """A hospital reveals a CID whose bytes are not its committed update: every validator scores
    it 0, the contract rejects it (PEER_REJECTED, weight 0), and the auditor, who cannot read it
    either, finds that consistent."""
    ledger, site = pf.fed.ledger, pf.fed.sites[1].address
    r = peer_round(pf, seed=8, tamper=site)
    sub = ledger.get_submission(r, site)
    assert sub is not None and (sub.score, sub.reason, sub.weight) == (0, Reason.PEER_REJECTED, 0)
    audit = verify_round(ledger, pf.fed.store, r)
    assert audit.passed, failed(audit)
    check = next(c for c in audit.checks if c.name == f"update.{site[:10]}")
    assert check.passed and "do not match the on-chain sha256" in check.detail
    assert "scored 0 as unusable at valuation: consistent" in check.detail


def test_a_chain_quorum_other_than_the_terms_fails_peers_quorum(pf: PeerFed) -> None:
    r = peer_round(pf, seed=7, chain_quorum=2)
    bad = failed(verify_round(pf.fed.ledger, pf.fed.store, r))
    assert set(bad) == {"peers.quorum"}, bad
    assert "terms' quorum 3, the chain's 2" in bad["peers.quorum"]


@dataclass(frozen=True)
class Report:
    path: Path
    page: str
    peer_rounds: int
    """How many peer rounds the ledger held when the page was written."""


@pytest.fixture(scope="module")
def report(pf: PeerFed, tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The page, written once for the report tests, with one peer round's verification (a
    full verify of every round is what the CLI tests exercise)."""
    ledger = pf.fed.ledger
    audits = [verify_round(ledger, pf.fed.store, 2)]
    out = tmp_path_factory.mktemp("peer-report")
    path = write_report(ledger, pf.fed.store, out, audits=audits)
    return Report(path, path.read_text(encoding="utf-8"), ledger.current_round() - 1)


def test_report_shows_each_validators_vector_the_median_and_reputations(
    pf: PeerFed, report: Report
) -> None:
    page, peer_rounds = report.page, report.peer_rounds  # every round after the first
    assert '<section id="peers">' in page and '<a href="#peers">' in page
    assert "<h3>Round 2</h3>" in page and "<h3>Round 3</h3>" in page
    assert page.count('<tr class="median">') == peer_rounds
    # 3 hospitals each scored their own update: shown, struck through, not counted
    assert page.count("self, not counted") == 3 * peer_rounds
    assert '<span class="badge na">N/A</span>' in page
    rated = pf.fed.ledger.events("ValidatorRated", argument_filters={"round": peer_rounds + 1})
    for ev in rated:  # each validator's reputation after the round, as the contract rated it
        assert f"<td class=num>{ev.args['validatorReputation'] / SCORE_SCALE:.3f}</td>" in page


def test_audit_cli_shows_validator_reputation_and_round_vectors(
    pf: PeerFed, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedtrail.auditor.commands as commands

    ledger = pf.fed.ledger
    monkeypatch.setattr(commands, "_open", lambda *_: ledger)
    extra = pf.validators[-1].address  # a validator with no update of its own
    out = CliRunner().invoke(cli, ["audit", "site", extra, "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    standing = ledger.validator_standing(extra)
    assert doc["validator"] == {
        "reputation": standing.reputation / SCORE_SCALE,
        "rated_rounds": standing.rated_rounds,
    }
    by_round = {row["round"]: row for row in doc["rounds"]}
    assert by_round[1]["validator_reputation"] is None  # the aggregator's round
    assert by_round[2]["validator_reputation"] is not None
    table = CliRunner().invoke(cli, ["audit", "site", extra])
    assert f"rated rounds={standing.rated_rounds}" in table.stdout

    out = CliRunner().invoke(cli, ["audit", "round", "3", "--format", "json"])
    peers = json.loads(out.stdout)["peers"]
    assert peers["median"] == [
        s.score for s in sorted(ledger.get_submissions(3), key=lambda s: address_key(s.site))
    ]
    assert [v["scores"] for v in peers["validators"]] == [list(v.scores) for v in pf.votes[3]]
    assert "peers" not in json.loads(
        CliRunner().invoke(cli, ["audit", "round", "1", "--format", "json"]).stdout
    )
    table = CliRunner().invoke(cli, ["audit", "round", "3"])
    assert "peer scores: 4 vector(s) revealed, quorum 3" in table.stdout
    assert table.stdout.count("[0.000]") == 3  # each hospital's own entry, not counted


def test_audit_verify_cli_passes_peer_rounds_without_validation(
    pf: PeerFed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``fedtrail audit verify --round N`` with no --validation: exit 0, the valuation replay
    shown N/A (never PASS), counted apart; ``audit report --format json`` lists the peer
    tables."""
    import fedtrail.auditor.commands as commands

    monkeypatch.setattr(commands, "_open", lambda *_: pf.fed.ledger)
    monkeypatch.setattr(commands, "open_checked_store", lambda *_, **__: pf.fed.store)
    out = CliRunner().invoke(cli, ["audit", "verify", "--round", "2", "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    results = {c["check"]: c["result"] for c in doc["checks"]}
    assert doc["passed"] is True and results["scores.recomputed"] == "N/A"
    assert all(results[name] == "PASS" for name in PEER_CHECKS)

    # the report verifies every round; one is enough to show what its JSON carries
    import fedtrail.auditor.verify as verify

    one = verify_round(pf.fed.ledger, pf.fed.store, 2)
    assert one.passed and sum(not c.applicable for c in one.checks) == 1
    monkeypatch.setattr(verify, "verify_all", lambda *_, **__: [one])
    args = ["audit", "report", "--out", str(tmp_path / "r"), "--no-timestamp"]
    report = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert report.exit_code == 0, report.output
    tables = json.loads(report.stdout)["peers"]
    assert [t["round"] for t in tables] == list(range(2, pf.fed.ledger.current_round() + 1))


@pytest.mark.browser
def test_peer_report_renders_in_headless_chromium(
    pf: PeerFed, report: Report, tmp_path: Path
) -> None:
    """The page with peer tables loads from file:// without a console message, and the peer
    section in the browser's DOM keeps every validator row, the struck-through own entries and
    the escaped hostile site name."""
    from tests.auditor.report.test_browser import _chromium, _console_problems

    dom = _chromium(["--dump-dom", report.path.resolve().as_uri()], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_problems(dom.stderr), _console_problems(dom.stderr)
    section = dom.stdout.split('<section id="peers">', 1)[1].split("</section>", 1)[0]
    n = report.peer_rounds
    assert section.count("<s>") == 3 * n
    assert section.count("</tr>") == n * (1 + len(pf.validators) + 1)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section
