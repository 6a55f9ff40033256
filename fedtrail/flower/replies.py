"""What a site's ClientApp answers the ServerApp, and the check of that answer against the chain.

A reply is a claim: "in round r, site S committed / revealed the update at CID c with sha256 h
and n samples", signed with the site's own key (EIP-191 over
:func:`fedtrail.protocol.evidence.reply_text`, bound to the chain, the ledger and the round).
Flower delivers it, but nothing in it is trusted: :func:`check_reply` compares every field with
the site's on-chain submission and recovers the signer, and the ServerApp acts only on the chain.

- A reply whose signature does not recover to the site it names (unsigned, altered on the way,
  or forged) is unattributable: reported and ignored, never held against the site.
- A correctly signed reply that contradicts the site's revealed on-chain update is the site's
  own lie: the ServerApp hands it to the aggregator service as evidence, the site's update that
  round is scored 0 (``Reason.CONTRADICTED``) and the signed reply goes into the round's log,
  where ``audit verify`` re-checks it. So a SuperNode that lies in its reply gets no weight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedtrail.errors import FedtrailError
from fedtrail.ledger import Ledger, Submission
from fedtrail.protocol.evidence import (
    ChainUpdate,
    InvalidEvidence,
    SignedReply,
    contradictions,
    recover_signer,
    sign_reply,
)

PHASES = ("committed", "revealed", "none")
"""What a reply may claim: a commitment only (after the commit message), a revealed update
(after the reveal message), or nothing (the site did not take part, with a note why)."""


MAX_FIELD_CHARS = {"cid": 256, "sha256": 66, "signature": 132, "note": 2000}
"""The longest string a reply field may hold (a CID is under 100 characters, a sha256 64 hex
digits with an optional 0x, a signature 65 bytes in hex). A site's signed reply that
contradicts the chain goes into the round's log as evidence: unbounded, one signed 33 MB "CID"
made the log larger than any auditor reads (``MAX_LOG_BYTES``) and the round unverifiable."""


def _short(value: Any, most: int = 80) -> str:
    """``repr(value)`` cut to ``most`` characters: an error names what a sender sent, and the
    round report keeps the error, so a sender's megabytes stay out of both."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."


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
    signature: str = ""
    """The site's EIP-191 signature over :meth:`signed` (hex; empty: unsigned)."""

    def __post_init__(self) -> None:
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 1:
            raise InvalidReply(f"reply round must be a positive integer, got {_short(self.round)}")
        if not isinstance(self.site, str) or not Web3.is_address(self.site):
            raise InvalidReply(f"reply site is not an address: {_short(self.site)}")
        object.__setattr__(self, "site", str(Web3.to_checksum_address(self.site)))
        if self.phase not in PHASES:
            raise InvalidReply(f"reply phase must be one of {PHASES}, got {_short(self.phase)}")
        n = self.num_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidReply(f"reply num_samples must be an integer >= 0, got {_short(n)}")
        for name, most in MAX_FIELD_CHARS.items():
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidReply(f"reply {name} must be a string")
            if len(value) > most:
                raise InvalidReply(f"reply {name} is {len(value)} characters, over {most}")

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
        known = {"round", "site", "phase", "cid", "sha256", "num_samples", "note", "signature"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InvalidReply(f"reply has unknown fields {_short(unknown)}")
        try:
            return cls(**doc)
        except TypeError as exc:
            raise InvalidReply(f"reply is incomplete: {exc}") from None

    def signed(self, *, chain_id: int, ledger: str) -> SignedReply:
        """The statement the signature covers, bound to ``ledger`` on ``chain_id``; raises
        :class:`InvalidReply` for fields the signed form cannot carry."""
        try:
            return SignedReply(
                chain_id=chain_id,
                ledger=ledger,
                round=self.round,
                phase=self.phase,
                site=self.site,
                cid=self.cid,
                sha256=self.sha256,
                num_samples=self.num_samples,
                signature=self.signature,
            )
        except InvalidEvidence as exc:
            raise InvalidReply(f"reply cannot be signed: {exc}") from None


def sign(reply: SiteReply, account: LocalAccount, *, chain_id: int, ledger: str) -> SiteReply:
    """``reply`` signed with the site's key (what the ClientApp sends)."""
    try:
        signed = sign_reply(account, reply.signed(chain_id=chain_id, ledger=ledger))
    except InvalidEvidence as exc:
        raise InvalidReply(str(exc)) from None
    return replace(reply, signature=signed.signature)


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
    signer: str = ""
    """The address the signature recovers to (empty: unsigned or not a valid signature)."""
    evidence: bool = False
    """Signed by the site it names, and contradicting that site's revealed update: the site's
    own lie, handed to the aggregator service (which re-checks it against the chain)."""

    @property
    def attributable(self) -> bool:
        """The signature recovers to the site the reply names."""
        return bool(self.signer) and self.signer == self.reply.site

    @property
    def truthful(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["mismatches"] = list(self.mismatches)
        doc["truthful"] = self.truthful
        doc["attributable"] = self.attributable
        return doc


def _revealed(sub: Submission | None) -> ChainUpdate | None:
    """The chain's revealed update in ``sub`` (None: nothing revealed)."""
    if sub is None or not sub.revealed:
        return None
    return ChainUpdate(cid=sub.cid, sha256=sub.sha256, num_samples=sub.num_samples)


def compare(reply: SiteReply, sub: Submission | None) -> tuple[str, ...]:
    """The fields where ``reply`` differs from the chain's submission ``sub`` (None: the site
    has nothing on chain for the round): a claim of nothing against a submission, a claim of
    anything against none, and otherwise what :func:`contradictions` finds (the same rule the
    evidence check applies)."""
    if reply.phase == "none":
        return () if sub is None else ("phase",)
    if sub is None:
        return ("phase",)
    return contradictions(reply, _revealed(sub))


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
    statement: SignedReply | None
    try:
        statement = reply.signed(chain_id=ledger.chain_id, ledger=ledger.address)
    except InvalidReply:
        statement = None
    signer = (recover_signer(statement) if statement is not None else None) or ""
    evidence = False
    if statement is not None and signer == reply.site and reply.round == round_id:
        own = sub if reply.site == Web3.to_checksum_address(sender) else None
        if own is None:
            own = ledger.get_submission(round_id, reply.site)
        evidence = bool(contradictions(statement, _revealed(own)))
    return ReplyCheck(
        reply=reply,
        on_chain=sub is not None,
        chain_revealed=bool(sub and sub.revealed),
        chain_cid=sub.cid if sub else "",
        chain_sha256=sub.sha256 if sub else "",
        chain_num_samples=sub.num_samples if sub else 0,
        chain_weight=sub.weight if sub else 0,
        mismatches=tuple(mismatches),
        signer=signer,
        evidence=evidence,
    )
