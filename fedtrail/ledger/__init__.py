"""The ledger client: typed access to a deployed FederationLedger contract.

Layer: part of the ``fedtrail`` core. The roles (node, aggregator, auditor) and the CLI use it;
it uses ``fedtrail.protocol`` (Phase, scales) and raises ``fedtrail.errors`` classes, and never
imports anything above it.

- ``records``: the frozen records it hands out (rounds, submissions, sites, valuations,
  privacy accounts and spends, transaction results, events, deployments), the
  bytes32/address conversions, and ``commitment``, the hash a site commits to before
  revealing its update, ``decline_commitment``, the one it posts instead when it refuses the
  round's terms (``read_decline``), ``score_commitment``, the hash a validator of a peer
  round commits to before revealing its score vector (``PeerRoundInfo``, ``ValidatorStanding``);
- ``artifact``: the compiled contract (ABI, bytecode) shipped with the package; no chain needed;
- ``errors``: the one table from each custom error of the contract to our exception class, and
  the one decoder that finds revert data in what a provider raised;
- ``client``: ``Ledger`` (``connect``/``at``/``deploy``, transactions, views, events), with
  locally signed transactions and one nonce lock per sender. Submissions are
  commit-then-reveal: ``commit_update(round, commitment(...))`` before the commit deadline,
  ``reveal_update(round, cid, sha256, num_samples)`` after it (with ``epsilon_micro=`` for a
  site under differential privacy: the spend its privacy account is charged, ``privacy(site)``,
  ``privacy_spends(round)``).
"""

from __future__ import annotations

from fedtrail.ledger.artifact import Artifact
from fedtrail.ledger.client import Ledger, PreparedCommit
from fedtrail.ledger.errors import ERRORS, RevertDecoder, revert_data
from fedtrail.ledger.records import (
    Deployment,
    LedgerEvent,
    PeerRoundInfo,
    PrivacyAccount,
    PrivacySpend,
    Registrations,
    RegistryHistory,
    RegistryMove,
    RoundInfo,
    RoundPoll,
    SiteInfo,
    SiteRoundView,
    Submission,
    TxResult,
    ValidatorStanding,
    Valuation,
    checksum,
    commitment,
    decline_commitment,
    declines_among,
    from_bytes32,
    pack_scores,
    read_decline,
    score_commitment,
    score_vote_hash,
    to_bytes32,
)

# re-exported: callers read round phases and the contract's limits from here too
from fedtrail.protocol.codes import DEFAULT_MIN_ROUND_WINDOW, MAX_SITE_SAMPLES, Phase

__all__ = [
    "DEFAULT_MIN_ROUND_WINDOW",
    "ERRORS",
    "MAX_SITE_SAMPLES",
    "Artifact",
    "Deployment",
    "Ledger",
    "LedgerEvent",
    "PeerRoundInfo",
    "Phase",
    "PreparedCommit",
    "PrivacyAccount",
    "PrivacySpend",
    "Registrations",
    "RegistryHistory",
    "RegistryMove",
    "RevertDecoder",
    "RoundInfo",
    "RoundPoll",
    "SiteInfo",
    "SiteRoundView",
    "Submission",
    "TxResult",
    "ValidatorStanding",
    "Valuation",
    "checksum",
    "commitment",
    "decline_commitment",
    "declines_among",
    "from_bytes32",
    "pack_scores",
    "read_decline",
    "revert_data",
    "score_commitment",
    "score_vote_hash",
    "to_bytes32",
]
