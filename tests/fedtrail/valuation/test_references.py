"""Which updates of a finalized round later rounds use as free-rider references: never one a
peer round refused (PEER_REJECTED) or the aggregator dropped (WITHHELD)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import pytest
import torch

from fedtrail.errors import ContentNotFound
from fedtrail.ledger import Submission
from fedtrail.ledger.records import RoundInfo
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.storage.codec import decode_model, decode_update, encode_model, encode_update
from fedtrail.valuation import chained
from fedtrail.valuation.chained import Decoded, reference_labels, round_references
from fedtrail.valuation.standing import global_label, reference_label

SPEC = ModelSpec()
SITES = {
    "0xok": Reason.OK,
    "0xrejected": Reason.PEER_REJECTED,
    "0xwithheld": Reason.WITHHELD,
    "0xtampered": Reason.TAMPERED,
}


def _sub(site: str, reason: Reason, order: int) -> Submission:
    return Submission(
        round=1,
        site=site,
        cid=f"cid-{site}",
        sha256="00",
        num_samples=10,
        score=0,
        reason=int(reason),
        weight=0,
        commitment="",
        commit_order=order,
        revealed=True,
    )


class _Ledger:
    """Round 1 finalized (a peer round), round 2 being valued."""

    def get_round(self, round_id: int) -> RoundInfo:
        return RoundInfo(
            id=round_id,
            phase=Phase.FINALIZED,
            commit_deadline=0,
            reveal_deadline=0,
            opened_at=0,
            active_at_open=4,
            submission_count=4,
            start_cid="start",
            start_sha256="00",
            terms_cid="",
            terms_sha256="",
            global_cid="global",
            global_sha256="00",
            log_cid="",
            log_sha256="",
        )

    def get_submissions(self, round_id: int) -> list[Submission]:
        return [_sub(s, r, i + 1) for i, (s, r) in enumerate(SITES.items())]


class _Store:
    """Holds the start and global models and the OK site's update; nothing else is readable
    (the refused sites withdrew their blobs)."""

    def __init__(self) -> None:
        state = federated_state(initial_model(SPEC, seed=0))
        delta = {k: torch.full_like(v, 0.01) for k, v in state.items()}
        self.blobs = {
            "start": encode_model(state, spec=SPEC, round=1),
            "global": encode_model({k: v + delta[k] for k, v in state.items()}, spec=SPEC, round=1),
            "cid-0xok": encode_update(delta, spec=SPEC, round=1).blob,
        }

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        if cid not in self.blobs:
            raise ContentNotFound(cid)
        return self.blobs[cid]


def test_refused_updates_of_a_peer_round_are_no_references() -> None:
    assert reference_labels(_Ledger(), _Store(), 2, 1) == [  # type: ignore[arg-type]
        reference_label("0xok", 1),
        global_label(1),
    ]


def test_references_of_a_peer_round_with_withdrawn_refused_blobs_read_without_skipping() -> None:
    """Before, the aggregator round after such a peer round raised on the withdrawn blob."""
    refs = round_references(_Ledger(), _Store(), 1, SPEC)  # type: ignore[arg-type]
    assert list(refs) == [reference_label("0xok", 1), global_label(1)]


class _CountingStore(_Store):
    """The store above, counting the reads of each cid."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        self.reads[cid] = self.reads.get(cid, 0) + 1
        return super().get(cid, sha256, max_bytes=max_bytes)


class _HashedLedger(_Ledger):
    """The ledger above with a sha256 of its own for each blob (as real ones have)."""

    def get_round(self, round_id: int) -> RoundInfo:
        return replace(super().get_round(round_id), start_sha256="aa", global_sha256="bb")

    def get_submissions(self, round_id: int) -> list[Submission]:
        return [replace(s, sha256=f"sha-{s.site}") for s in super().get_submissions(round_id)]


def test_references_already_decoded_are_reused_not_read_again() -> None:
    """A validator keeps the updates it scored and the start model it read (``Decoded``): the
    next round's references take them instead of fetching and decoding the same bytes, and are
    the references a fresh read gives, bit for bit; what it does not hold is still read."""
    fresh_store = _CountingStore()
    fresh = round_references(_HashedLedger(), fresh_store, 1, SPEC)  # type: ignore[arg-type]
    assert fresh_store.reads == {"cid-0xok": 1, "start": 1, "global": 1}
    update, _ = decode_update(fresh_store.blobs["cid-0xok"], spec=SPEC, expected_round=1)
    start, _ = decode_model(fresh_store.blobs["start"], spec=SPEC)
    decoded = Decoded(updates={(1, "sha-0xok"): update}, models={"aa": start})
    store = _CountingStore()
    reused = round_references(_HashedLedger(), store, 1, SPEC, decoded=decoded)  # type: ignore[arg-type]
    assert store.reads == {"global": 1}  # the end model is not held: read
    assert reused[reference_label("0xok", 1)] is update
    assert list(reused) == list(fresh)
    for label, delta in fresh.items():
        assert list(reused[label]) == list(delta)
        for k, v in delta.items():
            assert torch.equal(reused[label][k], v), (label, k)
    # decoded for another round: read again
    other = Decoded(updates={(2, "sha-0xok"): update})
    store = _CountingStore()
    round_references(_HashedLedger(), store, 1, SPEC, decoded=other)  # type: ignore[arg-type]
    assert store.reads == {"cid-0xok": 1, "start": 1, "global": 1}


class _TwoCopiesLedger(_HashedLedger):
    """Round 1 with a second readable update, byte for byte the first one's (a resend), and a
    third readable one."""

    def get_submissions(self, round_id: int) -> list[Submission]:
        subs = super().get_submissions(round_id)
        ok = next(s for s in subs if s.site == "0xok")
        return [
            *subs,
            replace(ok, site="0xcopy", commit_order=5),
            replace(ok, site="0xother", cid="cid-0xother", sha256="sha-0xother", commit_order=6),
        ]


class _AheadStore(_CountingStore):
    """The counting store above with the third update; its reads of ``broken`` CIDs raise."""

    def __init__(self, broken: frozenset[str] = frozenset()) -> None:
        super().__init__()
        delta = {
            k: torch.full_like(v, -0.02)
            for k, v in decode_model(self.blobs["start"], spec=SPEC)[0].items()
        }
        self.blobs["cid-0xother"] = encode_update(delta, spec=SPEC, round=1).blob
        self.broken = broken

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        if cid in self.broken:
            self.reads[cid] = self.reads.get(cid, 0) + 1
            raise ContentNotFound(f"{cid} withdrawn")
        return super().get(cid, sha256, max_bytes=max_bytes)


def _ahead(store: _AheadStore, asked: list[str]) -> chained.Fetch:
    """A fetch that asks ``store`` for every blob when called (all ahead of their use), noting
    the CIDs in the order asked; each function hands back that blob's result or error."""

    def fetch(refs: Sequence[tuple[str, str]], limit: int | None) -> Iterator[Callable[[], bytes]]:
        results: list[Callable[[], bytes]] = []
        for cid, sha in refs:
            asked.append(cid)
            try:
                blob = store.get(cid, sha, max_bytes=limit)
            except ContentNotFound as exc:
                results.append(functools.partial(_raise, exc))
            else:
                results.append(functools.partial(bytes, blob))
        return iter(results)

    return fetch


def _raise(exc: Exception) -> bytes:
    raise exc


def test_references_read_ahead_are_those_of_one_read_after_another() -> None:
    """``round_references`` with a ``fetch`` that reads ahead (``audit verify``'s fetch
    threads) asks for the models and the updates it does not hold before decoding any, and
    gives the references one read after another gives, bit for bit, in the same order: a
    resend byte for byte an earlier update (same sha256) is read and kept as its own
    reference, and what it read is added to ``decoded``."""
    ledger = _TwoCopiesLedger()
    fresh = round_references(ledger, _AheadStore(), 1, SPEC)  # type: ignore[arg-type]
    asked: list[str] = []
    decoded = Decoded()
    ahead = round_references(
        ledger,  # type: ignore[arg-type]
        _AheadStore(),  # type: ignore[arg-type]
        1,
        SPEC,
        decoded=decoded,
        fetch=_ahead(_AheadStore(), asked),
    )
    assert asked == ["start", "global", "cid-0xok", "cid-0xok", "cid-0xother"]
    assert (
        list(ahead)
        == list(fresh)
        == [
            reference_label("0xok", 1),
            reference_label("0xcopy", 1),
            reference_label("0xother", 1),
            global_label(1),
        ]
    )
    for label, delta in fresh.items():
        for k, v in delta.items():
            assert torch.equal(ahead[label][k], v), (label, k)
    assert not torch.equal(
        ahead[reference_label("0xother", 1)]["fc2.bias"],
        ahead[reference_label("0xok", 1)]["fc2.bias"],
    )
    assert set(decoded.updates) == {(1, "sha-0xok"), (1, "sha-0xother")}
    assert set(decoded.models) == {"aa", "bb"}


def test_a_reference_read_ahead_that_fails_raises_the_first_failure_in_the_chains_order() -> None:
    """Read ahead, the first blob that cannot be read in the order one read after another
    takes (the updates in the chain's order, then the models) raises its own error, though
    a later one (the global model) was asked for first."""
    ledger = _TwoCopiesLedger()
    broken = frozenset({"global", "cid-0xother"})
    with pytest.raises(ContentNotFound, match="cid-0xother withdrawn"):
        round_references(ledger, _AheadStore(broken), 1, SPEC)  # type: ignore[arg-type]
    asked: list[str] = []
    with pytest.raises(ContentNotFound, match="cid-0xother withdrawn"):
        round_references(
            ledger,  # type: ignore[arg-type]
            _AheadStore(broken),  # type: ignore[arg-type]
            1,
            SPEC,
            fetch=_ahead(_AheadStore(broken), asked),
        )
    assert asked[:2] == ["start", "global"]


def _valued(site: str, reason: Reason, score: int, weight: int, order: int) -> Submission:
    return replace(_sub(site, reason, order), score=score, weight=weight)


VALUED = [
    _valued("0xweighted", Reason.OK, 500_000, 10**18 - 1, 1),
    _valued("0xrounded", Reason.OK, 1, 0, 2),  # a positive score, weight 0 from rounding
    _valued("0xscreened", Reason.FREE_RIDER, 0, 0, 3),  # dropScreened: score 0
    _valued("0xcopy", Reason.DUPLICATE, 0, 0, 4),
    _valued("0xwithheld", Reason.WITHHELD, 0, 0, 5),
]


class _TermsLedger(_Ledger):
    """Round 1 valued as :data:`VALUED`, under the terms at ``terms_cid`` ("": none)."""

    def __init__(self, terms_cid: str) -> None:
        self.terms_cid = terms_cid

    def get_round(self, round_id: int) -> RoundInfo:
        return replace(super().get_round(round_id), terms_cid=self.terms_cid, terms_sha256="ff")

    def get_submissions(self, round_id: int) -> list[Submission]:
        return list(VALUED)


class _TermsStore(_Store):
    """The store above, holding round 1's terms with and without the reference rule."""

    def __init__(self) -> None:
        from tests.fedtrail.protocol.test_terms_schema import full_terms

        super().__init__()
        new = full_terms()
        valuation = dict(new.valuation)
        old = replace(new, valuation={k: v for k, v in valuation.items() if k != "references"})
        self.blobs["terms-weighted"] = new.to_bytes()
        self.blobs["terms-old"] = old.to_bytes()


def test_the_weighted_rule_leaves_out_only_updates_at_weight_0_with_a_positive_score() -> None:
    """h-300: ``valuation.references`` "weighted" takes out of a round's references exactly the
    updates the chain holds at weight 0 with a positive score; an update the chain zeroed (a
    resend dropped as screened, a copy) stays one, so resending it again is caught again."""
    ledger = _TermsLedger("")
    old = [s.site for s in chained.reference_submissions(ledger, 1)]  # type: ignore[arg-type]
    new = [s.site for s in chained.reference_submissions(ledger, 1, weighted=True)]  # type: ignore[arg-type]
    assert old == ["0xweighted", "0xrounded", "0xscreened", "0xcopy"]
    assert new == ["0xweighted", "0xscreened", "0xcopy"]


@pytest.mark.parametrize(
    ("terms_cid", "weighted"), [("terms-weighted", True), ("terms-old", False), ("", False)]
)
def test_a_rounds_own_terms_decide_its_references(terms_cid: str, weighted: bool) -> None:
    """The rule a round's references follow is the one its own terms name, read by their
    on-chain hash: absent (terms written before session 62, or a round opened without terms)
    it is the earlier rule, so old ledgers and logs keep their references."""
    ledger, store = _TermsLedger(terms_cid), _TermsStore()
    assert chained.weighted_references(ledger, store, 1) is weighted  # type: ignore[arg-type]
    labels = reference_labels(ledger, store, 2, 1)  # type: ignore[arg-type]
    assert (reference_label("0xrounded", 1) in labels) is not weighted, labels
    assert reference_label("0xscreened", 1) in labels and global_label(1) in labels


def test_terms_that_cannot_be_read_leave_the_references_unknown() -> None:
    """Terms the store cannot give raise (the history must be the same for every reader), as an
    unreadable reference does."""
    with pytest.raises(ContentNotFound):
        reference_labels(_TermsLedger("terms-gone"), _TermsStore(), 2, 1)  # type: ignore[arg-type]
