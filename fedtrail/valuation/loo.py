"""Leave-one-out marginal gain: ``v(all) - v(all without i)`` on the validation split.

``n + 2`` utility evaluations (every leave-one-out coalition, the full one and, for the record,
the empty one). Cheap, but with several similar updates each one is nearly redundant given the
others, so honest sites can get gains near zero or slightly negative; Shapley values average over
all coalition sizes and are the default.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedtrail.errors import ConfigError
from fedtrail.valuation.base import Utility
from fedtrail.valuation.utility import CachedUtility, GameValues

__all__ = ["leave_one_out"]


def leave_one_out(players: Sequence[str], utility: Utility) -> GameValues:
    """``v(N) - v(N \\ {i})`` for every player ``i`` of ``players``."""
    ps = list(players)
    if len(set(ps)) != len(ps):
        raise ConfigError("players must be distinct")
    u = CachedUtility(utility)
    v0 = u(frozenset())
    full = frozenset(ps)
    v_full = u(full)
    values = {p: v_full - u(full - {p}) for p in ps}
    return GameValues(
        values=values, method="loo", evaluations=u.evaluations, v_empty=v0, v_full=v_full
    )
