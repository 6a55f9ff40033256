"""A site's ClientApp against a hostile ServerApp (fedtrail.flower.site): the message's round and
wait are only requests; the chain bounds what the site does and how long it waits, and the site
never signs a claim about its update that the chain does not hold."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

import fedtrail.flower.site as site_module
from fedtrail.errors import ChainUnreachable, ConfigError
from fedtrail.flower.replies import MAX_FIELD_CHARS, SiteReply, check_reply
from fedtrail.flower.site import REVEAL_SLACK, answer, check_ledger, check_wait, wait_limit
from fedtrail.ledger import Submission
from fedtrail.simulation.federation import Federation
from tests.fixtures.chain import ChainEnv
from tests.flower.test_rounds import _close_commits, _federation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("wait", [math.nan, math.inf, -math.inf, -1.0, "5", True, None])
def test_a_wait_that_is_not_a_finite_number_is_refused(wait: object) -> None:
    with pytest.raises(ConfigError, match="wait-seconds"):
        check_wait(wait)


def _open(env: ChainEnv, tmp: Path) -> tuple[Federation, int]:
    fed = _federation(env, tmp)
    return fed, fed.service.open_next()


def test_the_chain_bounds_how_long_a_site_waits(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ServerApp asking a site to wait a day (or NaN, which never compares past a deadline)
    holds its ClientApp no longer than the chain's round allows; a round the chain does not
    have is answered ``none`` after a short retry, signed but never evidence."""
    fed, r = _open(embedded, tmp_path)
    node = fed.nodes[0]
    info = fed.ledger.get_round(r)
    limit = wait_limit(node, r, 86_400.0)
    assert limit <= info.reveal_deadline - info.opened_at + REVEAL_SLACK
    assert wait_limit(node, r, 3.0) == 3.0  # an honest ServerApp's wait stays as asked
    assert wait_limit(node, r + 7, 86_400.0) == site_module.UNKNOWN_ROUND_WAIT
    with pytest.raises(ConfigError, match="wait-seconds"):
        answer(node, r + 7, wait_seconds=math.nan)
    monkeypatch.setattr(site_module, "UNKNOWN_ROUND_WAIT", 0.0)
    reply = answer(node, r + 7, wait_seconds=86_400.0)
    assert (reply.round, reply.phase) == (r + 7, "none") and "does not exist" in reply.note
    assert r + 7 not in node.state.rounds  # nothing recorded, nothing trained
    check = check_reply(fed.ledger, reply, round_id=r, sender=node.address)
    assert check.attributable and not check.evidence and check.mismatches == ("round",)


def test_a_chain_that_stops_answering_mid_check_leaves_the_wait_as_asked(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round read, then the chain's clock unreachable: the wait is the (finite) one asked
    for, not an exception out of the ClientApp (review: the clock was read outside the try)."""
    fed, r = _open(embedded, tmp_path)

    def down(w3: object) -> int:
        raise ChainUnreachable("the JSON-RPC endpoint does not answer")

    monkeypatch.setattr(site_module, "next_block_timestamp", down)
    assert wait_limit(fed.nodes[0], r, 12.0) == 12.0


def test_a_site_that_lost_its_state_never_signs_a_lie_against_itself(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """A node whose state.json lost the round after revealing (a restored folder, a second
    process on the same key) rebuilds a record with no sample count. Its signed reply must
    still state the chain's reveal: a signed claim of 0 samples was evidence against the honest
    site (score 0, CONTRADICTED)."""
    fed, r = _open(embedded, tmp_path)
    for node in fed.nodes:
        assert answer(node, r, wait_seconds=0).phase == "committed"
    _close_commits(fed.ledger, r)
    node = fed.nodes[1]
    assert answer(node, r, wait_seconds=0).phase == "revealed"
    del node.state.rounds[r]  # the local record is gone; the chain still holds the reveal
    reply = answer(node, r, wait_seconds=0)
    sub = fed.ledger.get_submission(r, node.address)
    assert sub is not None and sub.revealed
    assert (reply.phase, reply.cid, reply.sha256, reply.num_samples) == (
        "revealed",
        sub.cid,
        sub.sha256,
        sub.num_samples,
    )
    check = check_reply(fed.ledger, reply, round_id=r, sender=node.address)
    assert check.attributable and check.truthful and not check.evidence


def test_a_long_failure_note_is_cut_not_made_malformed(embedded: ChainEnv, tmp_path: Path) -> None:
    """A site's reply notes why it did nothing (an exception's text, which can be long); the
    ServerApp refuses notes over MAX_FIELD_CHARS, so the site cuts its own note to fit."""
    fed, r = _open(embedded, tmp_path)
    node = fed.nodes[0]
    reply = site_module._reply(node, r, None, "failed: " + "x" * 10_000)
    assert len(reply.note) == MAX_FIELD_CHARS["note"] and reply.note.endswith("...")
    assert SiteReply.from_config(reply.to_config()) == reply


def test_a_request_for_another_ledger_or_chain_is_refused(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """A SuperNode serving two federations, or another federation's ServerApp: the request
    names its ledger and chain, and a site refuses one that is not its own instead of taking
    part in its own ledger's round of the same number."""
    fed, r = _open(embedded, tmp_path)
    node = fed.nodes[0]
    own = {"round": r, "ledger": fed.ledger.address.lower(), "chain-id": fed.ledger.chain_id}
    check_ledger(node, own)
    check_ledger(node, {"round": r})  # a ServerApp that names neither (older): as before
    for bad in ({"ledger": "0x" + "22" * 20}, {"chain-id": 1}, {"ledger": 5}, {"chain-id": "x"}):
        with pytest.raises(ConfigError, match="not this site's"):
            check_ledger(node, {**own, **bad})
    assert r not in node.state.rounds


@pytest.mark.parametrize("field", ["num_samples", "cid", "sha256"])
def test_a_site_never_signs_a_reveal_its_endpoint_misreports(
    embedded: ChainEnv, tmp_path: Path, field: str
) -> None:
    """a69: an endpoint (one the aggregator runs) that reports the site's reveal with another
    sample count, CID or sha256 than the node sent: signed, that read was evidence against the
    honest site (score 0, CONTRADICTED, audit verify passing). The site now claims only its
    commitment, noting why, and the reply is no evidence."""
    fed, r = _open(embedded, tmp_path)
    node = fed.nodes[1]
    for n in fed.nodes:
        answer(n, r, wait_seconds=0)
    _close_commits(fed.ledger, r)
    assert answer(node, r, wait_seconds=0).phase == "revealed"
    real = fed.ledger.get_submission(r, node.address)
    assert real is not None and real.revealed
    wrong = {
        "num_samples": real.num_samples * 10,
        "cid": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        "sha256": "ab" * 32,
    }[field]
    honest_read = node.ledger.get_submission

    def misreported(round_id: int, site: str) -> Submission | None:
        sub = honest_read(round_id, site)
        return replace(sub, **{field: wrong}) if sub is not None else None

    node.ledger.get_submission = misreported  # type: ignore[method-assign]
    reply = answer(node, r, wait_seconds=0)
    assert reply.phase == "committed" and field in reply.note and reply.signature
    check = check_reply(fed.ledger, reply, round_id=r, sender=node.address)
    assert check.attributable and not check.evidence
    node.ledger.get_submission = honest_read  # type: ignore[method-assign]
    truthful = answer(node, r, wait_seconds=0)
    assert (truthful.phase, truthful.num_samples, truthful.cid) == (
        "revealed",
        real.num_samples,
        real.cid,
    )


def test_a_passphrase_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """A passphrase file saved in Latin-1 raised UnicodeDecodeError out of the SuperNode's
    ClientApp (a traceback); now a ConfigError naming the file's role."""
    from fedtrail.flower.site import read_secret

    path = tmp_path / "pass.txt"
    path.write_bytes("clé\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="cannot read the passphrase file of the keystore"):
        read_secret(path, "the keystore")
    path.write_text("clé\n", encoding="utf-8")
    assert read_secret(path, "the keystore") == "clé"
