"""Review of h-300's reference rule (session 62, h-307): when a round's references need its
terms (``valuation.references``), and what a reader does when they cannot be read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedtrail.errors import ContentNotFound, FedtrailError
from fedtrail.ledger import Submission
from fedtrail.valuation.chained import reference_labels, round_references
from fedtrail.valuation.standing import global_label, reference_label
from tests.fedtrail.valuation.test_references import (
    SPEC,
    VALUED,
    _Store,
    _TermsLedger,
    _TermsStore,
)


class _NoZeroLedger(_TermsLedger):
    """Round 1 as :class:`_TermsLedger`'s, but no update sits at weight 0 with a positive
    score (the rounding edge did not happen: every round of a ledger before session 62, and
    nearly every later one)."""

    def get_submissions(self, round_id: int) -> list[Submission]:
        return [s for s in VALUED if s.site != "0xrounded"]


class _InvalidTermsStore(_TermsStore):
    """Round 1's terms naming the reference rule without the public screen (or a rule this
    release does not know): terms no reader of this release parses."""

    def __init__(self) -> None:
        from tests.fedtrail.protocol.test_terms_schema import full_terms

        super().__init__()
        terms = full_terms()
        unknown = dict(terms.valuation, references="by-weight-v2")
        self.blobs["terms-invalid"] = replace(terms, valuation=unknown).to_bytes()


@pytest.mark.parametrize("terms_cid", ["terms-gone", "terms-invalid"])
def test_terms_that_cannot_decide_anything_are_not_read(terms_cid: str) -> None:
    """h-307: the rule only takes out updates at weight 0 with a positive score, so a round
    that holds none has the same references under either rule: its terms are not read, and a
    terms blob gone from the store (or one this release cannot parse) no longer fails the next
    rounds' ``standing.chain`` and free-rider history, nor stops a validator (before h-307 it
    raised ContentNotFound / InvalidLog here: old ledgers' verdicts changed)."""
    ledger, store = _NoZeroLedger(terms_cid), _InvalidTermsStore()
    labels = reference_labels(ledger, store, 2, 1)  # type: ignore[arg-type]
    assert labels == [
        reference_label("0xweighted", 1),
        reference_label("0xscreened", 1),
        reference_label("0xcopy", 1),
        global_label(1),
    ]


def test_a_round_with_an_update_in_doubt_still_needs_its_terms() -> None:
    """The other side: where the rule decides (an update at weight 0 with a positive score),
    every full reader (aggregator, ``audit verify``) still raises on terms it cannot read or
    parse, as h-300 made it (the history must be the same for everyone), and says which round's
    terms and why they are read (h-307: before, a bare ``ContentNotFound: <cid>``, which
    ``audit verify`` printed as "cannot read the history: <cid>")."""
    said = "round 1's terms (.*) valuation.references decides"
    with pytest.raises(ContentNotFound, match=said):
        reference_labels(_TermsLedger("terms-gone"), _InvalidTermsStore(), 2, 1)  # type: ignore[arg-type]
    with pytest.raises(FedtrailError, match=said + ".*by-weight-v2"):
        reference_labels(_TermsLedger("terms-invalid"), _InvalidTermsStore(), 2, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("terms_cid", ["terms-gone", "terms-invalid"])
def test_a_validators_view_leaves_an_update_in_doubt_out_when_the_terms_do_not_read(
    terms_cid: str,
) -> None:
    """h-307: a validator (``skip_unreadable``, node/scoring.py ``history_for``) whose previous
    round's terms cannot be read or parsed leaves out only the updates the rule could take out
    (weight 0, a positive score), as it leaves out unreadable bytes. Before h-307 it raised:
    ContentNotFound made the node's loop retry the round forever (it never scored again), and
    InvalidLog (terms of a rule this release does not know, or ``references`` without the
    public screen) is none of the errors ``Daemon.run`` catches, so it stopped the node."""

    class _Store2(_InvalidTermsStore):
        """Also holds every update of :data:`VALUED` (the rounded one included)."""

        def __init__(self) -> None:
            super().__init__()
            ok = _Store().blobs["cid-0xok"]
            for s in VALUED:
                self.blobs[s.cid] = ok

    ledger, store = _TermsLedger(terms_cid), _Store2()
    refs = round_references(ledger, store, 1, SPEC, skip_unreadable=True)  # type: ignore[arg-type]
    assert reference_label("0xrounded", 1) not in refs
    assert reference_label("0xweighted", 1) in refs and reference_label("0xscreened", 1) in refs
    assert global_label(1) in refs
