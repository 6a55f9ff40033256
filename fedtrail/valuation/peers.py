"""Peer scoring, the validator's side: :func:`peer_vector`, what one site computes in a peer round.

In a peer round (``[valuation] mode = "peers"``, issue 14) no single scorer holds the validation
split: every registered site scores every *other* revealed update on its own local validation
split and commits, then reveals, one score vector; the chain takes each update's median over the
other validators (:mod:`fedtrail.protocol.peers`). This module is the scoring a validator runs
before it commits, so that a site, the in-process simulation and the tests share one rule.

Why it is built this way:

- **the product's valuation, unchanged** (:func:`~fedtrail.valuation.value_round`, with the
  method, metric, seed, thresholds and large game of the round's terms): a peer score means
  what an aggregator score means, the issue-12 utility included, and it has no second code path
  to drift. Only the game may differ: the terms' ``validator_game`` (:data:`VALIDATOR_GAMES`;
  the aggregator's default ``"linear_shapley"``) is played at every size instead of the
  method's, because a validator's scoring must fit within its own local training time
  (issue 14: Monte-Carlo Shapley over 9 peers took ~300 coalition evaluations, 25-77x a site's
  training; the linearised game takes 2 and one gradient pass);
- **no game in the validator's warm-up round** (a history's first, ``History()``): the
  warm-up accumulates no values and its demote-only scores come from the accumulated values
  alone, so the vote is the one a game would give; the report's values are each update alone's
  gain from the warm-up's harm check (method
  :data:`~fedtrail.valuation.round.WARM_UP_ALONE`), which saves the gradient pass at the full
  coalition (~9 of a 10-site validator's ~33 ms in that round). The aggregator still plays it
  (its log records the values and the audit replays them);
- **the validator's own update is left out of the game** (a site never scores itself, and its
  own update in the coalitions would move every other site's Shapley value); its entry in the
  vector is 0, which the contract and :func:`~fedtrail.protocol.peers.peer_outcome` ignore;
- **the vector covers every revealed update in ascending address order**: the contract checks
  its length against the reveal count and reads entry i as the i-th revealed site;
- **each validator keeps its own standing** (:class:`~fedtrail.valuation.standing.History`):
  its accumulated values come from its private split, so no one else can recompute them and
  they cannot be chained through a public log as the aggregator's are; the validator chains them
  itself from its previous vector (:attr:`PeerVector.history`, then
  :meth:`PeerVector.next_history` once the round's global delta is known). A cancelled round
  carries nothing on, as for the aggregator: the caller then keeps the previous history.

Deterministic for its inputs (``value_round`` is).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Final

import numpy as np
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import PeerVote, address_key
from fedtrail.protocol.terms import VALIDATOR_GAMES
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation.base import Candidate
from fedtrail.valuation.combine import Combiner, RoundValuation
from fedtrail.valuation.round import value_round
from fedtrail.valuation.standing import (
    History,
    carried_back,
    global_label,
    reference_label,
    reference_round,
)

__all__ = ["VALIDATOR_GAMES", "PeerVector", "UnfitValidation", "peer_vector", "screened_history"]

_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")

UNREADABLE: Final = frozenset({Reason.TAMPERED, Reason.MALFORMED, Reason.NOT_REVEALED})
"""Statuses of updates whose bytes were unusable: never free-rider references (as in
:mod:`fedtrail.valuation.chained`)."""


class UnfitValidation(ConfigError):
    """This site's validation split cannot score a round (fewer than two classes in it): the
    site abstains from the round's vote instead of sending scores it could not compute."""


@dataclass(frozen=True, kw_only=True, eq=False)
class PeerVector:
    """One validator's scoring of a round (equality is identity: it holds tensors).

    ``sites``: every revealed candidate in ascending address order; ``scores``: one uint32 entry
    per site (0..``SCORE_SCALE``), the validator's own entry 0; ``report``: the valuation of the
    other candidates (their details, for the validator's own records); ``history``: the
    validator's standing after this round (None when it scores without one), with this round's
    readable updates as free-rider references, and those of the earlier rounds its history held
    within the thresholds' ``stale_rounds`` (by round number); :meth:`next_history` adds the
    global delta. ``carried_in``: the accumulated values the validator scored the round with
    (its history's; empty without one), which :meth:`next_history` puts back for the updates
    the public screen dropped.
    """

    validator: str
    round_id: int
    sites: tuple[str, ...]
    scores: tuple[int, ...]
    report: RoundValuation
    history: History | None
    carried_in: Mapping[str, float] = field(default_factory=dict)

    @property
    def vote(self) -> PeerVote:
        """The vector as the chain holds it once revealed."""
        return PeerVote(validator=self.validator, scores=self.scores)

    def next_history(
        self, global_delta: Mapping[str, torch.Tensor] | None, screened: Sequence[str] = ()
    ) -> History | None:
        """The history the validator scores its next round with, once this round closed with
        weights: :attr:`history` plus ``global_delta`` (the delta the round applied; None when
        unknown) as a reference, so a site resending it is caught as stale. ``screened``: the
        sites whose updates the aggregator dropped from the round as the public screen's
        free-riders (the chain's ``UpdateScreened``, round terms ``valuation.public_screen``):
        each gains no standing from the round, its accumulated value is put back to the one the
        round was scored with (:func:`~fedtrail.valuation.standing.carried_back`)."""
        if self.history is None:
            return None
        history = self.history
        if screened:
            history = replace(
                history,
                accumulated=screened_history(history.accumulated, self.carried_in, screened),
            )
        if global_delta is None:
            return history
        refs = history.references
        current = {k: v for k, v in refs.items() if reference_round(k) == self.round_id}
        # newest first, as the aggregator's references: this round's updates and its delta
        references = {**current, global_label(self.round_id): global_delta}
        references.update({k: v for k, v in refs.items() if k not in current})
        return History(
            accumulated=history.accumulated,
            valued_rounds=history.valued_rounds,
            references=references,
            reference_squares=history.reference_squares,
        )


def _same_sites(accumulated: Mapping[str, float], sites: Sequence[str]) -> list[str]:
    """The keys of ``accumulated`` that name one of ``sites`` (addresses compared as numbers,
    whatever their case)."""
    wanted = {address_key(s) for s in sites if _ADDRESS.fullmatch(s)}
    return [k for k in accumulated if _ADDRESS.fullmatch(k) and address_key(k) in wanted]


def screened_history(
    accumulated: Mapping[str, float], carried_in: Mapping[str, float], screened: Sequence[str]
) -> dict[str, float]:
    """A validator's accumulated values after a round (``accumulated``) less what the sites the
    public screen dropped from it (``screened``, the chain's ``UpdateScreened``) gained in it:
    each put back to its value in ``carried_in``, the values the round was scored with
    (:meth:`PeerVector.next_history`; the node's :meth:`~fedtrail.node.scoring.PeerScorer.
    history_for`)."""
    return carried_back(accumulated, carried_in, _same_sites(accumulated, screened))


def _check_address(name: str, value: object) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ConfigError(f"{name} must be a 0x-prefixed 20-byte hex address, got {value!r}")
    return value


def _classes(validation: ImageDataset) -> int:
    return int(np.unique(np.asarray(validation.labels)).size)


def peer_vector(
    *,
    validator: str,
    round_id: int,
    global_state: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    candidates: Sequence[Candidate],
    validation: ImageDataset,
    method: str,
    metric: str,
    seed: int,
    combiner: Combiner | None = None,
    history: History | None = None,
    large_game: str | None = None,
    explanation_check: bool = False,
    validator_game: str | None = None,
    project_shift: bool = False,
    public_screen: bool = False,
) -> PeerVector:
    """Score every revealed update but the validator's own on the validator's ``validation``
    split (see the module docstring).

    ``candidates``: the round's revealed updates, site names their addresses, in strictly
    ascending address order (the contract's vector order); the validator need not be among them
    (a site that sent no update still validates). ``method``, ``metric``, ``seed``,
    ``combiner``, ``large_game``, ``explanation_check`` and ``project_shift`` are the round
    terms' valuation
    settings, exactly as the aggregator would pass them to
    :func:`~fedtrail.valuation.value_round`. ``validator_game`` (the terms' setting of that
    name, one of :data:`VALIDATOR_GAMES`, or None) is the game played instead of ``method``'s
    and ``large_game``'s at every size. ``history``: the validator's own standing from its
    previous vector (:meth:`PeerVector.next_history`; ``History()`` for its first round, the
    warm-up); None scores each round on its own. ``public_screen`` (the terms' setting of that
    name): the free-rider screen is left to the aggregator, which runs it once for the round on
    public data and drops what it marks on chain (:func:`~fedtrail.valuation.round.
    public_screen`); the validator values those updates as any other, and takes the standing
    they gained back out once the chain names them dropped (:meth:`PeerVector.next_history`).

    Raises :class:`UnfitValidation` when the split holds fewer than two classes (no utility of
    the issue-12 kind is defined on it) and ConfigError for malformed input (an unknown
    ``validator_game`` among it).
    """
    if validator_game is not None and validator_game not in VALIDATOR_GAMES:
        raise ConfigError(
            f"validator_game must be one of {VALIDATOR_GAMES} or None (the round's method), "
            f"got {validator_game!r}"
        )
    own = _check_address("validator", validator)
    if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 1:
        raise ConfigError(f"round_id must be a positive integer, got {round_id!r}")
    if not isinstance(validation, ImageDataset) or len(validation) == 0:
        raise ConfigError("a validator needs a non-empty validation split")
    for c in candidates:
        _check_address("every candidate's site", c.site)
    keys = [address_key(c.site) for c in candidates]
    if any(b <= a for a, b in pairwise(keys)):
        raise ConfigError("candidates must be in strictly ascending address order")
    if _classes(validation) < 2:
        raise UnfitValidation(
            f"validator {own}: its validation split holds one class only ({len(validation)} "
            "images), so it cannot value updates; it abstains"
        )
    own_key = address_key(own)
    others = [c for c in candidates if address_key(c.site) != own_key]
    report = value_round(
        global_state=global_state,
        spec=spec,
        candidates=others,
        validation=validation,
        method=method if validator_game is None else validator_game,
        metric=metric,
        seed=seed,
        explanation_check=explanation_check,
        combiner=combiner,
        history=history,
        large_game=large_game if validator_game is None else None,
        warm_up_game=False,  # the warm-up's vote does not depend on a game (value_round)
        project_shift=project_shift,
        public_screen=public_screen,
    )
    by_site = {v.site: v for v in report.sites}
    scores = tuple(
        0 if address_key(c.site) == own_key else by_site[c.site].score for c in candidates
    )
    if any(not 0 <= s <= SCORE_SCALE for s in scores):  # value_round's contract; never expected
        raise ConfigError(f"validator {own}: a score outside 0..{SCORE_SCALE}")
    next_history = None
    if history is not None:
        unreadable = {v.site for v in report.sites if v.status in UNREADABLE}
        references: dict[str, Mapping[str, torch.Tensor]] = {
            reference_label(c.site, round_id): c.delta
            for c in candidates
            if c.delta is not None and c.status not in UNREADABLE and c.site not in unreadable
        }
        # the partial sums of squares the free-rider screen took of this round's updates, for
        # its next round's screen of them as references
        squares = {
            reference_label(site, round_id): parts
            for site, parts in (report.square_partials or {}).items()
            if reference_label(site, round_id) in references
        }
        # the references of the latest rounds stay, up to the terms' stale_rounds in all
        lag = (combiner or Combiner()).stale_rounds
        for label, delta in history.references.items():
            r = reference_round(label)
            if r is not None and round_id - lag < r < round_id:
                references[label] = delta
                if label in history.reference_squares:
                    squares[label] = history.reference_squares[label]
        next_history = History(
            accumulated=dict(report.accumulated or {}),
            valued_rounds=history.valued_rounds + 1,
            references=references,
            reference_squares=squares,
        )
    return PeerVector(
        validator=own,
        round_id=round_id,
        sites=tuple(c.site for c in candidates),
        scores=scores,
        report=report,
        history=next_history,
        carried_in=dict(history.accumulated) if history is not None else {},
    )
