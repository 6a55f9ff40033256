"""From a contract revert to our exception tree.

``ERRORS`` is the one table: every custom error of FederationLedger (by its full Solidity name,
``FederationLedger__...``) maps to one class of ``fedtrail.errors`` and a message template over
its decoded arguments. ``revert_data`` finds the revert bytes in whatever a provider raised,
from structured data only (never by parsing exception text); ``RevertDecoder`` turns them into
the mapped error. The exception classes themselves live in ``fedtrail.errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.crypto import keccak
from web3.exceptions import ContractLogicError

from fedtrail.errors import (
    CommitmentMismatch,
    ContractRevert,
    DuplicateSubmission,
    InvalidArgument,
    InvalidValuation,
    LedgerError,
    PrivacyBudgetError,
    PrivacyBudgetExceeded,
    PrivacySpendRequired,
    RoundStateError,
    SampleLimitExceeded,
    SiteAlreadyRegistered,
    Unauthorized,
)
from fedtrail.ledger.records import checksum, from_bytes32
from fedtrail.protocol.codes import Phase

PREFIX = "FederationLedger__"


@dataclass(frozen=True)
class ErrorRule:
    """How one custom error surfaces: its exception class and a ``str.format`` message over
    its arguments (enum arguments are shown by label)."""

    cls: type[ContractRevert]
    message: str


ERRORS: Mapping[str, ErrorRule] = MappingProxyType(
    {
        f"{PREFIX}NotCoordinator": ErrorRule(
            Unauthorized, "{caller} is not the federation's coordinator"
        ),
        f"{PREFIX}NotPendingCoordinator": ErrorRule(
            Unauthorized, "{caller} was not offered the coordinator role"
        ),
        f"{PREFIX}NotAggregator": ErrorRule(
            Unauthorized, "{caller} is not the federation's aggregator"
        ),
        f"{PREFIX}UnknownSite": ErrorRule(Unauthorized, "{site} is not a registered site"),
        f"{PREFIX}RegisteredAfterOpen": ErrorRule(
            Unauthorized,
            "{site} was registered after round {round} opened; it takes part from the next round",
        ),
        f"{PREFIX}UnknownRound": ErrorRule(RoundStateError, "round {round} does not exist"),
        f"{PREFIX}WrongPhase": ErrorRule(
            RoundStateError, "round {round} is {actual}, the call needs it {expected}"
        ),
        f"{PREFIX}PreviousRoundNotClosed": ErrorRule(
            RoundStateError, "round {round} is still running; finalize or cancel it first"
        ),
        f"{PREFIX}StartModelMismatch": ErrorRule(
            RoundStateError,
            "the new round must start from the last finalized model (sha256 {expected}), "
            "not {given}",
        ),
        f"{PREFIX}CommitWindowTooShort": ErrorRule(
            RoundStateError,
            "a commit window of {commitSeconds} s is shorter than the ledger's minimum round "
            "window, {minimum} s",
        ),
        f"{PREFIX}RevealWindowTooShort": ErrorRule(
            RoundStateError,
            "a reveal window of {revealSeconds} s is shorter than the ledger's minimum round "
            "window, {minimum} s",
        ),
        f"{PREFIX}CommitClosed": ErrorRule(
            RoundStateError, "round {round} closed for commitments at {commitDeadline}"
        ),
        f"{PREFIX}RevealNotOpen": ErrorRule(
            RoundStateError,
            "round {round} takes reveals only after its commit deadline {commitDeadline}",
        ),
        f"{PREFIX}RevealClosed": ErrorRule(
            RoundStateError, "round {round} closed for reveals at {revealDeadline}"
        ),
        f"{PREFIX}RoundStillOpen": ErrorRule(
            RoundStateError,
            "round {round} takes reveals (in a peer round, score reveals) until {revealDeadline} "
            "and not every site revealed",
        ),
        f"{PREFIX}AlreadyCommitted": ErrorRule(
            DuplicateSubmission, "{site} already committed to an update in round {round}"
        ),
        f"{PREFIX}AlreadyRevealed": ErrorRule(
            DuplicateSubmission, "{site} already revealed its update in round {round}"
        ),
        f"{PREFIX}NotCommitted": ErrorRule(
            CommitmentMismatch, "{site} committed to no update in round {round}"
        ),
        f"{PREFIX}CommitmentMismatch": ErrorRule(
            CommitmentMismatch,
            "the revealed update does not match {site}'s commitment in round {round}",
        ),
        f"{PREFIX}TooManySamples": ErrorRule(
            SampleLimitExceeded,
            "{site} claims {numSamples} samples; its maximum is {maxSamples}",
        ),
        f"{PREFIX}SiteAlreadyRegistered": ErrorRule(
            SiteAlreadyRegistered, "{site} is already registered"
        ),
        f"{PREFIX}MaxSamplesTooLarge": ErrorRule(
            InvalidArgument,
            "{site} cannot be allowed {maxSamples} samples an update: the ledger's limit is "
            "{limit}",
        ),
        f"{PREFIX}LengthMismatch": ErrorRule(
            InvalidValuation,
            "valuation arrays differ in length: {sites} sites, {scores} scores, {reasons} reasons",
        ),
        f"{PREFIX}SitesNotSorted": ErrorRule(
            InvalidValuation, "valuation sites must be strictly ascending (position {index})"
        ),
        f"{PREFIX}NotRevealed": ErrorRule(
            InvalidValuation, "{site} revealed no update in round {round}"
        ),
        f"{PREFIX}MissingScores": ErrorRule(
            InvalidValuation,
            "round {round} has {expected} revealed updates but the valuation scores {given}",
        ),
        f"{PREFIX}ScoreOutOfRange": ErrorRule(
            InvalidValuation, "score {score} for {site} is above 1000000"
        ),
        f"{PREFIX}InvalidReason": ErrorRule(
            InvalidValuation,
            "reason code {reason} for {site} is not a reason the ledger records",
        ),
        f"{PREFIX}ScoreReasonMismatch": ErrorRule(
            InvalidValuation,
            "score {score} for {site} disagrees with reason code {reason}: a score is positive "
            "exactly when the reason is OK (0)",
        ),
        f"{PREFIX}ZeroTotalWeight": ErrorRule(
            InvalidValuation,
            "every update of round {round} has weight zero; cancel the round instead",
        ),
        f"{PREFIX}PrivacyBudgetBelowSpent": ErrorRule(
            PrivacyBudgetError,
            "{site} already spent {spent} micro-epsilon; its budget cannot be set to {budget}",
        ),
        f"{PREFIX}PrivacyBudgetTooLarge": ErrorRule(
            PrivacyBudgetError,
            "{site}'s budget {budget} micro-epsilon is over the ledger's limit {limit} "
            "(1,099,511.627775 epsilon)",
        ),
        f"{PREFIX}PrivacySpendRequired": ErrorRule(
            PrivacySpendRequired,
            "{site} has a privacy budget: it must declare its update's epsilon "
            "(revealPrivateUpdate)",
        ),
        f"{PREFIX}PrivacyBudgetExceeded": ErrorRule(
            PrivacyBudgetExceeded,
            "{site} has spent {spent} micro-epsilon; {requested} more would pass its "
            "budget {budget}",
        ),
        f"{PREFIX}ScoreCommitWindowTooShort": ErrorRule(
            RoundStateError,
            "a score commit window of {scoreCommitSeconds} s is shorter than the ledger's "
            "minimum round window, {minimum} s",
        ),
        f"{PREFIX}ScoreRevealWindowTooShort": ErrorRule(
            RoundStateError,
            "a score reveal window of {scoreRevealSeconds} s is shorter than the ledger's "
            "minimum round window, {minimum} s",
        ),
        f"{PREFIX}NotPeerRound": ErrorRule(
            RoundStateError, "round {round} is not a peer round: its aggregator values it"
        ),
        f"{PREFIX}PeerRound": ErrorRule(
            RoundStateError,
            "round {round} is a peer round: its validators value it (recordPeerValuation)",
        ),
        f"{PREFIX}ScoringNotOpen": ErrorRule(
            RoundStateError,
            "round {round} takes scores only after its reveal deadline {revealDeadline}",
        ),
        f"{PREFIX}ScoreCommitClosed": ErrorRule(
            RoundStateError,
            "round {round} closed for score commitments at {scoreCommitDeadline}",
        ),
        f"{PREFIX}ScoreRevealNotOpen": ErrorRule(
            RoundStateError,
            "round {round} takes score reveals only after its score commit deadline "
            "{scoreCommitDeadline}",
        ),
        f"{PREFIX}ScoreRevealClosed": ErrorRule(
            RoundStateError, "round {round} closed for score reveals at {scoreRevealDeadline}"
        ),
        f"{PREFIX}QuorumNotMet": ErrorRule(
            RoundStateError,
            "round {round} has {votes} revealed score vectors; its quorum is {quorum}",
        ),
        f"{PREFIX}GateUndecided": ErrorRule(
            RoundStateError,
            "round {round}: {passed} of its {votes} revealed validators pass the reputation gate, "
            "exactly half or a majority below its quorum {quorum}; it cannot be valued (cancel it "
            "after the score reveal deadline)",
        ),
        f"{PREFIX}ScoresAlreadyCommitted": ErrorRule(
            DuplicateSubmission, "{validator} already committed to scores in round {round}"
        ),
        f"{PREFIX}ScoresAlreadyRevealed": ErrorRule(
            DuplicateSubmission, "{validator} already revealed its scores in round {round}"
        ),
        f"{PREFIX}ScoresNotCommitted": ErrorRule(
            CommitmentMismatch, "{validator} committed to no scores in round {round}"
        ),
        f"{PREFIX}ScoreCommitmentMismatch": ErrorRule(
            CommitmentMismatch,
            "the revealed scores do not match {validator}'s commitment in round {round}",
        ),
        f"{PREFIX}ScoreVectorLength": ErrorRule(
            InvalidValuation,
            "round {round} has {expected} revealed updates but the score vector has {given} "
            "entries",
        ),
        f"{PREFIX}ValidatorsNotSorted": ErrorRule(
            InvalidValuation, "validators must be strictly ascending (position {index})"
        ),
        f"{PREFIX}MissingVotes": ErrorRule(
            InvalidValuation,
            "round {round} has {expected} revealed score vectors but the valuation lists {given}",
        ),
        f"{PREFIX}VoteMismatch": ErrorRule(
            InvalidValuation,
            "the vector given for {validator} is not the one it revealed in round {round}",
        ),
        f"{PREFIX}NotWeighted": ErrorRule(
            InvalidValuation, "{site} has no weighted update in round {round} to drop"
        ),
        f"{PREFIX}DroppedTwice": ErrorRule(
            InvalidValuation,
            "{site} is listed both as withheld and as screened in round {round}: one drop per "
            "update",
        ),
        f"{PREFIX}WrongMedian": ErrorRule(
            InvalidValuation,
            "{supplied} is not the high median of the counted validators' entries for {site} in "
            "round {round}",
        ),
        f"{PREFIX}ZeroAddress": ErrorRule(InvalidArgument, "the zero address is not allowed here"),
        f"{PREFIX}InvalidParameter": ErrorRule(InvalidArgument, "invalid {what}"),
    }
)

_ERROR_STRING = keccak(text="Error(string)")[:4]  # require(cond, "reason") / revert("reason")
_PANIC = keccak(text="Panic(uint256)")[:4]  # failed assert, overflow, ... (a contract bug)
_PHASE_TYPE = "enum FederationLedger.Phase"


@dataclass(frozen=True)
class _Signature:
    name: str
    types: list[str]
    names: list[str]
    internal_types: list[str]


class RevertDecoder:
    """Turns revert bytes into the mapped ``ContractRevert``; selectors come from the ABI."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._by_selector: dict[bytes, _Signature] = {}
        for item in abi:
            if item.get("type") != "error":
                continue
            sig = _Signature(
                name=item["name"],
                types=[i["type"] for i in item["inputs"]],
                names=[i["name"] for i in item["inputs"]],
                internal_types=[i.get("internalType", "") for i in item["inputs"]],
            )
            selector = keccak(text=f"{sig.name}({','.join(sig.types)})")[:4]
            self._by_selector[selector] = sig

    def decode(self, data: bytes) -> ContractRevert | None:
        """The error for ``data``; None when there is no selector (a bare ``revert()``)."""
        if len(data) < 4:
            return None
        selector, payload = data[:4], data[4:]
        try:
            if selector == _ERROR_STRING:
                (reason,) = abi_decode(["string"], payload)
                return ContractRevert("Error", {"reason": reason}, f"contract reverted: {reason}")
            if selector == _PANIC:
                (code,) = abi_decode(["uint256"], payload)
                return ContractRevert(
                    "Panic", {"code": code}, f"contract panicked with code {code:#04x}"
                )
            sig = self._by_selector.get(selector)
            if sig is not None:
                return self._custom(sig, abi_decode(sig.types, payload))
        except DecodingError:
            pass  # a known selector with malformed arguments: report it like an unknown one
        return ContractRevert(
            f"0x{selector.hex()}",
            {"data": f"0x{data.hex()}"},
            f"contract reverted with an error this client does not know "
            f"(selector 0x{selector.hex()}, {len(data)} bytes)",
        )

    @staticmethod
    def _custom(sig: _Signature, values: tuple[Any, ...]) -> ContractRevert:
        args: dict[str, Any] = {}
        shown: dict[str, Any] = {}
        for name, typ, internal, value in zip(
            sig.names, sig.types, sig.internal_types, values, strict=True
        ):
            if typ == "bytes32":
                value = from_bytes32(value)
            elif typ == "address":
                value = checksum(value)
            args[name] = value
            shown[name] = Phase(value).label if internal == _PHASE_TYPE else value
        short = sig.name.removeprefix(PREFIX)
        rule = ERRORS.get(sig.name)
        if rule is None:  # an error the ABI has and the table lacks; tests keep this empty
            return ContractRevert(short, args, f"{sig.name}: {args}")
        return rule.cls(short, args, f"{sig.name}: {rule.message.format(**shown)}")


def revert_data(exc: BaseException) -> bytes | None:
    """The revert bytes carried by whatever a provider raised, or None.

    Structured data only, never parsed from messages: ``ContractLogicError.data`` (web3 over
    JSON-RPC: Anvil, geth) as hex, or as a dict with the hex under ``result`` or ``data``
    (Ganache: ``args[1]["result"]``); ``rpc_response["error"]["data"]``; and py-evm's
    ``Revert(bytes)`` in the exception chain (web3 8 + eth-tester raise no
    ``ContractCustomError``; note that eth-tester's ``eth_call`` keeps only the text, so the
    client replays a reverted view as a gas estimate, which keeps the chain).
    """
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found = _payload(getattr(current, "data", None))
        if found is None:
            response = getattr(current, "rpc_response", None)
            if isinstance(response, dict):
                found = _payload(response.get("error"))
        if found is not None:
            return found
        for arg in current.args:
            if isinstance(arg, bytes | bytearray) and len(arg) >= 4:  # py-evm's Revert
                return bytes(arg)
            if isinstance(arg, dict):
                found = _payload(arg)
                if found is not None:
                    return found
            if isinstance(arg, BaseException):
                queue.append(arg)
        queue.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


def _payload(value: object, depth: int = 0) -> bytes | None:
    """Revert bytes in one provider payload: hex, bytes, or a dict nesting them."""
    if isinstance(value, bytes | bytearray):
        return bytes(value) if len(value) >= 4 else None
    if isinstance(value, str):
        if not value.startswith("0x") or len(value) < 10:
            return None
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    if isinstance(value, dict) and depth < 3:
        for key in ("result", "data"):
            found = _payload(value.get(key), depth + 1)
            if found is not None:
                return found
    return None


def ledger_error(
    exc: BaseException,
    decoder: RevertDecoder,
    what: str,
    *,
    reverted: type[LedgerError] = LedgerError,
) -> LedgerError:
    """The one mapping from a provider's exception to ours: the contract's own error when the
    revert data says which; otherwise ``reverted`` (``TransactionFailed`` for transactions)
    when the provider reports a revert without data, and ``LedgerError`` for anything else."""
    data = revert_data(exc)
    decoded = decoder.decode(data) if data else None
    if decoded is not None:
        return decoded
    return (reverted if looks_like_revert(exc) else LedgerError)(f"{what}: {exc}")


def looks_like_revert(exc: BaseException) -> bool:
    """Whether the provider says the contract reverted (as opposed to a transport failure).
    Only classifies; the revert data itself is never read from the message."""
    return isinstance(exc, ContractLogicError) or "revert" in str(exc).lower()
