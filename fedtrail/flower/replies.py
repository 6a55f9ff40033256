"""What a site's ClientApp answers the ServerApp, and the check of that answer against the chain.

A reply is a claim: "in round r, site S committed / revealed the update at CID c with sha256 h
and n samples". Flower delivers it, but nothing in it is trusted: :func:`check_reply` compares
every field with the site's on-chain submission, and the ServerApp acts only on the chain (the
aggregator service reads submissions and weights from the ledger). A reply that differs is
reported (logged, and written into the round's Flower report) and otherwise ignored, so a
SuperNode that lies in its reply gains nothing: its weight is the one the chain's valuation
gives its on-chain submission, or none when it submitted nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from web3 import Web3

from fedtrail.errors import FedtrailError
from fedtrail.ledger import Ledger, Submission

PHASES = ("committed", "revealed", "none")
"""What a reply may claim: a commitment only (after the commit message), a revealed update
(after the reveal message), or nothing (the site did not take part, with a note why)."""


class InvalidReply(FedtrailError):
    """A ClientApp's reply that is not a well-formed fedtrail reply."""


@dataclass(frozen=True, kw_only=True)
class SiteReply:
    """One site's answer for one round: what it says it has on chain."""

    round: int
    site: str
    phase: str
    cid: str = ""
    sha256: str = ""
    num_samples: int = 0
    note: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 1:
            raise InvalidReply(f"reply round must be a positive integer, got {self.round!r}")
        if not isinstance(self.site, str) or not Web3.is_address(self.site):
            raise InvalidReply(f"reply site is not an address: {self.site!r}")
        object.__setattr__(self, "site", str(Web3.to_checksum_address(self.site)))
        if self.phase not in PHASES:
            raise InvalidReply(f"reply phase must be one of {PHASES}, got {self.phase!r}")
        n = self.num_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidReply(f"reply num_samples must be an integer >= 0, got {n!r}")
        for name in ("cid", "sha256", "note"):
            if not isinstance(getattr(self, name), str):
                raise InvalidReply(f"reply {name} must be a string")

    def to_config(self) -> dict[str, Any]:
        """The reply as a flat mapping for a Flower ConfigRecord."""
        return dict(asdict(self))

    @classmethod
    def from_config(cls, values: Any) -> SiteReply:
        """Parses a reply received in a Flower ConfigRecord (any mapping); raises
        :class:`InvalidReply` for anything malformed, never trusting the sender's types."""
        try:
            doc = dict(values)
        except (TypeError, ValueError) as exc:
            raise InvalidReply(f"reply is not a mapping: {exc}") from None
        known = {"round", "site", "phase", "cid", "sha256", "num_samples", "note"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InvalidReply(f"reply has unknown fields {unknown}")
        try:
            return cls(**doc)
        except TypeError as exc:
            raise InvalidReply(f"reply is incomplete: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class ReplyCheck:
    """The reply next to what the chain holds for that site and round. ``mismatches`` names
    every field where the reply differs from the chain (empty: the reply is true).
    ``chain_weight`` is the site's on-chain weight (1e18 scale; 0 before valuation)."""

    reply: SiteReply
    on_chain: bool
    chain_revealed: bool
    chain_cid: str
    chain_sha256: str
    chain_num_samples: int
    chain_weight: int
    mismatches: tuple[str, ...]

    @property
    def truthful(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["mismatches"] = list(self.mismatches)
        doc["truthful"] = self.truthful
        return doc


def _norm_sha(value: str) -> str:
    return value.lower().removeprefix("0x")


def compare(reply: SiteReply, sub: Submission | None) -> tuple[str, ...]:
    """The fields where ``reply`` differs from the chain's submission ``sub`` (None: the site
    has nothing on chain for the round)."""
    if sub is None:
        return () if reply.phase == "none" else ("phase",)
    out: list[str] = []
    if reply.phase == "none":
        out.append("phase")
    if reply.phase == "revealed":
        if not sub.revealed:
            out.append("phase")
        else:
            if reply.cid != sub.cid:
                out.append("cid")
            if _norm_sha(reply.sha256) != _norm_sha(sub.sha256):
                out.append("sha256")
            if reply.num_samples != sub.num_samples:
                out.append("num_samples")
    return tuple(out)


def check_reply(ledger: Ledger, reply: SiteReply, *, round_id: int, sender: str) -> ReplyCheck:
    """Checks ``reply`` against the chain. ``sender`` is the address the ServerApp expects at
    that SuperNode (learned from an earlier reply, or the reply's own on first contact); a reply
    for another round or another site than expected is a mismatch too, and it is always the
    chain record of ``sender`` that is reported."""
    sub = ledger.get_submission(round_id, sender)
    mismatches = list(compare(reply, sub))
    if reply.round != round_id:
        mismatches.insert(0, "round")
    if reply.site != Web3.to_checksum_address(sender):
        mismatches.insert(0, "site")
    return ReplyCheck(
        reply=reply,
        on_chain=sub is not None,
        chain_revealed=bool(sub and sub.revealed),
        chain_cid=sub.cid if sub else "",
        chain_sha256=sub.sha256 if sub else "",
        chain_num_samples=sub.num_samples if sub else 0,
        chain_weight=sub.weight if sub else 0,
        mismatches=tuple(mismatches),
    )
