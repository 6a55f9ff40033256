"""One exception tree for the whole project.

Library code raises these; only the CLI turns them into exit codes. Every class says what went
wrong in words an operator can act on; the message never contains key material.
"""

from __future__ import annotations

from typing import Any


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


class ContractNotFound(LedgerError):
    """No FederationLedger code at the configured address."""


class DeploymentMismatch(LedgerError):
    """A deployment file disagrees with the chain about the contract's creation (its block or
    transaction): a later block would hide every event before it from the readers."""


class TransactionFailed(LedgerError):
    """A transaction was mined but failed, or was never mined."""


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
