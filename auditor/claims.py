"""Which fields of a round log the chain pins, and which are the aggregator's word.

The log's bytes are checked against the sha256 on chain, but that only proves the aggregator
wrote them. A field is *on chain* when it equals the ledger's own record (the update's CID from
the event, or its ``sha256:`` stand-in where that text has no CID's shape, a126:
:mod:`fedtrail.protocol.cids`; its sha256, the revealed sample count, score, reason code,
weight, the site's registered name) or what the aggregator computes from it alone (the weight
as a fraction); it is *claimed* when the chain holds nothing to compare it with (the
explanation text, the summary, components, metrics); it is a *mismatch* when the chain says
otherwise: an explanation text is one when it begins with a reason other than the chain's
(``LOW_QUALITY: ...`` beside an on-chain OK,
:func:`~fedtrail.protocol.roundlog.explanation_reason`; session 56). ``fedtrail audit log``
prints the mark beside every field, so nothing the aggregator merely claims reads as verified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from fedtrail.ledger import Ledger, SiteInfo, Submission
from fedtrail.protocol.cids import logged_cid, logged_cid_agrees
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import SiteEntry, explanation_reason
from fedtrail.protocol.weights import WEIGHT_SCALE

__all__ = ["Mark", "SiteMarks", "mark_site", "registry_at_finalize"]


class Mark(Enum):
    CHAIN = "chain"
    CLAIMED = "claimed by the aggregator"
    MISMATCH = "DIFFERS FROM CHAIN"


@dataclass(frozen=True)
class SiteMarks:
    """The mark of each shown field of one site's log entry, and the chain's value where the
    log disagrees with it."""

    marks: Mapping[str, Mark]
    chain_values: Mapping[str, str]

    @property
    def mismatches(self) -> list[str]:
        return [name for name, mark in self.marks.items() if mark is Mark.MISMATCH]


def _reason_name(code: int) -> str:
    try:
        return Reason(code).name
    except ValueError:
        return str(code)


def mark_site(entry: SiteEntry, sub: Submission | None, site: SiteInfo | None) -> SiteMarks:
    """Compares one log entry with the chain's submission and registry record."""
    marks: dict[str, Mark] = {}
    chain: dict[str, str] = {}

    def compare(name: str, logged: object, on_chain: object | None) -> None:
        if on_chain is None:
            marks[name] = Mark.MISMATCH
            chain[name] = "(no such record on chain)"
        elif logged == on_chain:
            marks[name] = Mark.CHAIN
        else:
            marks[name] = Mark.MISMATCH
            chain[name] = str(on_chain)

    compare("name", entry.name, site.name if site else None)
    # the chain's text, or its stand-in where it has no CID's shape (fedtrail.protocol.cids, a126)
    if sub is not None and logged_cid_agrees(entry.update.cid, sub.cid):
        marks["cid"] = Mark.CHAIN
    else:
        compare("cid", entry.update.cid, logged_cid(sub.cid) if sub else None)
    compare("sha256", entry.update.sha256, sub.sha256 if sub else None)
    compare("num_samples", entry.update.num_samples, sub.num_samples if sub else None)
    compare("score", entry.score, sub.score if sub else None)
    compare("reason", entry.reason, sub.reason if sub else None)
    compare("reason_label", entry.reason_label, _reason_name(sub.reason) if sub else None)
    compare("weight", entry.weight, sub.weight if sub else None)
    # exactly what the aggregator writes (roundlog.SiteEntry.of); JSON round-trips the float
    compare("weight_fraction", entry.weight_fraction, sub.weight / WEIGHT_SCALE if sub else None)
    for claimed in ("status", "components", "explanation"):
        marks[claimed] = Mark.CLAIMED
    # the text stays the aggregator's word, but the reason it begins with is the chain's
    said = explanation_reason(entry.explanation)
    if sub is not None and said is not None and said != sub.reason:
        marks["explanation"] = Mark.MISMATCH
        chain["explanation"] = _reason_name(sub.reason)
    return SiteMarks(marks, chain)


def registry_at_finalize(
    ledger: Ledger,
    round_id: int,
    sites: Sequence[SiteInfo] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, SiteInfo]:
    """The registry as the aggregator read it for ``round_id``'s log: each site's record, under
    the name it had when the round was finalized (a site removed and registered again later
    under another name keeps its old name in that round's log, which must not read as a
    mismatch, and a log may not use the later name). ``sites``: the caller's
    :meth:`~fedtrail.ledger.Ledger.get_sites` read, ``names`` its
    :meth:`~fedtrail.ledger.Ledger.names_at_finalize`, each read here when not given."""
    if names is None:
        names = ledger.names_at_finalize(round_id)
    return {
        site.address: dataclasses.replace(site, name=names.get(site.address, site.name))
        for site in (ledger.get_sites() if sites is None else sites)
    }
