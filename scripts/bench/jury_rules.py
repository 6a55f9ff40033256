"""Experiment (issue 14, attack a27): other rules for a peer-round jury's median, for the
benchmarks' in-process peer simulation only (``scripts/bench/_sim.py``); the product's rule, the
contract's, is :func:`fedtrail.protocol.peers.median` (the high median).

A site's jury is the counted validators other than itself; with 5 validators it has 4 entries,
and an even jury split two against two is where the rules differ:

- ``high`` (the product's): the higher middle entry; a tie keeps the site's score, so 2 stampers
  of 5 pay a poisoner in full (a27), and 2 colluders of 5 cannot lower a rival (a26);
- ``low``: the lower middle entry; a tie lowers the score (a27 closed, a26 reopened);
- ``true``: the floor of the mean of the two middle entries; a tie halves the gap;
- ``cos``: ``low`` for a site whose update points against the consensus (its cosine to the
  round's coordinate-wise median update below ``credit_cosine``, -0.7, with at least 3 updates:
  :func:`fedtrail.valuation.robust.robust_statistics` over every submitted update), ``high``
  otherwise. The contract cannot compute a cosine: this rule would need the caller of
  ``recordPeerValuation`` to name the sites, and ``audit verify`` to check them.

Odd juries have one middle entry: every rule gives it. ``install(rule)`` makes ``_sim``'s peer
rounds recompute each :class:`~fedtrail.protocol.peers.PeerOutcome`'s scores, reasons and
validator distances with ``rule`` (same counted validators: the reputation gate is the
product's) and record every update's cosine in its round's ``cosines`` (empty in a peer round
otherwise); the attack scripts install it when ``JURY_RULE`` is set.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import PeerOutcome, PeerVote, address_key
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation.robust import robust_statistics
from scripts.bench import _sim

RULES: Final = ("high", "low", "true", "cos")
CREDIT_COSINE: Final = -0.7
"""The combiner's default ``credit_cosine``: below it an update points against the consensus."""

_cosines: dict[str, float] = {}


def jury_median(entries: Sequence[int], rule: str, cosine: float | None = None) -> int:
    """The median of a jury's ``entries`` under ``rule``; ``cosine``: the site's update's
    cosine to the median update (``cos`` only; None: not computed, as ``high``)."""
    ordered = sorted(entries)
    if not ordered:
        return 0
    k = len(ordered)
    high, low = ordered[k // 2], ordered[(k - 1) // 2]
    if rule == "high":
        return high
    if rule == "low":
        return low
    if rule == "true":
        return (low + high) // 2
    if rule == "cos":
        return low if cosine is not None and cosine < CREDIT_COSINE else high
    raise ValueError(f"unknown jury rule {rule!r}; one of {', '.join(RULES)}")


def rescore(
    outcome: PeerOutcome,
    votes: Sequence[PeerVote],
    rule: str,
    cosines: Mapping[str, float],
) -> PeerOutcome:
    """``outcome`` (of :func:`~fedtrail.protocol.peers.peer_outcome` over ``votes``) with every
    site's score under ``rule`` over the same counted validators, and every revealed validator's
    distance and agreement to those scores (withheld validators as they were)."""
    counted = {address_key(c) for c in outcome.counted}
    scores: list[int] = []
    for i, site in enumerate(outcome.sites):
        entries = [
            v.scores[i]
            for v in votes
            if address_key(v.validator) in counted and address_key(v.validator) != address_key(site)
        ]
        scores.append(jury_median(entries, rule, cosines.get(site)))
    distances = {w: outcome.distances[w] for w in outcome.withheld}
    agreements = {w: outcome.agreements[w] for w in outcome.withheld}
    for vote in votes:
        diffs = [
            abs(vote.scores[i] - scores[i])
            for i, site in enumerate(outcome.sites)
            if address_key(vote.validator) != address_key(site)
        ]
        if diffs:
            distances[vote.validator] = sum(diffs) // len(diffs)
            agreements[vote.validator] = SCORE_SCALE - distances[vote.validator]
    return replace(
        outcome,
        scores=tuple(scores),
        reasons=tuple(Reason.OK if s > 0 else Reason.PEER_REJECTED for s in scores),
        distances=distances,
        agreements=agreements,
    )


def install(rule: str) -> None:
    """Make ``_sim``'s peer rounds score every jury with ``rule``."""
    if rule not in RULES:
        raise ValueError(f"unknown jury rule {rule!r}; one of {', '.join(RULES)}")
    score = _sim._Peers.score
    product_outcome = _sim.peer_outcome

    def scored(
        self: Any, record: Any, r: int, state: Any, spec: Any, sent: Any, result: Any
    ) -> None:
        _cosines.clear()
        if len(sent) >= 3:
            stats = robust_statistics(
                {self.addresses[i]: d for i, d in sent}, statistics=spec.statistic_names()
            )
            _cosines.update({site: s.cosine for site, s in stats.items()})
            record.cosines = {
                result.site_names[i]: stats[self.addresses[i]].cosine for i, _ in sent
            }
        score(self, record, r, state, spec, sent, result)

    def outcome(sites: Sequence[str], votes: Sequence[PeerVote], **kw: Any) -> PeerOutcome:
        return rescore(product_outcome(sites, votes, **kw), votes, rule, _cosines)

    _sim._Peers.score = scored  # type: ignore[method-assign]
    _sim.peer_outcome = outcome
