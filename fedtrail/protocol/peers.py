"""Peer scoring: how revealed score vectors become on-chain scores, exactly as the contract does.

In a peer round (``[valuation] mode = "peers"``) every site registered when the round opened may
act as a validator: after the update reveal window it scores every revealed update on its own
validation split, commits to its score vector, then reveals it. FederationLedger's
``recordPeerValuation`` turns the revealed vectors into scores; this module is that rule in
Python, the one home the aggregator (to predict, and to supply the medians the contract checks
by counting rather than sorting), the simulation (to play peer rounds in process) and the
auditor (to recompute from the chain alone) share.

The rule, for the revealed updates in ascending address order (``sites``) and the revealed
vectors in ascending validator order:

- a site's score is the high median of the entries other validators gave it (its own entry, if
  it validated, never counts): the middle value of an odd count, the higher of the two middle
  values of an even count, and 0 when no other validator scored it. Scores only demote (a site
  its peers find harmless gets the full score), so a score is lowered only when more than half
  of the entries are lower: a tie keeps the higher one. Measured (``scripts/bench/
  peer_validators.py``, 5 sites, Dirichlet alpha 1, 4 rounds, seeds 0 and 1): with the floor of
  the mean of the two middles, one honest validator that did not vote moved an honest site's
  weight by up to 0.157 — honest validators on small label-skewed splits often split two
  against two — and with the high median by at most 0.005. The tie's other side: two of five
  validators that score everyone full keep a poisoner at full score (attack a27, open); those
  votes are, relabelled, two colluders zeroing an honest rival, so no rule on the votes alone
  closes one without opening the other (``scripts/bench/jury_rules.py``, README);
- only *counted* validators enter the medians. A validator already rated whose validator
  reputation (before this round) is below :data:`REPUTATION_GATE` fails the gate; of the
  revealed validators (there are at least ``quorum``, or the round is refused),

  * when more than half pass and at least ``quorum`` do, only those that pass count (the
    others are still rated): a validator caught far from the medians loses its vote until it
    agrees again;
  * when fewer than half pass, all count: the gate never leaves out a majority, so a cartel
    that once held the majority of the votes, in rounds most honest validators missed, and so
    rated them below the gate, cannot keep the medians once they vote again (and a federation
    whose validators all fell below the gate still values rounds);
  * otherwise, exactly half pass, or a majority below ``quorum``, the round cannot be valued
    (:class:`GateUndecided`, the contract's ``GateUndecided``; the aggregator cancels it). At
    exactly half the chain cannot tell a caught cartel from one that gated the honest
    validators, and counting everyone handed the medians to a gated half (each honest site's
    jury of the others then held a gated majority); and a gated vote is no vote towards the
    quorum, since re-admitting a gated minority to reach it let two gated stampers split a
    poisoner's jury two against two, which the high median pays in full.

  Measured (``scripts/bench/peer_validators.py``): one
  inverting validator of five moved an honest site's weight by up to 0.063 without the gate;
- its reason is OK when that score is positive and PEER_REJECTED otherwise;
- a validator's distance is the floor of the mean absolute difference between its entries and
  the medians, over the sites other than itself; its agreement is ``SCORE_SCALE - distance``,
  folded into its validator reputation with the contract's EMA, whose factor is a quarter as
  large when the reputation rises (:func:`next_validator_reputation`). A validator that scored
  no site but itself is not rated;
- a validator that committed a score vector and did not reveal it (``withheld``) is rated at
  distance ``SCORE_SCALE`` (agreement 0): keeping the option to withhold after seeing the
  others' vectors costs reputation. So does withholding that leaves the round below its quorum:
  ``cancelRound`` rates the withheld vectors of an open peer round the same way
  (:func:`cancelled_outcome`).
- once valued, a weighted update the aggregator cannot read back by the score reveal deadline
  (its site may withhold the blob once scored) is dropped (``dropWithheld``): score 0, reason
  WITHHELD, and the other sites' weights re-derived from their scores; the validators' ratings
  stay as valued (:func:`drop_withheld`).

A cartel of fewer than half the counted validators that score a site cannot move that site's
median outside the range of the honest validators' entries.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from fedtrail.errors import FedtrailError
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import SCORE_SCALE, ZeroTotalWeight, onchain_weights

__all__ = [
    "REPUTATION_GATE",
    "GateUndecided",
    "InvalidVotes",
    "PeerOutcome",
    "PeerVote",
    "address_key",
    "cancelled_outcome",
    "counted_validators",
    "default_quorum",
    "drop_screened",
    "drop_withheld",
    "median",
    "next_validator_reputation",
    "peer_explanation",
    "peer_outcome",
    "screen_drop",
    "screen_empties_round",
    "screen_inputs",
    "screen_left_out",
]


REPUTATION_GATE = 500_000
"""FederationLedger's ``REPUTATION_GATE``: a rated validator below it is not counted in the medians.
Half the score scale: an honest validator on a small label-skewed split sits well above it
(agreement ~0.7-1.0 a round), an inverting one falls to ~0.2 after its first rated round."""


class InvalidVotes(FedtrailError):
    """Score vectors the contract would refuse: wrong length, out of range, unsorted, fewer
    than the quorum, or a round the reputation gate cannot decide (:class:`GateUndecided`)."""


class GateUndecided(InvalidVotes):
    """The contract's ``GateUndecided``: exactly half of the revealed validators pass the
    reputation gate, or a majority of them below the round's quorum; the round cannot be
    valued (see the module docstring)."""

    def __init__(self, *, passed: int, votes: int, quorum: int) -> None:
        self.passed, self.votes, self.quorum = passed, votes, quorum
        why = "exactly half" if 2 * passed == votes else f"a majority below the quorum {quorum}"
        super().__init__(
            f"{passed} of {votes} revealed validator(s) pass the reputation gate ({why}): the "
            "round cannot be valued"
        )


def default_quorum(active: int) -> int:
    """A peer round's quorum when the settings give none: a majority of the active sites."""
    return active // 2 + 1


def address_key(address: str) -> int:
    """An address as the contract orders it (uint160)."""
    return int(address, 16)


@dataclass(frozen=True, kw_only=True)
class PeerVote:
    """One validator's revealed score vector, aligned with the round's revealed sites."""

    validator: str
    scores: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class PeerOutcome:
    """What ``recordPeerValuation`` records: per site (address order) its median score, reason
    and how many counted peers scored it; per rated validator its distance and agreement
    (withheld validators at distance ``SCORE_SCALE``); which validators the medians counted.
    After ``dropWithheld`` (:func:`drop_withheld`) or ``dropScreened`` (:func:`drop_screened`)
    ``scores`` are the chain's (0 for a dropped update), ``dropped`` and ``screened`` the sites
    each dropped, and ``medians`` the peers' medians (empty: the same as ``scores``)."""

    sites: tuple[str, ...]
    scores: tuple[int, ...]
    reasons: tuple[Reason, ...]
    peer_counts: tuple[int, ...]
    distances: Mapping[str, int]
    agreements: Mapping[str, int]
    counted: tuple[str, ...] = ()
    withheld: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    medians: tuple[int, ...] = ()
    screened: tuple[str, ...] = ()

    @property
    def peer_medians(self) -> tuple[int, ...]:
        """Each site's median of its peers' scores (its score unless it was dropped)."""
        return self.medians or self.scores

    def validator_reputations(
        self, previous: Mapping[str, tuple[int, int]], *, alpha: int
    ) -> dict[str, int]:
        """Each rated validator's next reputation, from ``previous[validator] = (reputation,
        rated rounds)`` (absent: never rated; addresses matched in any case, as the gate
        matches them)."""
        by_key = {address_key(k): v for k, v in previous.items()}
        out: dict[str, int] = {}
        for validator, agreement in self.agreements.items():
            rep, rounds = by_key.get(address_key(validator), (0, 0))
            out[validator] = next_validator_reputation(
                rep, agreement, rated_rounds=rounds, alpha=alpha
            )
        return out


def next_validator_reputation(
    previous: int, agreement: int, *, rated_rounds: int, alpha: int
) -> int:
    """The contract's validator-reputation EMA: the first rating sets it; a lower agreement
    blends in by ``alpha``, a higher one by ``alpha // 4`` (trust comes back four times slower
    than it goes: with one factor, a liar that agrees every other round sat at ~0.59 after each
    agreeing round and was counted every time it lied)."""
    if rated_rounds == 0:
        return agreement
    factor = alpha if agreement < previous else alpha // 4
    return (factor * agreement + (SCORE_SCALE - factor) * previous) // SCORE_SCALE


def median(values: Sequence[int]) -> int:
    """The contract's median: the middle value, the higher middle of an even count, 0 if empty."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0


def _same(a: str, b: str) -> bool:
    return address_key(a) == address_key(b)


def counted_validators(
    votes: Sequence[PeerVote], *, standing: Mapping[str, tuple[int, int]], quorum: int
) -> tuple[str, ...]:
    """The validators whose entries the medians count (see the module docstring);
    ``standing[validator] = (validator reputation, rated rounds)`` before this round, absent for
    a validator never rated. Raises :class:`GateUndecided` where the contract reverts so."""
    by_key = {address_key(k): v for k, v in standing.items()}
    passed = tuple(
        v.validator
        for v in votes
        if by_key.get(address_key(v.validator), (0, 0))[1] == 0
        or by_key[address_key(v.validator)][0] >= REPUTATION_GATE
    )
    if 2 * len(passed) > len(votes):
        if len(passed) < quorum:
            raise GateUndecided(passed=len(passed), votes=len(votes), quorum=quorum)
        return passed
    if 2 * len(passed) < len(votes):
        return tuple(v.validator for v in votes)
    raise GateUndecided(passed=len(passed), votes=len(votes), quorum=quorum)


def cancelled_outcome(withheld: Sequence[str]) -> PeerOutcome:
    """What ``cancelRound`` rates when it cancels an open peer round: only the validators that
    committed a vector and did not reveal it, at distance ``SCORE_SCALE``; no score."""
    return PeerOutcome(
        sites=(),
        scores=(),
        reasons=(),
        peer_counts=(),
        distances=dict.fromkeys(withheld, SCORE_SCALE),
        agreements=dict.fromkeys(withheld, 0),
        withheld=tuple(withheld),
    )


def drop_withheld(outcome: PeerOutcome, dropped: Sequence[str]) -> PeerOutcome:
    """The outcome after ``dropWithheld`` dropped ``dropped`` (updates weighted and then not
    readable): their scores 0, reason WITHHELD; every other score, and every validator rating,
    as valued. Raises :class:`InvalidVotes` for a drop the contract refuses (an unknown or
    unweighted site)."""
    out = _drop(outcome, dropped, Reason.WITHHELD)
    merged = sorted({address_key(d): d for d in (*outcome.dropped, *dropped)}.items())
    return replace(out, dropped=tuple(d for _, d in merged))


def drop_screened(outcome: PeerOutcome, screened: Sequence[str]) -> PeerOutcome:
    """The outcome after ``dropScreened`` dropped ``screened`` (weighted updates the round's
    public free-rider screen marks, round terms ``valuation.public_screen``): their scores 0,
    reason FREE_RIDER; every other score, and every validator rating, as valued. Raises
    :class:`InvalidVotes` for a drop the contract refuses (an unknown or unweighted site)."""
    out = _drop(outcome, screened, Reason.FREE_RIDER)
    merged = sorted({address_key(d): d for d in (*outcome.screened, *screened)}.items())
    return replace(out, screened=tuple(d for _, d in merged))


def _drop(outcome: PeerOutcome, dropped: Sequence[str], reason: Reason) -> PeerOutcome:
    keys = {address_key(d) for d in dropped}
    index = {address_key(s): i for i, s in enumerate(outcome.sites)}
    for d in dropped:
        i = index.get(address_key(d))
        if i is None or outcome.scores[i] == 0:
            raise InvalidVotes(f"{d} has no weighted update in this round to drop")
    scores = tuple(
        0 if address_key(s) in keys else v
        for s, v in zip(outcome.sites, outcome.scores, strict=True)
    )
    reasons = tuple(
        reason if address_key(s) in keys else r
        for s, r in zip(outcome.sites, outcome.reasons, strict=True)
    )
    return replace(outcome, scores=scores, reasons=reasons, medians=outcome.peer_medians)


def peer_outcome(
    sites: Sequence[str],
    votes: Sequence[PeerVote],
    *,
    standing: Mapping[str, tuple[int, int]],
    quorum: int,
    withheld: Sequence[str] = (),
) -> PeerOutcome:
    """Median scores and validator distances (see the module docstring): ``standing`` is each
    validator's (validator reputation, rated rounds) before this round (absent: never rated),
    ``quorum`` the round's, ``withheld`` the validators that committed a vector and did not
    reveal it. Raises :class:`InvalidVotes` for input the contract refuses."""
    keys = [address_key(s) for s in sites]
    if any(b <= a for a, b in pairwise(keys)):
        raise InvalidVotes("sites must be in strictly ascending address order")
    vkeys = [address_key(v.validator) for v in votes]
    if any(b <= a for a, b in pairwise(vkeys)):
        raise InvalidVotes("validators must be in strictly ascending address order")
    wkeys = [address_key(w) for w in withheld]
    if any(b <= a for a, b in pairwise(wkeys)):
        raise InvalidVotes("withheld validators must be in strictly ascending address order")
    if set(wkeys) & set(vkeys):
        raise InvalidVotes("a validator that revealed its vector cannot have withheld it")
    for vote in votes:
        if len(vote.scores) != len(sites):
            raise InvalidVotes(
                f"validator {vote.validator} scored {len(vote.scores)} updates, not {len(sites)}"
            )
        if any(not 0 <= s <= SCORE_SCALE for s in vote.scores):
            raise InvalidVotes(f"validator {vote.validator} has a score outside 0..{SCORE_SCALE}")
    if len(votes) < quorum:
        raise InvalidVotes(f"{len(votes)} revealed score vector(s), fewer than the quorum {quorum}")
    counted = counted_validators(votes, standing=standing, quorum=quorum)
    jury = [v for v in votes if v.validator in counted]
    scores: list[int] = []
    counts: list[int] = []
    for i, site in enumerate(sites):
        entries = [v.scores[i] for v in jury if not _same(v.validator, site)]
        scores.append(median(entries))
        counts.append(len(entries))
    distances: dict[str, int] = {}
    agreements: dict[str, int] = {}
    for vote in votes:
        diffs = [
            abs(vote.scores[i] - scores[i])
            for i, site in enumerate(sites)
            if not _same(vote.validator, site)
        ]
        if not diffs:
            continue
        distance = sum(diffs) // len(diffs)
        distances[vote.validator] = distance
        agreements[vote.validator] = SCORE_SCALE - distance
    for who in withheld:
        distances[who] = SCORE_SCALE
        agreements[who] = 0
    return PeerOutcome(
        sites=tuple(sites),
        scores=tuple(scores),
        reasons=tuple(Reason.OK if s > 0 else Reason.PEER_REJECTED for s in scores),
        peer_counts=tuple(counts),
        distances=distances,
        agreements=agreements,
        counted=counted,
        withheld=tuple(withheld),
    )


def peer_explanation(*, count: int, median: int, gated: int, withheld: bool) -> str:
    """A peer round's log explanation of one update: every word follows from the chain (the
    update's peer ``count`` and ``median``, the revealed validators not counted below the
    reputation gate, ``gated``, and whether it was dropped as ``WITHHELD``), so ``audit
    verify`` rebuilds it and compares (``peers.median``; session 56, attack a125: a text that
    told of a median of 0.050 and a WITHHELD drop beside a site paid in full passed)."""
    return (
        f"Scored by its peers: the median of the {count} other validator(s)' scores is "
        f"{median / SCORE_SCALE:.3f}"
        + ("" if count else " (no other validator scored it)")
        + (f" ({gated} validator(s) below the reputation gate not counted)" if gated else "")
        + "."
        + (
            " It was then dropped: the aggregator could not read the update back by the score "
            "reveal deadline (reason WITHHELD), and its weight went to the others."
            if withheld
            else ""
        )
    )


def screen_inputs(outcome: PeerOutcome) -> tuple[str, ...]:
    """The updates a peer round's public screen reads (round terms ``valuation.public_screen``;
    README *Peer rounds*), from the chain alone: the revealed updates whose peer median (before
    any drop) is positive, less those dropped as withheld (``dropWithheld``), in address order.
    A majority of the counted validators read and scored each of them while the round was
    scored, and the aggregator had to read each to aggregate or drop it; an update nobody could
    read then (median 0, ``PEER_REJECTED``) or one withheld is never an input, whatever becomes
    readable later, so the aggregator, ``audit verify`` and the independent reader screen the
    same set at any time (session 55: colluders who served their blobs only after the finalize
    moved the screen's median norm and claimed-count median at audit time). The same set, in
    any peer round, is the only one whose updates can be *Duplicates* originals and whose log
    statuses must be ``audit verify``'s reading (the others may also be ``ok``, ``duplicate``
    or ``malformed``, never a ``tampered`` it does not read; session 56: a colluder's early
    near-copy of its ally's update, withheld while scored and served after the finalize, made
    the ally's weighted update a copy at audit time)."""
    dropped = {address_key(d) for d in outcome.dropped}
    return tuple(
        site
        for site, m in zip(outcome.sites, outcome.peer_medians, strict=True)
        if m > 0 and address_key(site) not in dropped
    )


def _before_screen(outcome: PeerOutcome, left_out: Collection[str] = ()) -> list[int]:
    """Each site's score as the chain holds it once the updates dropped as withheld are dropped
    and before any drop as screened: its peer median, 0 for a withheld one, and 0 for one of
    ``left_out`` (:func:`screen_left_out`: the screen treats it as withheld)."""
    dropped = {address_key(d) for d in (*outcome.dropped, *left_out)}
    return [
        0 if address_key(site) in dropped else m
        for site, m in zip(outcome.sites, outcome.peer_medians, strict=True)
    ]


def screen_left_out(
    outcome: PeerOutcome, num_samples: Sequence[int], unreadable: Collection[str]
) -> tuple[str, ...]:
    """The screen's inputs (:func:`screen_inputs`) that the public screen leaves out because
    they cannot be read (``unreadable``: the sites whose update the reader, the aggregator or
    an auditor, cannot read or decode now) and carry no weight once the updates dropped as
    withheld are dropped (the weight rule over ``num_samples``, in ``outcome.sites`` order, and
    the peer medians with the withheld ones at 0): a positive median that rounds to weight 0
    (its exact share below one unit of 1e-18), in address order (session 61, h-291; README
    *Peer rounds*). Such an update adds nothing to the aggregate and is paid nothing, yet, as
    an input, it blocked the screen, and the contract cannot drop it as withheld (it drops only
    a weighted update, ``NotWeighted``): an honest aggregator could neither screen nor
    finalize nor cancel the round in a way ``audit verify`` passes. The screen treats it as
    withheld: not read, and at score 0 in :func:`screen_drop` and
    :func:`screen_empties_round` (if a drop as screened re-weights it above 0 the aggregator
    drops it as withheld, or cancels the round when nothing else would keep weight). So it is
    what an update dropped as withheld, or never sent, is to the screen. Each reader decides
    it on its own reading: an update the aggregator claims unreadable but an auditor reads is
    an input to the auditor, whose recomputed screen then disagrees with the aggregator's drop
    or cancel (a weighted unreadable input is never left out: it is dropped as withheld, or
    the screen waits)."""
    inputs = screen_inputs(outcome)
    keys = {address_key(u) for u in unreadable}
    try:
        weights = onchain_weights(num_samples, _before_screen(outcome))
    except ZeroTotalWeight:
        weights = [0] * len(outcome.sites)
    weight = {address_key(s): w for s, w in zip(outcome.sites, weights, strict=True)}
    return tuple(
        site for site in inputs if address_key(site) in keys and weight[address_key(site)] == 0
    )


def screen_drop(
    outcome: PeerOutcome,
    num_samples: Sequence[int],
    marked: Collection[str],
    *,
    left_out: Collection[str] = (),
) -> tuple[str, ...]:
    """The updates a peer round's public screen drops (``dropScreened``; round terms
    ``valuation.public_screen``), in address order: each of ``marked`` (the sites the screen
    marks) whose on-chain weight is above 0 once the updates dropped as withheld are dropped
    and before any drop as screened, i.e. the weight rule
    (:func:`~fedtrail.protocol.weights.onchain_weights`) over ``num_samples`` (the revealed
    updates', in ``outcome.sites`` order) and the peer medians with the withheld ones at 0.
    Those are the weights the chain holds when the screen's drop lands, and the contract drops
    only a weighted update: a marked one whose positive median rounds to weight 0 (its exact
    share below one unit of 1e-18) is not dropped, and is not paid either, *unless* the drop
    re-weights it above 0: the rule then drops it too, in the drop's next step (the weights
    re-derived over what is left, until no marked update is weighted; the aggregator posts
    each step as its own ``dropScreened``, since the contract drops only what is weighted when
    the call lands). Before (h-284), only the first step was the rule, and a marked update at
    weight 0 from rounding beside the marked weighted one got the whole round once that one
    was dropped, and verify passed the model paying it. The one rule the
    aggregator posts and ``audit verify`` recomputes (``peers.screen``); it reads only the
    chain's record (``outcome``: drops as screened already made do not change it, so the
    aggregator's retry posts nothing twice). ``left_out``: :func:`screen_left_out`'s: each
    keeps its median, as on the chain, unless a step re-weights it above 0 (it must then be
    dropped as withheld): it is then at score 0, like a withheld update, and the steps run
    again from the start, as they do once the chain's record holds that drop. Empty when
    nothing has a positive median."""
    keys = {address_key(m) for m in marked}
    left = {address_key(s) for s in left_out}
    # a left-out update keeps its median on the chain (weight 0) until a drop re-weights it and
    # it is dropped as withheld: its score is in every total the contract divides by, so the
    # steps run on the chain's scores; only one a step re-weights goes to 0, and then from the
    # start, as the chain's record holds it once dropped (session 61, h-297: at 0 from the
    # start, its tiny product left the total and moved a rounding unit, so the rule dropped a
    # marked update the chain holds at weight 0 and verify failed the honest finalize)
    zeroed: set[str] = set()  # the left-out sites a step re-weights
    while True:
        scores = _before_screen(outcome, zeroed)
        out: set[int] = set()
        again: set[str] = set()
        while True:
            try:
                weights = onchain_weights(
                    num_samples, [0 if i in out else v for i, v in enumerate(scores)]
                )
            except ZeroTotalWeight:
                break
            again = {
                site
                for site, w in zip(outcome.sites, weights, strict=True)
                if w > 0 and address_key(site) in left and site not in zeroed
            }
            if again:
                break
            more = {
                i
                for i, (site, w) in enumerate(zip(outcome.sites, weights, strict=True))
                if w > 0 and i not in out and address_key(site) in keys
            }
            if not more:
                break
            out |= more
        if not again:
            return tuple(site for i, site in enumerate(outcome.sites) if i in out)
        zeroed |= again


def screen_empties_round(
    outcome: PeerOutcome,
    num_samples: Sequence[int],
    drop: Collection[str],
    *,
    left_out: Collection[str] = (),
) -> bool:
    """Whether dropping ``drop`` as screened (:func:`screen_drop`'s, with the drops as screened
    already made) leaves every update of the round at sample count x score 0: the contract
    then refuses the drop (``ZeroTotalWeight``) and the round cannot be finalized with or
    without it (an auditor fails a round that pays an update the screen marks), so the
    aggregator cancels it once its score reveals close (``cancelRound``) and ``audit verify``'s
    ``peers.cancelled`` passes that cancel. An update whose positive median rounds to weight 0
    and that the screen does not mark keeps the round alive: the drop re-weights it, unless it
    is one of ``left_out`` (:func:`screen_left_out`: unreadable, so a drop that re-weights it
    must drop it as withheld too, and the contract refuses the drop that leaves no weight)."""
    gone = {address_key(d) for d in (*drop, *outcome.screened)}
    scores = _before_screen(outcome, left_out)
    return not any(
        n * s > 0
        for site, n, s in zip(outcome.sites, num_samples, scores, strict=True)
        if address_key(site) not in gone
    )
