"""The ledger client: typed access to a deployed FederationLedger contract.

Layer: part of the ``fedtrail`` core. The roles (node, aggregator, auditor) and the CLI use it;
it uses ``fedtrail.protocol`` (Phase, scales) and raises ``fedtrail.errors`` classes, and never
imports anything above it.

- ``records``: the frozen records it hands out (rounds, submissions, sites, valuations,
  transaction results, events, deployments) and the bytes32/address conversions;
- ``artifact``: the compiled contract (ABI, bytecode) shipped with the package; no chain needed;
- ``errors``: the one table from each custom error of the contract to our exception class, and
  the one decoder that finds revert data in what a provider raised;
- ``client``: ``Ledger`` (``connect``/``at``/``deploy``, transactions, views, events), with
  locally signed transactions and one nonce lock per sender.
"""

from __future__ import annotations

from fedtrail.ledger.artifact import Artifact
from fedtrail.ledger.client import Ledger
from fedtrail.ledger.errors import ERRORS, RevertDecoder, revert_data
from fedtrail.ledger.records import (
    Deployment,
    LedgerEvent,
    RoundInfo,
    SiteInfo,
    Submission,
    TxResult,
    Valuation,
    checksum,
    from_bytes32,
    to_bytes32,
)
from fedtrail.protocol.codes import Phase  # re-exported: callers read round phases from here

__all__ = [
    "ERRORS",
    "Artifact",
    "Deployment",
    "Ledger",
    "LedgerEvent",
    "Phase",
    "RevertDecoder",
    "RoundInfo",
    "SiteInfo",
    "Submission",
    "TxResult",
    "Valuation",
    "checksum",
    "from_bytes32",
    "revert_data",
    "to_bytes32",
]
