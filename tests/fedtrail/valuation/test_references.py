"""Which updates of a finalized round later rounds use as free-rider references: never one a
peer round refused (PEER_REJECTED) or the aggregator dropped (WITHHELD)."""

from __future__ import annotations

import torch

from fedtrail.errors import ContentNotFound
from fedtrail.ledger import Submission
from fedtrail.ledger.records import RoundInfo
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.storage.codec import encode_model, encode_update
from fedtrail.valuation.chained import reference_labels, round_references
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
    assert reference_labels(_Ledger(), 2, 1) == [  # type: ignore[arg-type]
        reference_label("0xok", 1),
        global_label(1),
    ]


def test_references_of_a_peer_round_with_withdrawn_refused_blobs_read_without_skipping() -> None:
    """Before, the aggregator round after such a peer round raised on the withdrawn blob."""
    refs = round_references(_Ledger(), _Store(), 1, SPEC)  # type: ignore[arg-type]
    assert list(refs) == [reference_label("0xok", 1), global_label(1)]
