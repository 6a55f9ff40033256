"""The public screen's inputs (round terms ``valuation.public_screen``, README *Peer rounds*):
the chain names them (:func:`fedtrail.protocol.peers.screen_inputs`: a positive peer median,
not dropped as withheld), and :func:`fedtrail.valuation.chained.public_screen_of` reads no other
update, whatever reads now (session 54's review, MEDIUM 4; LOW 5: the noise and spend verdicts
do not take an input out)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.peers import (
    PeerVote,
    drop_screened,
    drop_withheld,
    peer_outcome,
    screen_inputs,
)
from fedtrail.valuation import Candidate
from fedtrail.valuation.chained import ScreenInputUnreadable, public_screen_of
from fedtrail.valuation.combine import Combiner

SITES = [f"0x{i:040x}" for i in range(1, 7)]
"""Revealed updates in address order: three hospitals, the ally, two colluders."""
HOSPITALS, ALLY, COLLUDERS = SITES[:3], SITES[3], SITES[4:]
VALIDATORS = [f"0x{0xA0 + i:040x}" for i in range(3)]


def _outcome(zeroed: set[str]) -> object:
    """Every validator scores every update 600_000 except those of ``zeroed`` (0)."""
    votes = [
        PeerVote(validator=v, scores=tuple(0 if s in zeroed else 600_000 for s in SITES))
        for v in VALIDATORS
    ]
    return peer_outcome(SITES, votes, standing={}, quorum=2)


def test_the_inputs_are_the_positive_medians_less_the_withheld_drops() -> None:
    outcome = _outcome(set(COLLUDERS))
    assert screen_inputs(outcome) == (*HOSPITALS, ALLY)
    withheld = drop_withheld(outcome, [HOSPITALS[1]])
    assert screen_inputs(withheld) == (HOSPITALS[0], *HOSPITALS[2:], ALLY)
    # a screened drop keeps its input (the medians before any drop): the screen's own output
    assert screen_inputs(drop_screened(withheld, [ALLY])) == screen_inputs(withheld)


@dataclass
class _Round:
    phase: Phase = Phase.OPEN


class _NoFinalized:
    """A ledger with no finalized round before (no references)."""

    def get_round(self, round_id: int) -> _Round:
        return _Round()


SPEC = ModelSpec()
START = initial_model(SPEC, 0).state_dict()


def _delta(scale: float, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        name: scale * torch.randn(shape, generator=gen)
        for name, (shape, _) in SPEC.tensor_layout().items()
    }


def _candidates(
    *, late_readable: bool, ally_status: Reason = Reason.OK, lost: str | None = None
) -> list[Candidate]:
    scales = {**dict.fromkeys(HOSPITALS, 0.01), ALLY: 0.01 * 0.0095}
    scales.update(dict.fromkeys(COLLUDERS, 0.005))
    out = []
    for i, site in enumerate(SITES):
        readable = (late_readable or site not in COLLUDERS) and site != lost
        out.append(
            Candidate(
                site=site,
                num_samples=300,
                delta=_delta(scales[site], i) if readable else None,
                status=(ally_status if site == ALLY else Reason.OK)
                if readable
                else Reason.MALFORMED,
            )
        )
    return out


def _screen(outcome: object, candidates: list[Candidate]) -> dict[str, str]:
    return public_screen_of(
        _NoFinalized(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # no reference to read
        7,
        SPEC,
        global_state=START,
        candidates=candidates,
        combiner=Combiner(white_noise_z=0.0, shaped_noise_z=0.0, block_noise_z=0.0),
        outcome=outcome,  # type: ignore[arg-type]
    )


def test_updates_that_read_only_now_do_not_move_the_screen() -> None:
    """The ally at 0.95% of the hospitals' norm is marked from the inputs; two colluders'
    half-norm updates, scored 0 by every validator, lower the median when screened too (the
    old reading at audit time) and spare it: they are no input, so read or not they change
    nothing."""
    outcome = _outcome(set(COLLUDERS))
    assert list(_screen(outcome, _candidates(late_readable=False))) == [ALLY]
    assert list(_screen(outcome, _candidates(late_readable=True))) == [ALLY]
    # the reading the old rule made (every readable update screened) spares the ally
    every = _outcome(set())
    assert _screen(every, _candidates(late_readable=True)) == {}


def test_an_input_the_noise_or_spend_check_scored_malformed_is_screened_on_its_delta() -> None:
    outcome = _outcome(set(COLLUDERS))
    marked = _screen(outcome, _candidates(late_readable=False, ally_status=Reason.MALFORMED))
    assert list(marked) == [ALLY]


def test_an_input_that_does_not_read_leaves_the_screen_uncomputable() -> None:
    outcome = _outcome(set(COLLUDERS))
    with pytest.raises(ScreenInputUnreadable, match=HOSPITALS[2][:10]):
        _screen(outcome, _candidates(late_readable=False, lost=HOSPITALS[2]))
    # dropped as withheld, it is no input: the screen runs without it
    withheld = drop_withheld(outcome, [HOSPITALS[2]])
    assert list(_screen(withheld, _candidates(late_readable=False, lost=HOSPITALS[2]))) == [ALLY]
