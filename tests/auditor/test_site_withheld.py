"""`audit site` after a drop: the round's row carries the reputation the round left, the one
``UpdateWithheld`` states (the dropped site loses the round's credit), not the reputation the
valuation had given it before the drop (found by an independent chain reader: the row said
1.0 beside reason WITHHELD while the site's reputation was 0.7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.auditor.report.collect import collect
from fedtrail.cli import cli
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.storage.store import LocalStore
from tests.contracts.federation import Fed, by_address
from tests.fixtures.chain import ChainEnv

S2 = SCORE_SCALE // 2


def _dropped_round(fed: Fed) -> tuple[int, list[str]]:
    """A first peer round of three weighted updates, valued, then the last one (address
    order) dropped as unreadable after the score reveal deadline."""
    by_addr = {a.address: a for a in fed.sites}
    ordered = [by_addr[a] for a in by_address(list(by_addr))]
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, ordered, [10, 20, 30])
    votes = fed.score(
        round_id,
        {
            ordered[0].address: [S2, S2, SCORE_SCALE],
            ordered[1].address: [S2, S2, SCORE_SCALE],
            ordered[2].address: [S2, SCORE_SCALE, S2],
        },
    )
    fed.ledger.record_peer_valuation(ordered[0], round_id, sites, votes)
    fed.past_score_reveal(round_id)
    fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[2]])
    return round_id, sites


def test_the_round_row_of_a_dropped_site_shows_the_reputation_after_the_drop(
    embedded: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedtrail.auditor.commands as commands

    fed = Fed(embedded)
    round_id, sites = _dropped_round(fed)
    # a first valued round: the drop leaves it no reputation at all (README, dropWithheld)
    withheld = fed.ledger.events("UpdateWithheld", argument_filters={"round": round_id})
    assert [e.args["reputation"] for e in withheld] == [0]
    valued = fed.ledger.events("UpdateValued", argument_filters={"site": sites[2]})
    # its peers both gave it the full score: the high median, which set its first reputation
    assert [e.args["reputation"] for e in valued] == [SCORE_SCALE]

    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    out = CliRunner().invoke(cli, ["audit", "site", sites[2], "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    row = {r["round"]: r for r in doc["rounds"]}[round_id]
    assert (row["reason"], row["score"], row["weight"]) == ("WITHHELD", 0.0, 0.0)
    assert row["reputation"] == doc["reputation"] == 0.0
    # the others keep the reputation their valuation gave them
    out = CliRunner().invoke(cli, ["audit", "site", sites[0], "--format", "json"])
    other = json.loads(out.stdout)
    assert {r["round"]: r for r in other["rounds"]}[round_id]["reputation"] == other["reputation"]


def test_the_report_plots_the_reputation_the_drop_left(embedded: ChainEnv, tmp_path: Path) -> None:
    """The report's reputation series (``collect``) ends a dropped site's round at
    ``UpdateWithheld``'s figure, as the contract's ``getSite`` holds it."""
    fed = Fed(embedded)
    round_id, sites = _dropped_round(fed)
    federation = collect(fed.ledger, LocalStore(tmp_path / "store"), [])
    for site in sites:
        info = fed.ledger.get_site(site)
        assert info is not None
        assert federation.reputation[site] == [(round_id, info.reputation)]
    assert federation.reputation[sites[2]] == [(round_id, 0)]


def test_audit_round_keeps_the_peers_median_of_a_dropped_update(
    embedded: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer table's median row is each update's high median of the other validators'
    entries (what the distances are measured from), also for an update dropped after it: the
    chain's score is 0 (reason WITHHELD) but its peers' median is not (found by an independent
    reader: the row read 0 under two votes of 1.0 and distances of 0)."""
    import fedtrail.auditor.commands as commands

    fed = Fed(embedded)
    round_id, sites = _dropped_round(fed)
    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    out = CliRunner().invoke(cli, ["audit", "round", str(round_id), "--format", "json"])
    assert out.exit_code == 0, out.output
    peers = json.loads(out.stdout)["peers"]
    vectors = {v["validator"]: v["scores"] for v in peers["validators"]}
    want = []
    for i, site in enumerate(sites):
        others = sorted(vectors[v][i] for v in vectors if v != site)
        want.append(others[len(others) // 2])  # the high median of the others' entries
    assert peers["median"] == want
    assert want[2] == SCORE_SCALE  # the dropped update's peers paid it in full
    assert peers["reasons"][2] == "WITHHELD"
    scores = {s.site: s.score for s in fed.ledger.get_submissions(round_id)}
    assert scores[sites[2]] == 0  # the chain's score after the drop


def test_audit_round_names_the_sites_that_committed_and_never_revealed(
    embedded: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commitment never opened is a site that saw the round and withheld its update: `audit
    round` listed only the revealed updates, so an auditor could not see it (found by an
    independent chain reader)."""
    import fedtrail.auditor.commands as commands

    fed = Fed(embedded)
    round_id = fed.open()
    first, second, third = fed.sites
    for i, site in enumerate((first, second, third)):
        fed.commit(round_id, site, f"u{i}")
    fed.past_commit(round_id)
    fed.reveal(round_id, second, "u1")
    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    out = CliRunner().invoke(cli, ["audit", "round", str(round_id), "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [u["site"] for u in doc["updates"]] == [second.address]
    orders = fed.ledger.commit_orders(round_id)
    assert sorted((u["site"], u["commit_order"]) for u in doc["unrevealed"]) == sorted(
        (s.address, orders[s.address]) for s in (first, third)
    )
    table = CliRunner().invoke(cli, ["audit", "round", str(round_id)])
    assert "committed, never revealed" in table.stdout
    assert first.address in table.stdout and third.address in table.stdout
