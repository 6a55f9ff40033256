"""The valuation -> weight rule, exactly as FederationLedger computes it on chain.

This is the only place the rule lives in Python: the aggregator uses it to predict and check the
weights it reads back, and the auditor uses it to recompute every weight from the on-chain scores
and sample counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from fedtrail.errors import FedtrailError

SCORE_SCALE = 1_000_000
WEIGHT_SCALE = 10**18
DEFAULT_REPUTATION_ALPHA = 300_000  # reputation' = 0.3 * score + 0.7 * reputation


class ZeroTotalWeight(FedtrailError):
    """Every update has sample count x score equal to zero: nothing to aggregate."""


def onchain_weights(num_samples: Sequence[int], scores: Sequence[int]) -> list[int]:
    """Integer weights summing to exactly WEIGHT_SCALE, in the given (address) order.

    w_i = floor(n_i * s_i * 1e18 / total); the remainder goes one unit each to the first sites
    whose exact share had a fractional part, so every weight is within one unit of exact.
    """
    if len(num_samples) != len(scores):
        raise ValueError("num_samples and scores differ in length")
    for s in scores:
        if not 0 <= s <= SCORE_SCALE:
            raise ValueError(f"score {s} outside 0..{SCORE_SCALE}")
    products = [int(n) * int(s) for n, s in zip(num_samples, scores, strict=True)]
    total = sum(products)
    if total == 0:
        raise ZeroTotalWeight("every update has zero weight")
    weights = [p * WEIGHT_SCALE // total for p in products]
    leftover = WEIGHT_SCALE - sum(weights)
    for i, p in enumerate(products):
        if leftover == 0:
            break
        if (p * WEIGHT_SCALE) % total:
            weights[i] += 1
            leftover -= 1
    return weights


def exact_shares(num_samples: Sequence[int], scores: Sequence[int]) -> list[Fraction]:
    """The exact rational shares the integer weights approximate (for checks and reports)."""
    products = [int(n) * int(s) for n, s in zip(num_samples, scores, strict=True)]
    total = sum(products)
    return [Fraction(p, total) for p in products]


def next_reputation(previous: int, score: int, *, valued_rounds: int, alpha: int) -> int:
    """The contract's reputation EMA: the first score sets it, later ones blend in by alpha."""
    if valued_rounds == 0:
        return score
    return (alpha * score + (SCORE_SCALE - alpha) * previous) // SCORE_SCALE


def withheld_reputation(reputation: int, score: int, *, valued_rounds: int, alpha: int) -> int:
    """The contract's reputation of a site whose update ``dropWithheld`` dropped, from its
    reputation after the round's valuation gave it ``score`` (the median) and its count of
    valued rounds, this one included: the credit ``alpha * score`` took back (at least 0), and
    0 when this was its first valued round (the first score set it)."""
    credit = alpha * score // SCORE_SCALE
    if valued_rounds == 1 or credit >= reputation:
        return 0
    return reputation - credit


def as_floats(weights: Sequence[int]) -> list[float]:
    """Weights as float64 fractions for aggregation (the one conversion every role shares)."""
    return [w / WEIGHT_SCALE for w in weights]
