"""A ClientApp's reply is parsed without trusting its types, and checked field by field against
the site's on-chain submission (the embedded chain: real contract, real commit and reveal)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from fedtrail.chain import advance_time
from fedtrail.flower.replies import InvalidReply, SiteReply, check_reply, sign
from fedtrail.ledger import Ledger, Valuation, commitment
from fedtrail.protocol.evidence import SignedReply, sign_reply
from tests.fixtures.chain import ChainEnv

CID_A = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
CID_B = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def _round_with_reveal(env: ChainEnv) -> tuple[Ledger, str, int]:
    """A ledger with two sites; site 0 committed and revealed 40 samples at CID_A, site 1
    registered but silent; the round valued. Returns (ledger, sha256, round)."""
    ledger = env.deploy(min_round_window=1)
    for i, site in enumerate(env.sites[:2]):
        ledger.register_site(env.coordinator, site.address, f"site-{i}", 1000)
    sha = hashlib.sha256(b"update").hexdigest()
    r, _ = ledger.open_round(
        env.aggregator,
        CID_B,
        hashlib.sha256(b"start").hexdigest(),
        terms_cid=CID_B,
        terms_sha256=hashlib.sha256(b"terms").hexdigest(),
        commit_seconds=20,
        reveal_seconds=20,
    )
    site = env.sites[0]
    ledger.commit_update(site, r, commitment(site.address, r, sha, 40))
    advance_time(env.w3, 25)
    ledger.reveal_update(site, r, CID_A, sha, 40)
    advance_time(env.w3, 20)  # past the reveal deadline: site 1 never revealed
    ledger.record_valuation(
        env.aggregator, r, [Valuation(site=site.address, score=10**6, reason=0)]
    )
    return ledger, sha, r


def test_replies_are_checked_against_the_chain(embedded: ChainEnv) -> None:
    ledger, sha, r = _round_with_reveal(embedded)
    honest, silent = embedded.sites[0].address, embedded.sites[1].address
    weight = ledger.get_submission(r, honest).weight  # type: ignore[union-attr]
    assert weight == 10**18

    def check(site: str, sender: str | None = None, **fields: object) -> tuple[str, ...]:
        doc: dict[str, object] = dict(
            round=r, site=site, phase="revealed", cid=CID_A, sha256=sha, num_samples=40
        )
        doc.update(fields)
        result = check_reply(ledger, SiteReply.from_config(doc), round_id=r, sender=sender or site)
        assert result.chain_weight == (weight if (sender or site) == honest else 0)
        return result.mismatches

    assert check(honest) == ()
    assert check(honest, sha256="0x" + sha.upper()) == ()  # the same digest, spelled otherwise
    assert check(honest, cid=CID_B) == ("cid",)
    assert check(honest, num_samples=400) == ("num_samples",)
    assert check(honest, sha256="ab" * 32, num_samples=39) == ("sha256", "num_samples")
    assert check(honest, round=r + 1) == ("round",)
    assert check(honest, phase="none", cid="", sha256="", num_samples=0) == ("phase",)
    # a site with nothing on chain: only "none" is true; any claim is a mismatch, weight 0
    assert check(silent, phase="none", cid="", sha256="", num_samples=0) == ()
    assert check(silent, phase="committed", cid="", sha256="", num_samples=0) == ("phase",)
    assert check(silent) == ("phase",)
    # a SuperNode that answered for the silent site before now claims the honest one's update
    assert check(honest, sender=silent) == ("site", "phase")


@pytest.mark.parametrize(
    "doc",
    [
        {"round": 0, "site": "0x" + "11" * 20, "phase": "none"},
        {"round": True, "site": "0x" + "11" * 20, "phase": "none"},
        {"round": 1, "site": "nobody", "phase": "none"},
        {"round": 1, "site": "0x" + "11" * 20, "phase": "won"},
        {"round": 1, "site": "0x" + "11" * 20, "phase": "revealed", "num_samples": -1},
        {"round": 1, "site": "0x" + "11" * 20, "phase": "revealed", "num_samples": 1.5},
        {"round": 1, "site": "0x" + "11" * 20, "phase": "revealed", "cid": 7},
        {"round": 1, "site": "0x" + "11" * 20, "phase": "none", "weight": 10**18},
        {"round": 1, "phase": "none"},
    ],
)
def test_malformed_replies_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(InvalidReply):
        SiteReply.from_config(doc)


def test_a_reply_round_trips_through_its_config_mapping() -> None:
    reply = SiteReply(
        round=3, site="0x" + "ab" * 20, phase="revealed", cid=CID_A, sha256="cd" * 32, num_samples=9
    )
    assert SiteReply.from_config(reply.to_config()) == reply
    assert reply.site.startswith("0x") and reply.site != "0x" + "ab" * 20  # checksummed


@pytest.mark.parametrize(
    ("field", "size"), [("cid", 257), ("sha256", 67), ("signature", 133), ("note", 2001)]
)
def test_an_oversized_field_is_refused(field: str, size: int) -> None:
    """A signed lie is kept in the round's log as evidence: one signed 33 MB "CID" made the log
    larger than any auditor reads (MAX_LOG_BYTES) and the round unverifiable. Such a reply is
    malformed (reported, ignored), so it is never evidence."""
    doc: dict[str, object] = {"round": 1, "site": "0x" + "11" * 20, "phase": "revealed"}
    with pytest.raises(InvalidReply, match=f"reply {field} is {size} characters"):
        SiteReply.from_config({**doc, field: "Q" * size})
    SiteReply.from_config({**doc, field: "Q" * (size - 1)})  # the limit itself is accepted


def test_a_signed_oversized_lie_is_no_evidence(embedded: ChainEnv) -> None:
    """The site's own key over a 4 KB "CID": the ServerApp refuses the reply as malformed
    before it could be evidence (and so before it could reach the round's log)."""
    ledger, sha, r = _round_with_reveal(embedded)
    site = embedded.sites[0]
    statement = SignedReply(
        chain_id=ledger.chain_id,
        ledger=ledger.address,
        round=r,
        phase="revealed",
        site=site.address,
        cid="Qm" + "x" * 4096,
        sha256=sha,
        num_samples=40,
    )
    doc = sign_reply(site, statement).to_json()
    del doc["chain_id"], doc["ledger"]
    with pytest.raises(InvalidReply, match="reply cid is 4098 characters"):
        SiteReply.from_config(doc)


def test_a_signed_reply_replayed_elsewhere_is_no_evidence(embedded: ChainEnv) -> None:
    """The signature binds the chain id, the ledger and the round: the site's own signed reply
    from another round, another ledger or another chain recovers to someone else (or names
    another round) here, and is never evidence against it."""
    ledger, sha, r = _round_with_reveal(embedded)
    site = embedded.sites[0]
    lie = SiteReply(
        round=r, site=site.address, phase="revealed", cid=CID_B, sha256=sha, num_samples=40
    )
    here = sign(lie, site, chain_id=ledger.chain_id, ledger=ledger.address)
    assert check_reply(ledger, here, round_id=r, sender=site.address).evidence  # the control
    other_ledger = "0x" + "22" * 20
    for replayed in (
        sign(lie, site, chain_id=ledger.chain_id, ledger=other_ledger),
        sign(lie, site, chain_id=ledger.chain_id + 1, ledger=ledger.address),
    ):
        check = check_reply(ledger, replayed, round_id=r, sender=site.address)
        assert not check.attributable and not check.evidence
    earlier = sign(replace(lie, round=r + 1), site, chain_id=ledger.chain_id, ledger=ledger.address)
    check = check_reply(ledger, earlier, round_id=r, sender=site.address)
    assert check.attributable and not check.evidence and "round" in check.mismatches
    # another site's key over this site's claim: unattributable
    forged = sign(
        replace(lie, site=embedded.sites[1].address),
        embedded.sites[1],
        chain_id=ledger.chain_id,
        ledger=ledger.address,
    )
    forged = replace(forged, site=site.address)
    check = check_reply(ledger, forged, round_id=r, sender=site.address)
    assert not check.attributable and not check.evidence


@pytest.mark.parametrize(
    "doc",
    [
        {"round": 1, "site": "0x" + "1" * 100_000, "phase": "none"},
        {"round": 1, "site": "0x" + "11" * 20, "phase": "p" * 100_000},
        {"round": 1, "site": "0x" + "11" * 20, "phase": "none", "k" * 100_000: 1},
    ],
)
def test_a_malformed_replys_error_does_not_carry_the_senders_bulk(doc: dict[str, object]) -> None:
    """The error of a malformed reply is logged and kept in the round report: it names what was
    sent, cut short, never the sender's megabytes."""
    with pytest.raises(InvalidReply) as err:
        SiteReply.from_config(doc)
    assert len(str(err.value)) < 200
