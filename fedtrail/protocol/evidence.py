"""A site's signed Flower reply, and when it is evidence against the site (one home for both).

A site's ClientApp signs what it replies to the ServerApp with the site's own Ethereum key
(EIP-191 ``personal_sign`` over :func:`reply_text`: a fixed domain prefix, the chain id, the
ledger's address, the round, the phase, the site's address, the CID, sha256 and sample count).
Only that key can produce the signature, so a signed reply is the site's own statement and no
one on the path (a SuperNode, the SuperLink, the aggregator) can forge or alter it.

- A reply whose signature does not recover to the site it names is unattributable: the
  ServerApp ignores and reports it, and it is never evidence.
- A correctly signed reply that claims a revealed update the chain contradicts (another CID,
  sha256 or sample count, or a reveal the chain does not hold) is evidence: the site's update
  that round is scored 0 with ``Reason.CONTRADICTED`` and the signed reply is written into the
  round's explanation log, where ``audit verify`` re-checks signature and contradiction.

The aggregator service, the ServerApp and the auditor all use :func:`evidence_problems`, so they
agree on what counts. A reply claiming only a commitment, or nothing, is never evidence (an
honest node that gives up before revealing says so).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address

from fedtrail.errors import FedtrailError

__all__ = [
    "REPLY_DOMAIN",
    "ChainUpdate",
    "Evidence",
    "InvalidEvidence",
    "SignedReply",
    "applicable",
    "contradictions",
    "evidence_problems",
    "recover_signer",
    "reply_text",
    "sign_reply",
]

REPLY_DOMAIN = "fedtrail flower reply v1"
"""The first line of every signed reply: a signature over it means nothing anywhere else."""

PHASES = ("committed", "revealed", "none")


class InvalidEvidence(FedtrailError):
    """A signed reply that is not well formed (fields, types, signature encoding)."""


def _norm_sha(value: str) -> str:
    return value.lower().removeprefix("0x")


@dataclass(frozen=True, kw_only=True)
class SignedReply:
    """What a site states about one round, bound to one ledger on one chain, and its signature
    (hex, 65 bytes; empty: unsigned)."""

    chain_id: int
    ledger: str
    round: int
    phase: str
    site: str
    cid: str = ""
    sha256: str = ""
    num_samples: int = 0
    signature: str = ""

    _FIELDS = (
        "chain_id",
        "ledger",
        "round",
        "phase",
        "site",
        "cid",
        "sha256",
        "num_samples",
        "signature",
    )

    def __post_init__(self) -> None:
        for name in ("chain_id", "round", "num_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidEvidence(f"signed reply {name} must be an integer >= 0, got {v!r}")
        for name in ("ledger", "site"):
            v = getattr(self, name)
            if not isinstance(v, str) or not is_address(v):
                raise InvalidEvidence(f"signed reply {name} is not an address: {v!r}")
            object.__setattr__(self, name, str(to_checksum_address(v)))
        if self.phase not in PHASES:
            raise InvalidEvidence(f"signed reply phase must be one of {PHASES}: {self.phase!r}")
        for name in ("cid", "sha256", "signature"):
            v = getattr(self, name)
            if not isinstance(v, str) or "\n" in v:
                raise InvalidEvidence(f"signed reply {name} must be a one-line string")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._FIELDS}

    @classmethod
    def from_json(cls, doc: Any) -> SignedReply:
        """Parses an untrusted mapping; :class:`InvalidEvidence` for anything malformed."""
        if not isinstance(doc, dict):
            raise InvalidEvidence("signed reply is not an object")
        unknown = sorted(set(doc) - set(cls._FIELDS))
        if unknown:
            raise InvalidEvidence(f"signed reply has unknown fields {unknown}")
        try:
            return cls(**doc)
        except TypeError as exc:
            raise InvalidEvidence(f"signed reply is incomplete: {exc}") from None


def reply_text(reply: SignedReply) -> str:
    """The canonical text that is signed: one ``key: value`` line per field after the domain."""
    return "\n".join(
        (
            REPLY_DOMAIN,
            f"chain_id: {reply.chain_id}",
            f"ledger: {reply.ledger}",
            f"round: {reply.round}",
            f"phase: {reply.phase}",
            f"site: {reply.site}",
            f"cid: {reply.cid}",
            f"sha256: {_norm_sha(reply.sha256)}",
            f"num_samples: {reply.num_samples}",
        )
    )


def sign_reply(account: LocalAccount, reply: SignedReply) -> SignedReply:
    """``reply`` signed with ``account`` (the site's own key; it must be the reply's site)."""
    if to_checksum_address(account.address) != reply.site:
        raise InvalidEvidence(f"account {account.address} cannot sign for site {reply.site}")
    signed = account.sign_message(encode_defunct(text=reply_text(reply)))
    sig = "0x" + bytes(signed.signature).hex()
    return SignedReply(**{**reply.to_json(), "signature": sig})


def recover_signer(reply: SignedReply) -> str | None:
    """The address whose key signed ``reply``; None when unsigned or not a valid signature."""
    if not reply.signature:
        return None
    try:
        raw = bytes.fromhex(reply.signature.removeprefix("0x"))
        addr = Account.recover_message(encode_defunct(text=reply_text(reply)), signature=raw)
    except Exception:  # any failure to recover (bad length, bad v/r/s) means "no signer"
        return None
    return str(to_checksum_address(addr))


@dataclass(frozen=True, kw_only=True)
class ChainUpdate:
    """A site's revealed update as the chain records it."""

    cid: str
    sha256: str
    num_samples: int


class Claim(Protocol):
    """What a reply claims about the site's update (a :class:`SignedReply` or the Flower wire
    record carrying the same fields)."""

    @property
    def phase(self) -> str: ...
    @property
    def cid(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def num_samples(self) -> int: ...


def contradictions(reply: Claim, chain: ChainUpdate | None) -> tuple[str, ...]:
    """The fields in which a reply claiming a revealed update contradicts the chain's revealed
    update of that site and round (``chain`` None: the chain holds no revealed update, and the
    claim itself is the contradiction, ``phase``). Replies claiming less than a reveal
    contradict nothing."""
    if reply.phase != "revealed":
        return ()
    if chain is None:
        return ("phase",)
    out = []
    if reply.cid != chain.cid:
        out.append("cid")
    if _norm_sha(reply.sha256) != _norm_sha(chain.sha256):
        out.append("sha256")
    if reply.num_samples != chain.num_samples:
        out.append("num_samples")
    return tuple(out)


def evidence_problems(
    reply: SignedReply,
    *,
    chain_id: int,
    ledger: str,
    round_id: int,
    site: str,
    chain: ChainUpdate | None,
) -> list[str]:
    """Why ``reply`` is not evidence that ``site`` contradicted the chain in ``round_id`` of
    this ledger (empty: it is). Checks the binding (chain, ledger, round, site), that the
    signature recovers to the site, and that the reply contradicts the chain's record."""
    problems = []
    if reply.chain_id != chain_id:
        problems.append(f"signed for chain {reply.chain_id}, not {chain_id}")
    if reply.ledger.lower() != ledger.lower():
        problems.append(f"signed for ledger {reply.ledger}, not {ledger}")
    if reply.round != round_id:
        problems.append(f"signed for round {reply.round}, not {round_id}")
    if reply.site.lower() != site.lower():
        problems.append(f"names site {reply.site}, not {site}")
    signer = recover_signer(reply)
    if signer is None or signer.lower() != reply.site.lower():
        problems.append(
            "unsigned"
            if not reply.signature
            else f"the signature recovers to {signer or 'nothing'}, not the site"
        )
    if not contradictions(reply, chain):
        problems.append("the reply agrees with the chain (or claims no reveal)")
    return problems


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """A site's signed reply that contradicts its on-chain submission, and the fields it
    contradicts: what the round's explanation log records, and why the site's update is scored 0
    with ``Reason.CONTRADICTED``."""

    reply: SignedReply
    contradicts: tuple[str, ...]

    @property
    def site(self) -> str:
        return self.reply.site

    @property
    def detail(self) -> str:
        """The explanation written for the site's score."""
        r = self.reply
        return (
            f"the site signed a Flower reply (cid {r.cid or '-'}, {r.num_samples} samples) that "
            f"contradicts its on-chain submission in {', '.join(self.contradicts)}; the signed "
            "reply is in this log's evidence"
        )

    def to_json(self) -> dict[str, Any]:
        return {"reply": self.reply.to_json(), "contradicts": list(self.contradicts)}

    @classmethod
    def from_json(cls, doc: Any) -> Evidence:
        if not isinstance(doc, dict) or set(doc) != {"reply", "contradicts"}:
            raise InvalidEvidence("evidence must be an object with reply and contradicts")
        fields = doc["contradicts"]
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise InvalidEvidence("evidence contradicts must be a list of field names")
        return cls(reply=SignedReply.from_json(doc["reply"]), contradicts=tuple(fields))


def applicable(
    replies: Iterable[SignedReply],
    *,
    chain_id: int,
    ledger: str,
    round_id: int,
    updates: Mapping[str, ChainUpdate],
) -> list[Evidence]:
    """The replies that are evidence against a site with a valued update in ``updates`` (the
    chain's revealed updates of the round, by site address), at most one per site (the first),
    in site order. The aggregator applies exactly these; the auditor recomputes them."""
    by_site = {k.lower(): (k, v) for k, v in updates.items()}
    found: dict[str, Evidence] = {}
    for reply in replies:
        key = reply.site.lower()
        if key in found or key not in by_site:
            continue
        site, chain = by_site[key]
        problems = evidence_problems(
            reply, chain_id=chain_id, ledger=ledger, round_id=round_id, site=site, chain=chain
        )
        if not problems:
            found[key] = Evidence(reply=reply, contradicts=contradictions(reply, chain))
    return [found[k] for k in sorted(found)]
