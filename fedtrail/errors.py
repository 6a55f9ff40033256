"""One exception tree for the whole project.

Library code raises these; only the CLI turns them into exit codes. Every class says what went
wrong in words an operator can act on; the message never contains key material.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final


class FedtrailError(Exception):
    """Root of every error fedtrail raises on purpose."""


class ConfigError(FedtrailError):
    """A configuration file, flag or data path is missing or invalid."""


class KeystoreError(FedtrailError):
    """A keystore cannot be read or created."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not decrypt the keystore."""


# ---------------------------------------------------------------- chain


class LedgerError(FedtrailError):
    """Talking to the chain or the FederationLedger contract failed."""


class ChainUnreachable(LedgerError):
    """The JSON-RPC endpoint does not answer."""


class ChainFault(LedgerError):
    """The chain's endpoint answered a read, but with what asking again will not change: an
    answer that does not decode, a request it refuses (a method, a block tag such as
    ``pending`` or an argument it does not serve), a contract that reverts without saying
    why, a page that is no JSON-RPC answer. Daemons stop on it, with this message, where they
    retry an endpoint that does not answer (:func:`chain_read_error`)."""


class ContractNotFound(LedgerError):
    """No FederationLedger code at the configured address."""


class DeploymentMismatch(LedgerError):
    """A deployment file disagrees with the chain about the contract's creation (its block or
    transaction): a later block would hide every event before it from the readers."""


class TransactionFailed(LedgerError):
    """A transaction was mined but failed, or was never mined."""


TRANSIENT_RPC_CODES: Final = frozenset({-32603, -32005, -32002})
"""JSON-RPC error codes a node answers for its own passing trouble (EIP-1474: internal error,
limit exceeded, resource unavailable): the same read may succeed later."""

TRANSIENT_RPC_MESSAGES: Final = (
    "header not found",
    "missing trie node",
    "unknown block",
    "block not found",
    "timed out",
    "timeout",
    "try again",
    "busy",
    "syncing",
    "rate limit",
    "too many requests",
)
"""Words of a JSON-RPC error that is passing whatever its code: geth and its forks answer
-32000 "header not found" or "missing trie node" for a block or state a restarting or
load-balanced node does not hold yet (a reorg, a restart, a backend behind the one that
answered the last read), "request timed out" for a slow read. Ending a hospital's daemon on
one of these at night is worse than asking again at the next poll."""


def transient_rpc_error(error: object) -> bool:
    """Whether a JSON-RPC ``error`` object says the same read may succeed later: its code is
    one of :data:`TRANSIENT_RPC_CODES`, or it is a server error (-32099..-32000) whose
    message holds one of :data:`TRANSIENT_RPC_MESSAGES`."""
    if not isinstance(error, dict):
        return False
    code = error.get("code")
    if code in TRANSIENT_RPC_CODES:
        return True
    # the words count in the implementation-defined server errors only (-32099..-32000):
    # a standard code (-32602 invalid params, -32601 no such method) means what it says
    server = isinstance(code, int) and -32099 <= code <= -32000
    message = error.get("message")
    return (
        server
        and isinstance(message, str)
        and any(m in message.lower() for m in TRANSIENT_RPC_MESSAGES)
    )


TRANSIENT_HTTP_STATUSES: Final = frozenset({408, 425, 429})
"""HTTP statuses below 500 that say "later" (timeout, too early, too many requests); every
5xx says so too. Any other 4xx (a wrong path, a refused login) stays until someone fixes it."""


_URL_PASSWORD = re.compile(r"(://[^/@\s:]*):[^/@\s]*@")


def without_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL in it shown as
    ``***``: an endpoint's login (which requests sends as basic auth) leaves no error message,
    log line or daemon state file; ``requests`` keeps it in the URLs its errors quote."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def chain_read_error(exc: BaseException, what: str) -> LedgerError:
    """The one mapping from whatever a chain read raised to the error the daemons act on:
    ``ChainUnreachable`` when no usable answer came (a refused or reset connection, a timeout,
    an HTTP 5xx, 408 or 429, a body empty or cut short), ``LedgerError`` for a JSON-RPC error
    the node says is passing (:func:`transient_rpc_error`) or a block it does not hold yet:
    both are retried at the next poll; :class:`ChainFault` for anything else, which no
    retry changes (a read that used to be wrapped as retryable kept a daemon logging "will
    retry" forever at a contract that is not ours or an endpoint that refuses the
    ``pending`` block). A ``LedgerError`` raised inside the read is kept as it is.
    Duck-typed (``requests``' and web3's exceptions are not imported here)."""
    if isinstance(exc, LedgerError):
        return exc
    if _no_answer(exc) or _cut_short(exc):
        return ChainUnreachable(
            without_passwords(f"{what}: no usable answer from the endpoint ({exc})")
        )
    response = getattr(exc, "rpc_response", None)
    error = response.get("error") if isinstance(response, dict) else None
    if transient_rpc_error(error) or type(exc).__name__ in _PASSING_NAMES:
        return LedgerError(without_passwords(f"{what}: {exc}"))
    return ChainFault(
        without_passwords(f"{what}: {exc} (not retried: asking again gives the same answer)")
    )


def _no_answer(exc: BaseException) -> bool:
    """Whether ``exc`` is a transport failure that a later attempt may not meet: an OSError
    (``requests``' connection errors, timeouts and HTTP errors are OSErrors) other than an HTTP
    status that stays or a body that is no JSON; or a timeout another library raised."""
    if isinstance(exc, TimeoutError) or type(exc).__name__ in _TIMEOUT_NAMES:
        return True
    if not isinstance(exc, OSError):
        return False
    if {c.__name__ for c in type(exc).__mro__} & _PERMANENT_TRANSPORT:
        return False
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status in TRANSIENT_HTTP_STATUSES
    return True


def _cut_short(exc: BaseException) -> bool:
    """Whether ``exc`` is a body that does not decode because it is empty or stops inside a
    JSON value: what a node that is restarting (Anvil killed mid-answer, a proxy in front of
    it) sends, and the next read may not. A body that is something else (a web page at the
    URL) stays a fault."""
    if not isinstance(exc, json.JSONDecodeError):
        return False
    body = exc.doc.strip()
    return not body or body[0] in "{["


_PASSING_NAMES: Final = frozenset({"BlockNotFound"})
"""web3's answer to a ``null`` block: a block number a node just restarted, reorganised or
behind a load balancer does not hold yet; the same read may find it at the next poll."""

_TIMEOUT_NAMES: Final = frozenset({"RequestTimedOut", "TimeExhausted"})
"""web3's own timeouts (not OSErrors)."""

_PERMANENT_TRANSPORT: Final = frozenset(
    {"InvalidJSONError", "InvalidURL", "MissingSchema", "InvalidSchema", "InvalidHeader"}
)
"""``requests`` errors that are OSErrors but no outage: an answer that is no JSON (a web page
at the URL), or a URL it cannot use. The same request gets the same."""


class ContractRevert(LedgerError):
    """The contract refused a call with one of its custom errors.

    ``error`` is the Solidity error name without the contract prefix (``"WrongPhase"``), ``args``
    its decoded arguments by name.
    """

    def __init__(self, error: str, args: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.error = error
        self.args_by_name = args


class Unauthorized(ContractRevert):
    """The caller lacks the role the function needs (coordinator, pending coordinator,
    aggregator, registered site); a site registered after a round opened has none in it."""


class RoundStateError(ContractRevert):
    """The round does not exist, is in the wrong phase, or the call falls outside its commit
    or reveal window (including windows too short for the ledger's minimum)."""


class DuplicateSubmission(ContractRevert):
    """The site already committed, or already revealed, in this round."""


class CommitmentMismatch(ContractRevert):
    """A reveal that does not open the sender's own commitment: the sender committed nothing
    in the round, or something else (a copied reveal, or a node that lost its own values)."""


class SampleLimitExceeded(ContractRevert):
    """The revealed sample count is above the site's maximum, set by the coordinator."""


class SiteAlreadyRegistered(ContractRevert):
    """The coordinator registered an address that is already an active site."""


class InvalidValuation(ContractRevert):
    """A valuation that does not cover exactly the revealed updates, or has a score out of
    range, an unknown reason, or a score that disagrees with its reason."""


class InvalidArgument(ContractRevert):
    """An argument the contract rejects outright (zero address, empty hash or CID)."""


class PrivacyBudgetError(ContractRevert):
    """A site's privacy account refuses the call: a budget set below what the site already
    spent (spends are never reset, so a budget can only stay at or above them)."""


class PrivacySpendRequired(PrivacyBudgetError):
    """A site with a privacy budget revealed without declaring the epsilon its update spent."""


class PrivacyBudgetExceeded(PrivacyBudgetError):
    """The declared spend would take the site's cumulative epsilon past its budget."""


# ---------------------------------------------------------------- content store


class StoreError(FedtrailError):
    """The content store failed."""


class StoreUnreachable(StoreError):
    """The IPFS daemon's RPC API does not answer."""


class ContentNotFound(StoreError):
    """No content under this CID."""


class InvalidCid(StoreError):
    """A string that is not a CID."""


class NonCanonicalCid(InvalidCid):
    """A CID under which the store gives bytes that are not the CID a default ``ipfs add``
    gives them (``fedtrail.storage.cid.compute_cid``: CIDv0, dag-pb, 256 KiB chunks; or the
    dag-pb CIDv1 of that root): another chunking, layout or codec of the same bytes. A DAG's
    shape is its writer's choice and sets how long each reader waits for it (attack a121), so
    no reader reads a blob under such a CID, whatever the timing: it is an invalid CID for
    that content (an update under one is MALFORMED)."""


class InvalidSha256(StoreError):
    """An expected content hash that is not 64 hex characters (a malformed record or caller bug)."""


class InvalidStoreConfig(StoreError, ConfigError):
    """A store location, IPFS API address, size limit or timeout that cannot be used.

    Also a ``ConfigError``: it comes from configuration or flags, so the CLI reports misuse.
    """


class NotAFile(StoreError):
    """The CID names content that is no file: a directory, or a DAG node that is not UnixFS.
    Nothing a blob could be read from, whoever asks, so no retry can help."""


class ContentTooLarge(StoreError):
    """The content exceeds the configured download limit."""


class HashMismatch(StoreError):
    """The bytes do not hash to the sha256 recorded on chain: tampered or corrupted content."""


class FolderLocked(FedtrailError):
    """Another daemon holds the folder: two on one folder would both act and rewrite its
    state."""


class PaymentSettingsChanged(ConfigError):
    """An aggregator's settings would open a later round whose terms change what round 1's
    fixed for the deployment (the validation split, valuation, aggregation rule, duplicate
    rule): honest nodes refuse such terms and ``audit verify`` fails them, so the round is
    not opened."""


# ---------------------------------------------------------------- updates and models


class InvalidUpdate(FedtrailError):
    """An untrusted model or update blob failed validation; ``reason`` says which check."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- audit


class VerificationFailed(FedtrailError):
    """Replaying the chain's history failed at least one check: the audit's verdict, not a
    crash (the report or the check results are still written)."""
