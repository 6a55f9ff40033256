"""What the ledger client hands out and takes in: plain frozen records, plus the conversions
between our hex digests / addresses and the contract's bytes32 / checksummed addresses."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from web3 import Web3

from fedtrail.errors import ConfigError
from fedtrail.protocol.codes import Decline, Phase, Reason
from fedtrail.protocol.privacy import EPSILON_SCALE
from fedtrail.protocol.weights import SCORE_SCALE


@dataclass(frozen=True)
class RoundInfo:
    """One round. Sites commit until ``commit_deadline`` and reveal after it until
    ``reveal_deadline``; ``active_at_open`` sites (those registered at open) take part;
    ``submission_count`` counts revealed updates. CIDs come from events."""

    id: int
    phase: Phase
    commit_deadline: int
    reveal_deadline: int
    opened_at: int
    active_at_open: int
    submission_count: int
    start_cid: str
    start_sha256: str
    terms_cid: str
    terms_sha256: str
    global_cid: str
    global_sha256: str
    log_cid: str
    log_sha256: str

    def key(self, ledger: str) -> str:
        """What tells this round of ``ledger`` from round ``id`` of another ledger or of a chain
        restarted and redeployed at the same address (a node's local records name it): the
        ledger's address, the commit deadline and the terms' sha256."""
        return f"{ledger}/{self.commit_deadline}/{self.terms_sha256.removeprefix('0x')}"


@dataclass(frozen=True)
class Submission:
    """One site's commitment in one round and, once revealed, its update.

    ``commit_order`` is the 1-based position of the site's ``UpdateCommitted`` event among the
    round's (chain order: block, log index); duplicates are decided by it. Until revealed,
    ``cid``/``sha256`` are empty and ``num_samples`` is 0; ``score``/``reason``/``weight`` are 0
    until valued."""

    round: int
    site: str
    cid: str
    sha256: str
    num_samples: int
    score: int
    reason: int
    weight: int
    commitment: str
    commit_order: int
    revealed: bool


@dataclass(frozen=True)
class SiteInfo:
    """A site; ``active_from`` is the first round it may take part in, ``max_samples`` the
    most samples it may claim for one update."""

    address: str
    registered: bool
    name: str
    reputation: int
    valued_rounds: int
    max_samples: int
    active_from: int


@dataclass(frozen=True)
class Registrations:
    """Every ``SiteRegistered`` event, in chain order, and where each round was finalized:
    the registry's history read once (:meth:`fedtrail.ledger.Ledger.registrations`), so an
    audit of many rounds does not read every registration again for each (``names_at``).

    ``events``: ((block number, log index), site address, name) per registration;
    ``finalized``: round -> (block number, log index) of its last ``RoundFinalized``."""

    events: tuple[tuple[tuple[int, int], str, str], ...]
    finalized: dict[int, tuple[int, int]]

    def names_at(self, round_id: int) -> dict[str, str]:
        """Site -> its name when ``round_id`` was finalized (its last registration before the
        round's ``RoundFinalized``; every registration read for a round not finalized):
        :meth:`fedtrail.ledger.Ledger.names_at_finalize`'s rule."""
        until = self.finalized.get(round_id)
        names: dict[str, str] = {}
        for position, site, name in self.events:
            if until is not None and position > until:
                break
            names[site] = name
        return names

    def former_names(self, current: dict[str, str]) -> dict[str, list[str]]:
        """Each site's earlier registered names (oldest first, none twice, its ``current``
        name left out; ``current``: address -> name now); sites never renamed left out."""
        earlier: dict[str, list[str]] = {}
        for _, site, name in self.events:
            seen = earlier.setdefault(site, [])
            if name != current.get(site) and name not in seen:
                seen.append(name)
        return {site: names for site, names in earlier.items() if names}


Position = tuple[int, int]
"""Where an event is in the chain: (block number, log index)."""


@dataclass(frozen=True)
class RegistryHistory:
    """The registry's whole history, read once (:meth:`fedtrail.ledger.Ledger.registry_history`)
    so that an audit of many rounds asks it for each round rather than reading the same events
    again per round: the names (``registrations``), every removal, cap and privacy budget the
    coordinator set, and where each round was opened, valued and finalized.

    ``changes``: (position, kind, site, value) per ``SiteRemoved`` (``"removed"``, no value),
    ``MaxSamplesSet`` (``"cap"``) and ``PrivacyBudgetSet`` (``"budget"``, micro-epsilon), in
    chain order; ``opened`` / ``valued``: round -> position of its first ``RoundOpened`` /
    ``RoundValued``; ``stamps``: block number -> timestamp of each block holding a change made
    after some round read here opened (the only ones :meth:`registry_moves` can return)."""

    registrations: Registrations
    changes: tuple[tuple[Position, str, str, int | None], ...]
    opened: dict[int, Position]
    valued: dict[int, Position]
    stamps: dict[int, int]

    def names_at(self, round_id: int) -> dict[str, str]:
        """:meth:`Registrations.names_at`."""
        return self.registrations.names_at(round_id)

    def names_while_finalizing(self, round_id: int) -> dict[str, set[str]]:
        """Site -> every name it was registered under from ``round_id``'s valuation (its first
        ``RoundValued``) to its ``RoundFinalized``: the name it had when the round was valued
        and any it was registered under before the finalize. The aggregator reads the names
        for the round's log in between, so a rename there (attack a66: the coordinator's, even
        front-running the finalize) leaves an honest log with either. Empty for a round not
        finalized or not valued."""
        start = self.valued.get(round_id)
        end = self.registrations.finalized.get(round_id)
        if start is None or end is None:
            return {}
        names: dict[str, set[str]] = {}
        held: dict[str, str] = {}
        for at, site, name in self.registrations.events:  # in chain order
            if at > end:
                break
            if at < start:
                held[site] = name
            else:
                names.setdefault(site, set()).add(name)
        for site, name in held.items():
            names.setdefault(site, set()).add(name)
        return names

    def participants_at_open(self, round_id: int) -> set[str]:
        """The sites registered when ``round_id`` opened (those the contract lets take part in
        it): its registrations and removals before its ``RoundOpened``, in chain order. Empty
        for a round never opened."""
        at = self.opened.get(round_id)
        if at is None:
            return set()
        moves = [(p, site, True) for p, site, _ in self.registrations.events] + [
            (p, site, False) for p, kind, site, _ in self.changes if kind == "removed"
        ]
        registered: set[str] = set()
        for position, site, added in sorted(moves, key=lambda m: m[0]):
            if position > at:
                break
            if added:
                registered.add(site)
            else:
                registered.discard(site)
        return registered

    def registry_moves(self, round_id: int, until: int) -> list[RegistryMove]:
        """The coordinator's changes to site entries (removal, cap, privacy budget) after
        ``round_id``'s ``RoundOpened`` in blocks stamped at or before ``until`` (a chain
        timestamp: the round's reveal deadline), in chain order: each binds the next commitment
        or reveal of its site, so one made inside the round can void a commitment already on
        chain (attack a65). Empty for a round never opened."""
        at = self.opened.get(round_id)
        if at is None:
            return []
        moves = []
        for position, kind, site, value in self.changes:
            if position <= at:
                continue
            stamp = self.stamps[position[0]]
            if stamp > until:
                break  # blocks are stamped in order: every later one is past the deadline
            moves.append(RegistryMove(site, kind, value, position[0], stamp))
        return moves


@dataclass(frozen=True)
class PeerRoundInfo:
    """A peer round's scoring record: validators commit to their score vectors until
    ``score_commit_deadline`` and reveal them until ``score_reveal_deadline``; at least
    ``quorum`` revealed vectors (``vote_count``) are needed to value the round;
    ``commit_count`` counts the commitments."""

    score_commit_deadline: int
    score_reveal_deadline: int
    quorum: int
    commit_count: int
    vote_count: int


@dataclass(frozen=True)
class ValidatorStanding:
    """A site's standing as a validator: the EMA of its agreement with the peer medians (over
    ``SCORE_SCALE``) and the number of peer rounds it was rated in (0: never rated)."""

    reputation: int
    rated_rounds: int


@dataclass(frozen=True)
class SiteRoundView:
    """What a site node reads at each step of a round (:meth:`Ledger.site_round`), read at one
    moment: the round, the site's commitment in it (None: none), the pending block's timestamp
    (the one a transaction sent now is mined with), the last finalized round, the site's
    privacy account and its cap."""

    info: RoundInfo
    submission: Submission | None
    pending_timestamp: int
    last_finalized: int
    privacy: PrivacyAccount
    max_samples: int | None = None
    """The site's cap on chain (``maxSamples``: the most samples a reveal may claim); None
    for an address the ledger does not know."""
    peer: PeerRoundInfo | None = None
    """The round's peer record (as :meth:`Ledger.get_peer_round`; None for an aggregator
    round): what the node holds the terms' valuation mode and score windows against before it
    trains (a132, a133, a139), read in the same batch (issue 18: a request of its own before)."""


@dataclass(frozen=True)
class RoundPoll:
    """What the aggregator reads at each poll (:meth:`Ledger.round_poll`), read at one moment:
    the current and the last finalized round, the pending block's timestamp, and the record of
    the round the caller asked about (``info``; None unless it is the current round, or when
    none was asked) with its peer record (``peer``: None for an aggregator round, and when
    ``info`` is None or it was not asked)."""

    current: int
    last_finalized: int
    pending_timestamp: int
    info: RoundInfo | None = None
    peer: PeerRoundInfo | None = None
    peer_read: bool = False
    """Whether ``peer`` is the chain's answer (asked, and ``info`` read): None then means an
    aggregator round; without it None says nothing."""
    submissions: tuple[Submission, ...] | None = None
    """The round's revealed updates (as :meth:`Ledger.get_submissions` gives them), when asked
    and ``info`` read; else None."""


@dataclass(frozen=True)
class PrivacyAccount:
    """A site's privacy account on chain, in micro-epsilon (``EPSILON_SCALE`` per epsilon):
    its budget (0: none, the spend is recorded but not capped) and its cumulative declared
    spend (the sum over its private reveals; never reset)."""

    budget_micro: int
    spent_micro: int

    @property
    def used(self) -> bool:
        """Whether the site has a budget or has declared any spend."""
        return bool(self.budget_micro or self.spent_micro)

    def to_json(self) -> dict[str, Any]:
        """Budget and spend in micro-epsilon (as on chain) and in epsilon (budget None: none)."""
        return {
            "budget_micro": self.budget_micro,
            "budget_epsilon": self.budget_micro / EPSILON_SCALE if self.budget_micro else None,
            "spent_micro": self.spent_micro,
            "spent_epsilon": self.spent_micro / EPSILON_SCALE,
        }

    def describe(self) -> str:
        """One line for people: ``epsilon 2.5 spent of a budget of 8`` (or without a budget)."""
        spent = f"epsilon {_epsilon_text(self.spent_micro)} spent"
        if not self.budget_micro:
            return f"{spent}, no budget"
        return f"{spent} of a budget of {_epsilon_text(self.budget_micro)}"


def _epsilon_text(micro: int) -> str:
    """Micro-epsilon as exact epsilon text: 1750001 -> ``1.750001``, 8000000 -> ``8``."""
    return f"{micro / EPSILON_SCALE:.6f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class PrivacySpend:
    """One private reveal's charge: the epsilon ``site``'s update in ``round`` spent and the
    site's cumulative spend after it, both in micro-epsilon (from a ``PrivacySpent`` event)."""

    round: int
    site: str
    epsilon_micro: int
    total_micro: int


@dataclass(frozen=True)
class Valuation:
    """What the aggregator posts for one revealed update: a score in [0, SCORE_SCALE] and a
    reason; the score is positive exactly when the reason is OK (the contract refuses
    anything else, so the client refuses it before sending)."""

    site: str
    score: int
    reason: int

    def __post_init__(self) -> None:
        if not 0 <= self.score <= SCORE_SCALE:
            raise ConfigError(f"score {self.score} outside 0..{SCORE_SCALE}")
        try:
            reason = Reason(self.reason)
        except ValueError as exc:
            raise ConfigError(f"reason code {self.reason} is not a Reason") from exc
        if reason is Reason.NOT_REVEALED:
            raise ConfigError("NOT_REVEALED is never posted: an unrevealed update is not valued")
        if reason in (Reason.PEER_REJECTED, Reason.WITHHELD):
            raise ConfigError(
                f"{reason.name} is posted by the contract itself in a peer round, never by an "
                "aggregator"
            )
        if (self.score > 0) != (reason is Reason.OK):
            raise ConfigError(
                f"score {self.score} disagrees with reason {reason.name}: the score is "
                "positive exactly when the reason is OK"
            )


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    logs: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    """The receipt's logs as mined (any contract's, undecoded): what the transaction emitted,
    read without another request (:meth:`~fedtrail.ledger.Ledger.round_opened`)."""


@dataclass(frozen=True)
class LedgerEvent:
    name: str
    block_number: int
    tx_hash: str
    log_index: int
    args: dict[str, Any]


@dataclass(frozen=True)
class RegistryMove:
    """A coordinator's change to a site's registry entry inside a round's windows (after its
    ``RoundOpened``, in a block stamped at or before its reveal deadline): ``kind`` is
    ``"removed"`` (``SiteRemoved``; a site registered again in the round takes part only from
    the next), ``"cap"`` (``MaxSamplesSet``, ``value`` the new cap) or ``"budget"``
    (``PrivacyBudgetSet``, ``value`` in micro-epsilon). Each applies to the site's next
    commitment or reveal, so a site that committed before it may no longer reveal (attack a65)."""

    site: str
    kind: str
    value: int | None
    block_number: int
    timestamp: int


@dataclass(frozen=True)
class Deployment:
    """What an operator needs to reach a deployed ledger; written as JSON by ``chain deploy``."""

    address: str
    chain_id: int
    block_number: int
    tx_hash: str
    coordinator: str
    aggregator: str
    reputation_alpha: int
    min_round_window: int
    artifact_sha256: str
    rpc_url: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Deployment:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"deployment file {path} does not exist") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"deployment file {path} is not a fedtrail deployment: not JSON ({exc})"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"deployment file {path} cannot be read: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(
                f"deployment file {path} is not a fedtrail deployment: "
                f"a JSON {type(raw).__name__}, not an object"
            )
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - set(raw))
        unknown = sorted(set(raw) - known)
        if missing or unknown:
            parts = [f"missing {missing}"] if missing else []
            parts += [f"unknown {unknown}"] if unknown else []
            raise ConfigError(
                f"deployment file {path} is not a fedtrail deployment: "
                f"field(s) {'; '.join(parts)} (`fedtrail chain deploy --out` writes one)"
            )
        return cls(**raw)


def to_bytes32(hex_digest: str) -> bytes:
    """A 64-hex-digit sha256 (optionally 0x-prefixed) as the contract's bytes32."""
    digest = hex_digest.removeprefix("0x")
    if len(digest) != 64:
        raise ConfigError(f"expected a 32-byte hex digest, got {hex_digest!r}")
    try:
        return bytes.fromhex(digest)
    except ValueError as exc:
        raise ConfigError(f"not a hex digest: {hex_digest!r}") from exc


def from_bytes32(value: bytes) -> str:
    return bytes(value).hex()


def checksum(address: str) -> str:
    """``address`` in EIP-55 form; ConfigError when it is none, or when it is written in mixed
    case that fails its EIP-55 checksum (all lower or all upper case carries none). Cached: a
    100-site audit checksums the same addresses over a thousand times (a keccak each)."""
    if isinstance(address, str):
        return _checksum(address)
    if not Web3.is_address(address):
        raise ConfigError(f"not an Ethereum address: {address!r}")
    return str(Web3.to_checksum_address(address))


@lru_cache(maxsize=8192)
def _checksum(address: str) -> str:
    if not Web3.is_address(address):
        raise ConfigError(f"not an Ethereum address: {address!r}")
    found = str(Web3.to_checksum_address(address))
    digits = address.removeprefix("0x").removeprefix("0X")
    if digits not in (digits.lower(), digits.upper()) and "0x" + digits != found:
        # EIP-55: mixed case is a checksum, and this one fails it (a mistyped digit, most
        # likely); web3 took it as the address it spells, so `chain fund` sent ETH there
        raise ConfigError(
            f"{address!r} fails its EIP-55 checksum (its mixed case does not match its "
            "digits): a mistyped character? Copy the address again from its source"
        )
    return found


def commitment(site: str, round_id: int, sha256: str, num_samples: int) -> str:
    """The commitment a site posts before revealing: hex of
    ``keccak256(abi.encode(site, round, sha256, numSamples))`` with the contract's types
    (address, uint256, bytes32, uint64), exactly as ``revealUpdate`` recomputes it."""
    if not 0 < round_id < 2**256:
        raise ConfigError(f"round {round_id} is not a round id")
    if not 0 <= num_samples < 2**64:
        raise ConfigError(f"sample count {num_samples} does not fit the contract's uint64")
    encoded = abi_encode(
        ["address", "uint256", "bytes32", "uint64"],
        [checksum(site), round_id, to_bytes32(sha256), num_samples],
    )
    return keccak(encoded).hex()


DECLINE_TAG = keccak(b"fedtrail.decline/1")
"""The first word of a decline commitment's preimage: five words where an update commitment has
four, so no reveal (which recomputes the four-word hash) can open a decline."""


def decline_commitment(site: str, round_id: int, terms_sha256: str, reason: Decline) -> str:
    """The commitment a site posts instead of an update when it refuses the round's terms: hex
    of ``keccak256(abi.encode(tag, site, round, termsSha256, reason))`` (bytes32, address,
    uint256, bytes32, uint8). It takes the site's one commitment of the round, is never
    revealed, and anyone can read the reason back (:func:`read_decline`)."""
    if not 0 < round_id < 2**256:
        raise ConfigError(f"round {round_id} is not a round id")
    encoded = abi_encode(
        ["bytes32", "address", "uint256", "bytes32", "uint8"],
        [DECLINE_TAG, checksum(site), round_id, to_bytes32(terms_sha256), int(reason)],
    )
    return keccak(encoded).hex()


def read_decline(
    commitment_hex: str, site: str, round_id: int, terms_sha256: str
) -> Decline | None:
    """The reason a commitment declares, when it is ``site``'s decline of ``round_id``'s terms
    (None: it is not one: an update's commitment, or a decline of other terms)."""
    want = commitment_hex.removeprefix("0x").lower()
    for reason in Decline:
        if decline_commitment(site, round_id, terms_sha256, reason) == want:
            return reason
    return None


def declines_among(
    submissions: Iterable[Submission], round_id: int, terms_sha256: str
) -> dict[str, Decline]:
    """Site -> the reason declared by each unrevealed commitment in ``submissions`` that is
    its site's :func:`decline_commitment` of ``round_id``'s terms (a commitment never revealed
    that is not one stays unexplained: a crash, or a site that gave up)."""
    out: dict[str, Decline] = {}
    for sub in submissions:
        if not sub.revealed:
            reason = read_decline(sub.commitment, sub.site, round_id, terms_sha256)
            if reason is not None:
                out[sub.site] = reason
    return out


def score_commitment(validator: str, round_id: int, scores: Sequence[int], salt: bytes) -> str:
    """The commitment a validator posts before revealing its score vector: hex of
    ``keccak256(abi.encode(validator, round, scores, salt))`` with the contract's types
    (address, uint256, uint32[], bytes32), exactly as ``revealScores`` recomputes it."""
    if not 0 < round_id < 2**256:
        raise ConfigError(f"round {round_id} is not a round id")
    if any(not 0 <= int(x) <= SCORE_SCALE for x in scores):
        raise ConfigError(f"a score is outside 0..{SCORE_SCALE}")
    if len(salt) != 32:
        raise ConfigError(f"the salt must be 32 bytes, not {len(salt)}")
    encoded = abi_encode(
        ["address", "uint256", "uint32[]", "bytes32"],
        [checksum(validator), round_id, [int(x) for x in scores], bytes(salt)],
    )
    return keccak(encoded).hex()


def score_vote_hash(round_id: int, validator: str, scores: Sequence[int]) -> str:
    """What the contract stores for a revealed score vector: hex of
    ``keccak256(abi.encode(round, validator, scores))`` (uint256, address, uint32[])."""
    encoded = abi_encode(
        ["uint256", "address", "uint32[]"],
        [round_id, checksum(validator), [int(x) for x in scores]],
    )
    return keccak(encoded).hex()


def pack_scores(scores: Sequence[int]) -> bytes:
    """A score vector as ``recordPeerValuation`` takes it: 4 bytes an entry, big-endian
    (``abi.encodePacked`` of the uint32 entries); the contract rebuilds
    :func:`score_vote_hash`'s encoding from it. One 32-byte ABI word an entry cost 8 times the
    calldata."""
    if any(not 0 <= int(x) <= SCORE_SCALE for x in scores):
        raise ConfigError(f"a score is outside 0..{SCORE_SCALE}")
    return b"".join(int(x).to_bytes(4, "big") for x in scores)
