"""Valuation: how much each site's update is worth in a round, as an on-chain score and reason.

The aggregator scores every submitted update (0..1e6, :class:`~fedtrail.protocol.codes.Reason`)
before the contract turns scores and sample counts into aggregation weights; an auditor re-runs
the same valuation from the round's explanation log and must get the same scores. Layer: core
(imports only ``fedtrail.protocol``, ``fedtrail.ml`` and ``fedtrail.errors``); used by the
aggregator and the auditor, later by nodes for peer scoring.

:func:`value_round` is the one entry point for "value a round" (service, audit replay,
benchmarks, tests). The pieces it combines stay usable as plain library functions: the games
(:func:`exact_shapley`, :func:`mc_shapley`, :func:`leave_one_out` over any coalition utility),
the data-free :func:`robust_statistics` and :func:`free_riders`, the accumulated standing
(:class:`History`, :func:`normalised_values`, :func:`accumulate`, :func:`demoted_score`), the
:class:`Combiner` thresholds (:data:`HISTORY_COMBINER`: those measured for valuation with a
history) and the :class:`ExplanationScorer`. :func:`peer_vector` is a validator site's scoring
of a peer round (every other revealed update on its own split, through :func:`value_round`).
"""

from fedtrail.valuation.base import METRICS, Candidate, Metric, Utility, ValuationContext, usable
from fedtrail.valuation.combine import (
    HISTORY_COMBINER,
    Combiner,
    RoundValuation,
    SiteValuation,
    any_positive,
    default_combiner,
)
from fedtrail.valuation.explanation import ExplanationScorer, SiteExplanationShift
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.loo import leave_one_out
from fedtrail.valuation.peers import (
    VALIDATOR_GAMES,
    PeerVector,
    UnfitValidation,
    peer_vector,
    screened_history,
)
from fedtrail.valuation.robust import RobustStats, robust_statistics
from fedtrail.valuation.round import GAMES, LARGE_GAMES, METHODS, public_screen, value_round
from fedtrail.valuation.shapley import (
    AUTO_EXACT_SITES,
    LARGE_GAME_SITES,
    MAX_EXACT_SITES,
    budget_shapley,
    budget_shapley2,
    budget_shapley3,
    exact_shapley,
    linear_shapley,
    mc_shapley,
)
from fedtrail.valuation.standing import (
    History,
    accumulate,
    demoted_score,
    demotion_reference,
    normalised_values,
    relieved_reference,
)
from fedtrail.valuation.utility import CachedUtility, CoalitionUtility, GameValues

__all__ = [
    "AUTO_EXACT_SITES",
    "GAMES",
    "HISTORY_COMBINER",
    "LARGE_GAMES",
    "LARGE_GAME_SITES",
    "MAX_EXACT_SITES",
    "METHODS",
    "METRICS",
    "VALIDATOR_GAMES",
    "CachedUtility",
    "Candidate",
    "CoalitionUtility",
    "Combiner",
    "ExplanationScorer",
    "GameValues",
    "History",
    "Metric",
    "PeerVector",
    "RobustStats",
    "RoundValuation",
    "SiteExplanationShift",
    "SiteValuation",
    "UnfitValidation",
    "Utility",
    "ValuationContext",
    "accumulate",
    "any_positive",
    "budget_shapley",
    "budget_shapley2",
    "budget_shapley3",
    "default_combiner",
    "demoted_score",
    "demotion_reference",
    "exact_shapley",
    "free_riders",
    "leave_one_out",
    "linear_shapley",
    "mc_shapley",
    "normalised_values",
    "peer_vector",
    "public_screen",
    "relieved_reference",
    "robust_statistics",
    "screened_history",
    "usable",
    "value_round",
]
