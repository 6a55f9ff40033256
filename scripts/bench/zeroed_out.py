"""An experiment, not the product's rule (attack a19): updates the standing already zeroes play
no part in the other players' game.

The validation game's coalition model is the sample-weighted mean of the coalition's updates,
so every update added to a coalition that holds a harmful one dilutes its harm and is credited
for it: a data-less Sybil that sends a large harmful update (and is ``LOW_QUALITY``, weight 0,
from its second round) keeps crediting its partner every round. Here the players whose record
*before* the round already gives them score 0 (``demoted_score(before - reference)``, the
reference ``min(0, median before)`` over the round's players) are left out: the others play the
round's game among themselves, and a left-out player's value is its marginal on the others'
grand coalition, ``v(others + i) - v(others)``, so it can still earn its record back.

:func:`install` swaps this in for :mod:`fedtrail.valuation.round`'s game (the aggregator's and
``audit verify``'s re-run, one home), in this process only. The history is taken from the
round's ``History.warm_up`` read, which :func:`~fedtrail.valuation.value_round` makes before
the game (single-threaded use only).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import fedtrail.valuation.round as _round
from fedtrail.valuation.standing import History, demoted_score
from fedtrail.valuation.utility import GameValues

DEMOTE_SCALE = 0.5  # the terms' default; the a19 and bench runs use it
_seen: list[History] = []


def zeroed(players: tuple[str, ...], before: Mapping[str, float]) -> set[str]:
    """The players whose record before the round scores 0 against the round's reference."""
    records = [before.get(p, 0.0) for p in players]
    ref = min(0.0, statistics.median(records)) if records else 0.0
    return {
        p
        for p in players
        if demoted_score(before.get(p, 0.0) - ref, demote_scale=DEMOTE_SCALE) == 0
    }


def install() -> None:
    """Make :func:`fedtrail.valuation.value_round` leave already-zeroed players out of the
    others' game."""
    original_play = _round._play
    warm_up = History.warm_up

    def spy(self: History) -> bool:
        _seen[:] = [self]
        return bool(warm_up.fget(self))  # type: ignore[attr-defined]

    def play(method: str, large_game: str | None, utility: Any, seed: int) -> GameValues:
        history = _seen[0] if _seen else None
        players: tuple[str, ...] = tuple(utility.players)
        out = zeroed(players, history.accumulated) if history and not history.warm_up else set()
        if not out or len(out) == len(players) or method not in _round.GAMES:
            return original_play(method, large_game, utility, seed)
        others = [p for p in players if p not in out]
        game = _round.GAMES[method](others, utility, seed)
        grand = frozenset(others)
        base = utility(grand)
        values = {
            p: game.values[p] if p in game.values else utility(grand | {p}) - base for p in players
        }
        return GameValues(
            values=values,
            method=game.method,
            evaluations=game.evaluations + len(out),
            v_empty=game.v_empty,
            v_full=utility(frozenset(players)),
            permutations=game.permutations,
        )

    History.warm_up = property(spy)  # type: ignore[method-assign,assignment]
    _round._play = play  # type: ignore[assignment]
