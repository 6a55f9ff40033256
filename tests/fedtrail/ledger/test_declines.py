"""Decline commitments (attack a42): what a site posts instead of an update when it refuses a
round's terms. Anyone reads the reason back; no update commitment and no other round's or
terms' decline reads as one."""

from __future__ import annotations

from fedtrail.ledger import commitment, decline_commitment, read_decline
from fedtrail.protocol.codes import Decline

SITE = "0x6813Eb9362372EEF6200f3b1dbC3f819671cBA69"
OTHER = "0x1efF47bc3a10a45D4B230B5d10E37751FE6AA718"
TERMS = "ab" * 32


def test_every_reason_reads_back_from_its_commitment() -> None:
    for reason in Decline:
        mine = decline_commitment(SITE, 3, TERMS, reason)
        assert read_decline(mine, SITE, 3, TERMS) is reason
        assert read_decline("0x" + mine.upper(), SITE, 3, TERMS) is reason


def test_a_decline_binds_its_site_round_and_terms() -> None:
    """A decline copied by another site, carried into another round, or of other terms reads
    as no decline there: it cannot speak for anyone else."""
    mine = decline_commitment(SITE, 3, TERMS, Decline.UNACCEPTED)
    assert read_decline(mine, OTHER, 3, TERMS) is None
    assert read_decline(mine, SITE, 4, TERMS) is None
    assert read_decline(mine, SITE, 3, "cd" * 32) is None
    assert len({decline_commitment(SITE, 3, TERMS, r) for r in Decline}) == len(Decline)


def test_an_update_commitment_is_no_decline() -> None:
    """An update's commitment (four words: site, round, sha256, count) never reads as a
    decline (five words, a tag first), even with the terms' hash as its sha256 and a reason
    code as its count."""
    for reason in Decline:
        update = commitment(SITE, 3, TERMS, int(reason))
        assert read_decline(update, SITE, 3, TERMS) is None
        assert update != decline_commitment(SITE, 3, TERMS, reason)
