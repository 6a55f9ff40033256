"""Checks of a peer round (issue 14): its scores follow from the revealed score vectors alone.

In a peer round (terms ``valuation.mode = "peers"``) no aggregator scores: every site that was
registered when the round opened may reveal a score vector, and ``recordPeerValuation`` takes
each update's median over the other validators (:mod:`fedtrail.protocol.peers`). Every input of
that rule is public, so an auditor recomputes each score, reason, weight and validator
reputation with no validation split at all:

* ``peers.votes``: every vector read from the chain's ``ScoresRevealed`` events hashes to what
  the contract stored for its validator (``keccak256(abi.encode(round, validator, scores))``),
  one per validator, as many as the chain's vote count; and the log's ``peers`` block repeats
  them exactly (ascending validator order);
* ``peers.median``: the chain's and the log's scores and reasons are
  :func:`~fedtrail.protocol.peers.peer_outcome` of those votes over the revealed updates in
  address order (counting only the validators the reputation gate lets in, from the standing
  the earlier rounds' ``ValidatorRated`` events left), and the chain's and the log's weights
  the shared weight rule over those medians; a log entry's ``peer_median`` and ``peer_count``
  components, when given, are that median and the number of counted other validators that
  scored the update, and it gives no other component (no one could check it); its
  explanation is :func:`~fedtrail.protocol.peers.peer_explanation` of them (session 56);
* ``peers.quorum``: the chain's peer record is the one the terms committed (quorum, score commit
  and reveal windows after the reveal deadline) and the revealed votes meet the quorum;
* ``peers.cancelled`` (a cancelled peer round; one cancelled after its valuation is checked in
  ``fedtrail.auditor.verify``: every update with a positive score unreadable, or all of them
  marked by the public screen): the round could not have been valued, i.e.
  fewer revealed votes than the quorum, no revealed update, the reputation gate undecided
  (exactly half of the voters pass it, or a majority below the quorum: ``GateUndecided``), or
  every median 0. A peer round
  whose votes met the quorum and give some update a weight was valuable by anyone
  (``recordPeerValuation`` is open to all), so cancelling it overrode the validators;
* ``peers.withheld`` (a round in which the aggregator dropped weighted updates as unreadable,
  ``dropWithheld``, finalized or cancelled afterwards): each dropped update cannot be used now
  (not retrievable, not matching its sha256, or malformed). One that reads was droppable only
  if its site published it after the score reveal deadline: the check fails, and the auditor
  cannot tell that from an aggregator that dropped a readable update (data availability is not
  provable after the fact);
* ``peers.screen``: under the terms' ``valuation.public_screen`` (with ``standing``), the
  updates the aggregator dropped as free-riders (``dropScreened``, ``UpdateScreened``) are
  exactly the ones the round's public free-rider screen, recomputed here from the start model,
  the screen's inputs the chain names (the revealed updates with a positive median, less
  those dropped as withheld: ``fedtrail.protocol.peers.screen_inputs``) and the references
  of the latest ``stale_rounds`` finalized rounds
  (``fedtrail.valuation.chained.public_screen_of``), marks and that are weighted once the
  updates dropped as withheld are dropped (``fedtrail.protocol.peers.screen_drop``, the rule
  the aggregator posts: a marked update whose positive median rounds to weight 0 is neither
  droppable nor paid): an aggregator that zeroes a rival's update or spares an ally's fails
  it, naming the site. Without the option, any such drop fails it. In a round
  never finalized (left valued, or cancelled after its valuation) only the drops are checked
  (the aggregator drops what the screen marks at finalize): each must be one it marks, and one
  whose update does not read now cannot be re-checked and fails;
* ``peers.reputation``: each validator's distance and reputation in this round's
  ``ValidatorRated`` events equal the contract's EMA recomputed from its earlier ratings and this
  round's agreement, exactly the validators with another site to score are rated (and every
  validator that committed a vector it never revealed, at agreement 0), and a
  validator's current ``validator_standing`` is what its latest rated round left.

The checks take plain records (:class:`PeerRecord`, read once from the chain), so each can be
exercised with hand-built inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from fedtrail.ledger import Ledger, Submission, checksum
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import (
    InvalidVotes,
    PeerOutcome,
    PeerVote,
    address_key,
    drop_screened,
    drop_withheld,
    peer_explanation,
    peer_outcome,
    screen_drop,
)
from fedtrail.protocol.roundlog import InvalidLog, SiteEntry, ValuationSettings
from fedtrail.protocol.terms import RoundTerms
from fedtrail.protocol.weights import ZeroTotalWeight, onchain_weights

__all__ = [
    "CANCELLED",
    "MEDIAN",
    "QUORUM",
    "REPUTATION",
    "SCREEN",
    "VOTES",
    "WITHHELD",
    "Check",
    "PeerRecord",
    "PeerTable",
    "check_cancelled",
    "check_median",
    "check_public_screen",
    "check_quorum",
    "check_reputation",
    "check_votes",
    "check_withheld",
    "peer_table",
    "read_peer_record",
    "vote_hash",
]

VOTES = "peers.votes"
MEDIAN = "peers.median"
QUORUM = "peers.quorum"
REPUTATION = "peers.reputation"
CANCELLED = "peers.cancelled"
WITHHELD = "peers.withheld"
SCREEN = "peers.screen"

PEER_COMPONENTS = frozenset({"peer_median", "peer_count"})
"""The components a peer round's log may give a site: both follow from the chain's votes."""

Check = tuple[str, bool, str]
"""(check name, passed, detail), as :class:`~fedtrail.auditor.verify.RoundAudit` adds them."""


def vote_hash(round_id: int, validator: str, scores: Sequence[int]) -> str:
    """What ``revealScores`` stores in place of the commitment once a vector opens it:
    hex (no 0x, as the ledger client gives bytes32) of
    ``keccak256(abi.encode(uint256 round, address validator, uint32[] scores))``."""
    encoded = abi_encode(
        ["uint256", "address", "uint32[]"], [round_id, checksum(validator), list(scores)]
    )
    return keccak(encoded).hex()


@dataclass(frozen=True, kw_only=True)
class PeerRecord:
    """What the chain holds for one peer round, read once (:func:`read_peer_record`).

    ``votes``: the ``ScoresRevealed`` events in chain order; ``stored``: per validator that
    revealed, what the contract stores for it (``scoreVote``: the vote's hash once revealed);
    ``rated``: this round's ``ValidatorRated`` events, validator -> (distance, reputation
    after); ``before``: per validator, (reputation, rated rounds) before this round, from the
    earlier rounds' ``ValidatorRated`` events; ``standing``: the contract's current
    (reputation, rated rounds) of each validator whose latest rating is this round's;
    ``committed``: the validators of the round's ``ScoresCommitted`` events; ``dropped``: the
    sites of its ``UpdateWithheld`` events (weighted, then dropped as unreadable);
    ``screened``: the sites of its ``UpdateScreened`` events (weighted, then dropped as the
    public screen's free-riders)."""

    round: int
    quorum: int
    commit_count: int
    vote_count: int
    reveal_deadline: int
    score_commit_deadline: int
    score_reveal_deadline: int
    votes: tuple[PeerVote, ...]
    stored: Mapping[str, str] = field(default_factory=dict)
    rated: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    before: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    standing: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    alpha: int = 0
    committed: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    screened: tuple[str, ...] = ()

    def sorted_votes(self) -> tuple[PeerVote, ...]:
        """The votes in ascending validator order (the order the rule and the log use)."""
        return tuple(sorted(self.votes, key=lambda v: address_key(v.validator)))

    def withheld(self) -> tuple[str, ...]:
        """The validators that committed a vector and did not reveal it (address order)."""
        revealed = {address_key(v.validator) for v in self.votes}
        return tuple(
            sorted(
                {_key(c) for c in self.committed if address_key(c) not in revealed},
                key=address_key,
            )
        )

    def outcome(self, sites: Sequence[str]) -> PeerOutcome:
        """The contract's rule over these votes for the revealed updates ``sites`` (address
        order), then the drops; raises :class:`~fedtrail.protocol.peers.InvalidVotes` as it
        does."""
        outcome = peer_outcome(
            sites,
            self.sorted_votes(),
            standing=self.before,
            quorum=self.quorum,
            withheld=self.withheld(),
        )
        outcome = drop_withheld(outcome, self.dropped) if self.dropped else outcome
        return drop_screened(outcome, self.screened) if self.screened else outcome


def _key(address: str) -> str:
    return checksum(address)


def check_votes(
    record: PeerRecord, log_votes: Sequence[PeerVote] | None, *, with_log: bool = True
) -> Check:
    """``peers.votes`` (see the module docstring). ``with_log=False``: a round with no log yet
    (valued, not finalized), whose vectors are checked against the chain alone."""
    problems: list[str] = []
    seen: set[str] = set()
    stored = {_key(k): v.lower().removeprefix("0x") for k, v in record.stored.items()}
    for vote in record.votes:
        who = _key(vote.validator)
        if who in seen:
            problems.append(f"{who[:10]} revealed twice")
            continue
        seen.add(who)
        want = stored.get(who)
        if want is None:
            problems.append(f"{who[:10]}'s revealed vector has no stored hash on chain")
        elif vote_hash(record.round, who, vote.scores) != want:
            problems.append(f"{who[:10]}'s revealed vector does not hash to the stored vote")
    if len(record.votes) != record.vote_count:
        problems.append(
            f"{len(record.votes)} ScoresRevealed event(s), the contract counts {record.vote_count}"
        )
    chain = [(address_key(v.validator), tuple(v.scores)) for v in record.sorted_votes()]
    if not with_log:
        pass
    elif log_votes is None:
        problems.append("the log has no peers block")
    else:
        logged = [(address_key(v.validator), tuple(v.scores)) for v in log_votes]
        if logged != chain:
            differ = [
                _key(v.validator)[:10]
                for v in log_votes
                if (address_key(v.validator), tuple(v.scores)) not in chain
            ]
            problems.append(
                "the log's votes are not the chain's"
                + (f" ({', '.join(differ)} differ)" if differ else " (order or count differs)")
            )
    return (
        VOTES,
        not problems,
        "; ".join(problems)
        or f"{len(chain)} revealed vector(s), each hashing to its stored vote"
        + ("; the log repeats them exactly" if with_log else " (no log yet)"),
    )


def check_median(
    record: PeerRecord, subs: Sequence[Submission], log_sites: Sequence[SiteEntry] | None
) -> tuple[Check, PeerOutcome | None]:
    """``peers.median`` (see the module docstring) over the revealed updates ``subs`` and the
    log's site entries (None: no readable log), and the outcome the votes give (None when the
    votes are not ones the contract would take)."""
    ordered = sorted(subs, key=lambda s: address_key(s.site))
    try:
        outcome = record.outcome([s.site for s in ordered])
    except InvalidVotes as exc:
        return (MEDIAN, False, f"the chain's votes cannot be combined: {exc}"), None
    try:
        weights = onchain_weights([s.num_samples for s in ordered], outcome.scores)
    except ZeroTotalWeight:
        return (MEDIAN, False, "every median gives zero weight: the round could not be valued"), (
            outcome
        )
    problems: list[str] = []
    entries = {_key(e.site): e for e in log_sites or ()}
    for sub, score, reason, weight, count, median in zip(
        ordered,
        outcome.scores,
        outcome.reasons,
        weights,
        outcome.peer_counts,
        outcome.peer_medians,
        strict=True,
    ):
        who = sub.site[:10]
        if (sub.score, sub.reason, sub.weight) != (score, int(reason), weight):
            problems.append(
                f"chain {who} score {sub.score} reason {sub.reason} weight {sub.weight}, the "
                f"median gives {score} {reason.name} weight {weight}"
            )
        entry = entries.get(_key(sub.site))
        if entry is not None and (entry.score, entry.reason, entry.weight) != (
            score,
            int(reason),
            weight,
        ):
            problems.append(
                f"log {who} score {entry.score} reason {entry.reason} weight {entry.weight}, the "
                f"median gives {score} {reason.name} weight {weight}"
            )
        if entry is not None:
            # the aggregator's components name the median and how many peers scored the update
            # (what the site reads as its explanation): both follow from the votes too
            for key, want in (("peer_median", median), ("peer_count", count)):
                got = entry.components.get(key, want)
                if type(got) is not int or got != want:
                    problems.append(f"log {who} component {key} {got!r}, the votes give {want}")
            # and the sentence shown beside them is theirs, word for word (a125)
            said = peer_explanation(
                count=count,
                median=median,
                gated=len(record.votes) - len(outcome.counted),
                withheld=sub.reason == Reason.WITHHELD,
            )
            if entry.explanation != said:
                problems.append(
                    f"log {who} explanation {entry.explanation[:160]!r}, the votes give {said!r}"
                )
            # nothing else: a peer round has no aggregator statistics, and figures such as a
            # norm_z or cosine (recomputed in an aggregator round) would go unchecked here
            extra = sorted(str(k) for k in entry.components if k not in PEER_COMPONENTS)
            if extra:
                problems.append(
                    f"log {who} components {', '.join(extra)[:200]}: a peer round's log holds "
                    "only peer_median and peer_count, and no one recomputes the others"
                )
    if log_sites is None:
        problems.append("no log to compare")
    return (
        MEDIAN,
        not problems,
        "; ".join(problems)
        or f"{len(ordered)} score(s), reason(s) and weight(s) on chain"
        + (" and in the log" if log_sites else "")
        + " are the "
        f"medians of {len(outcome.counted)} of {len(record.votes)} revealed vector(s) (self "
        "entries not counted"
        + (
            f"; {len(record.votes) - len(outcome.counted)} below the reputation gate"
            if len(outcome.counted) < len(record.votes)
            else ""
        )
        + ")",
    ), outcome


def check_quorum(record: PeerRecord, terms: RoundTerms | None) -> Check:
    """``peers.quorum`` (see the module docstring)."""
    problems: list[str] = []
    if terms is None:
        problems.append("no readable terms to compare the chain's peer record with")
    else:
        try:
            # parsed as every party parses it: a quorum of true or 3.0 is none (Python's
            # ``True == 1`` and ``3.0 == 3`` would let it pass)
            valuation = ValuationSettings.from_json(terms.valuation)
        except InvalidLog as exc:
            problems.append(f"the terms' valuation block is invalid: {exc}")
        else:
            if valuation.mode != "peers":
                problems.append("the chain holds a peer round, the terms do not say mode 'peers'")
            if valuation.quorum != record.quorum:
                problems.append(f"terms' quorum {valuation.quorum}, the chain's {record.quorum}")
        commit = record.score_commit_deadline - record.reveal_deadline
        reveal = record.score_reveal_deadline - record.score_commit_deadline
        if (commit, reveal) != (terms.score_commit_seconds, terms.score_reveal_seconds):
            problems.append(
                f"chain's score windows {commit} s / {reveal} s, the terms' "
                f"{terms.score_commit_seconds} s / {terms.score_reveal_seconds} s"
            )
    if record.quorum < 1:
        problems.append("the chain's quorum is 0 (an aggregator round)")
    if record.vote_count < record.quorum or len(record.votes) < record.quorum:
        problems.append(
            f"{len(record.votes)} vote(s) revealed, fewer than the quorum {record.quorum}"
        )
    if record.commit_count < record.vote_count:
        problems.append(f"{record.vote_count} votes from {record.commit_count} commitments")
    return (
        QUORUM,
        not problems,
        "; ".join(problems)
        or f"{len(record.votes)} of {record.commit_count} committed vector(s) revealed, quorum "
        f"{record.quorum}; quorum and score windows are the committed terms'",
    )


def check_cancelled(record: PeerRecord, subs: Sequence[Submission]) -> Check:
    """``peers.cancelled`` (see the module docstring) over the round's revealed updates
    ``subs``: passes when the contract would have refused ``recordPeerValuation``."""
    revealed = sorted((s for s in subs if s.revealed), key=lambda s: address_key(s.site))
    votes = record.sorted_votes()
    if len(votes) < record.quorum or record.vote_count < record.quorum:
        return (
            CANCELLED,
            True,
            f"{len(votes)} vote(s) revealed, fewer than the quorum {record.quorum}: the round "
            "could not be valued",
        )
    if not revealed:
        return (CANCELLED, True, "no update was revealed: the round could not be valued")
    try:
        outcome = record.outcome([s.site for s in revealed])
        weights = onchain_weights([s.num_samples for s in revealed], outcome.scores)
    except InvalidVotes as exc:
        return (CANCELLED, True, f"the chain's votes cannot be combined: {exc}")
    except ZeroTotalWeight:
        return (CANCELLED, True, "every median gives zero weight: the round could not be valued")
    weighted = [s.site[:10] for s, w in zip(revealed, weights, strict=True) if w > 0]
    return (
        CANCELLED,
        False,
        f"{len(votes)} revealed vote(s) met the quorum {record.quorum} and their medians give "
        f"{len(weighted)} update(s) a weight ({', '.join(weighted)}): anyone could have "
        "recorded the peer valuation, yet the round was cancelled",
    )


def check_public_screen(
    record: PeerRecord,
    outcome: PeerOutcome | None,
    marked: Mapping[str, str] | None,
    *,
    public: bool,
    settled: bool,
    num_samples: Sequence[int],
    left_out: Collection[str] = (),
) -> Check:
    """``peers.screen`` (see the module docstring): ``marked`` is the public screen recomputed
    (site -> why; None when it could not be), ``public`` whether the terms ask for it,
    ``settled`` whether the round finalized (the aggregator posts the screen before it
    finalizes, so only then must every drop be there); ``outcome`` the chain's (its
    ``peer_medians`` are the medians before any drop) and ``num_samples`` its revealed
    updates' sample counts (``outcome.sites`` order). The updates that must be dropped are
    :func:`~fedtrail.protocol.peers.screen_drop`'s, the rule the aggregator posts: the marked
    ones weighted once the withheld ones are dropped (a positive median that rounds to weight
    0 is neither droppable nor paid); ``left_out`` the inputs it left out as unreadable at
    weight 0 (:func:`~fedtrail.protocol.peers.screen_left_out`, at score 0 in the rule)."""
    screened = set(record.screened)
    if not public:
        if screened:
            return (
                SCREEN,
                False,
                "dropScreened zeroed "
                + ", ".join(s[:10] for s in sorted(screened))
                + " in a round whose terms have no public screen (valuation.public_screen)",
            )
        return SCREEN, True, "no public screen in the terms, and no update dropped as screened"
    if marked is None or outcome is None:
        return SCREEN, False, "the public screen cannot be recomputed (see the checks above)"
    spared = sorted(
        s for s in screen_drop(outcome, num_samples, marked, left_out=left_out) if s not in screened
    )
    zeroed = sorted(screened - set(marked))
    problems = []
    if zeroed:
        problems.append(
            "dropped as free-riders, yet the public screen does not mark them: "
            + ", ".join(s[:10] for s in zeroed)
            + " (the aggregator zeroed an update the rule spares)"
        )
    if spared and settled:
        problems.append(
            "marked by the public screen and weighted by the peers' medians, yet not dropped: "
            + "; ".join(f"{s[:10]} ({marked[s]})" for s in spared)
            + " (the aggregator spared an update the rule zeroes)"
        )
    if problems:
        return SCREEN, False, "; ".join(problems)
    return (
        SCREEN,
        True,
        f"the public screen recomputed marks {len(marked)} update(s)"
        + (": " + ", ".join(s[:10] for s in sorted(marked)) if marked else "")
        + f"; {len(screened)} dropped as screened, every weighted one it marks"
        + (
            "; left out as unreadable at weight 0 (as if withheld): "
            + ", ".join(s[:10] for s in left_out)
            if left_out
            else ""
        ),
    )


def check_withheld(subs: Sequence[Submission], unusable: Mapping[str, Reason]) -> Check:
    """``peers.withheld`` (see the module docstring): every revealed update the chain marks
    WITHHELD is among ``unusable`` (site -> how this audit failed to use it)."""
    dropped = [s for s in subs if s.reason == Reason.WITHHELD]
    readable = [s.site[:10] for s in dropped if s.site not in unusable]
    if readable:
        return (
            WITHHELD,
            False,
            f"dropped as unreadable, yet {', '.join(readable)} read(s) and decode(s) now: the "
            "aggregator dropped a readable update, or its site published it only after the "
            "score reveal deadline",
        )
    return (
        WITHHELD,
        True,
        f"{len(dropped)} update(s) dropped as unreadable cannot be used here either: "
        + "; ".join(f"{s.site[:10]} {unusable[s.site].name}" for s in dropped),
    )


def check_reputation(record: PeerRecord, outcome: PeerOutcome | None) -> Check:
    """``peers.reputation`` (see the module docstring)."""
    if outcome is None:
        return (REPUTATION, False, "no outcome to rate validators by (see peers.median)")
    before = {_key(k): v for k, v in record.before.items()}
    expected = outcome.validator_reputations(before, alpha=record.alpha)
    expected = {_key(k): v for k, v in expected.items()}
    distances = {_key(k): v for k, v in outcome.distances.items()}
    rated = {_key(k): v for k, v in record.rated.items()}
    problems: list[str] = []
    for who in sorted(set(rated) - set(expected)):
        problems.append(f"{who[:10]} rated, but it scored no other site and withheld no vector")
    for who in sorted(expected):
        want = (distances[who], expected[who])
        got = rated.get(who)
        if got is None:
            problems.append(f"{who[:10]} not rated")
        elif got != want:
            problems.append(
                f"{who[:10]} rated distance {got[0]} reputation {got[1]}, recomputed {want[0]} "
                f"{want[1]}"
            )
    for who, now in sorted(record.standing.items()):
        key = _key(who)
        if key not in expected:
            continue
        want_now = (expected[key], before.get(key, (0, 0))[1] + 1)
        if now != want_now:
            problems.append(
                f"{key[:10]}'s validator standing {now[0]} after {now[1]} rated round(s), "
                f"recomputed {want_now[0]} after {want_now[1]}"
            )
    return (
        REPUTATION,
        not problems,
        "; ".join(problems)
        or f"{len(expected)} validator(s) rated: distance from the median and reputation equal "
        f"the contract's EMA (alpha {record.alpha}) over their earlier ratings",
    )


def read_peer_record(ledger: Ledger, round_id: int) -> PeerRecord | None:
    """The chain's record of a peer round (None for an aggregator round)."""
    info = ledger.get_peer_round(round_id)
    if info is None:
        return None
    votes = tuple(
        PeerVote(
            validator=_key(str(ev.args["validator"])),
            scores=tuple(int(x) for x in ev.args["scores"]),
        )
        for ev in ledger.events("ScoresRevealed", argument_filters={"round": round_id})
    )
    stored: dict[str, str] = {}
    for vote in votes:  # the flag scoreVote returns marks the validator's latest round only
        stored[vote.validator] = ledger.score_vote(round_id, vote.validator)[0]
    rated: dict[str, tuple[int, int]] = {}
    later: set[str] = set()
    ratings = ledger.events("ValidatorRated")
    for ev in ratings:
        who, r = _key(str(ev.args["validator"])), int(ev.args["round"])
        if r == round_id:
            rated[who] = (int(ev.args["distance"]), int(ev.args["validatorReputation"]))
        elif r > round_id:
            later.add(who)
    committed = tuple(
        _key(str(ev.args["validator"]))
        for ev in ledger.events("ScoresCommitted", argument_filters={"round": round_id})
    )
    standing: dict[str, tuple[int, int]] = {}
    for who in sorted(set(rated) - later):
        now = ledger.validator_standing(who)
        standing[who] = (now.reputation, now.rated_rounds)
    return PeerRecord(
        round=round_id,
        quorum=info.quorum,
        commit_count=info.commit_count,
        vote_count=info.vote_count,
        reveal_deadline=ledger.get_round(round_id).reveal_deadline,
        score_commit_deadline=info.score_commit_deadline,
        score_reveal_deadline=info.score_reveal_deadline,
        votes=votes,
        stored=stored,
        rated=rated,
        before=ledger.validator_ratings_before(round_id, ratings),
        standing=standing,
        alpha=ledger.reputation_alpha(),
        committed=committed,
        dropped=tuple(ledger.peer_dropped(round_id)),
        screened=tuple(ledger.peer_screened(round_id)),
    )


@dataclass(frozen=True, kw_only=True)
class PeerTable:
    """A peer round for the report: rows validators, columns the revealed updates (address
    order), the median row, and each validator's distance and reputation as the chain rated it.
    ``own[i]``: the column a validator's own update sits in (not counted), or None."""

    round: int
    sites: tuple[str, ...]
    validators: tuple[str, ...]
    vectors: tuple[tuple[int, ...], ...]
    own: tuple[int | None, ...]
    medians: tuple[int, ...]
    reasons: tuple[int, ...]
    peer_counts: tuple[int, ...]
    distances: tuple[int | None, ...]
    reputations: tuple[int | None, ...]
    quorum: int
    counted: tuple[bool, ...] = ()
    withheld: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "quorum": self.quorum,
            "withheld": list(self.withheld),
            "sites": list(self.sites),
            "median": list(self.medians),
            "reasons": [Reason(r).name for r in self.reasons],
            "peer_counts": list(self.peer_counts),
            "validators": [
                {
                    "validator": v,
                    "scores": list(vec),
                    "self_index": own,
                    "distance": dist,
                    "validator_reputation": rep,
                    "counted": counted,
                }
                for v, vec, own, dist, rep, counted in zip(
                    self.validators,
                    self.vectors,
                    self.own,
                    self.distances,
                    self.reputations,
                    self.counted or (True,) * len(self.validators),
                    strict=True,
                )
            ],
        }


def peer_table(record: PeerRecord, subs: Sequence[Submission]) -> PeerTable | None:
    """The report's table of a peer round (None when its votes cannot be combined)."""
    sites = sorted((s.site for s in subs), key=address_key)
    votes = record.sorted_votes()
    try:
        outcome = record.outcome(sites)
    except InvalidVotes:
        return None
    index = {_key(s): i for i, s in enumerate(sites)}
    rated = {_key(k): v for k, v in record.rated.items()}
    return PeerTable(
        round=record.round,
        sites=tuple(sites),
        validators=tuple(v.validator for v in votes),
        vectors=tuple(tuple(v.scores) for v in votes),
        own=tuple(index.get(_key(v.validator)) for v in votes),
        medians=outcome.peer_medians,  # after a drop the chain's score is 0, the median is not
        reasons=tuple(int(r) for r in outcome.reasons),
        peer_counts=outcome.peer_counts,
        distances=tuple(outcome.distances.get(v.validator) for v in votes),
        reputations=tuple(
            rated[_key(v.validator)][1] if _key(v.validator) in rated else None for v in votes
        ),
        quorum=record.quorum,
        counted=tuple(v.validator in outcome.counted for v in votes),
        withheld=outcome.withheld,
    )
