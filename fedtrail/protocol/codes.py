"""The codes the chain stores: a round's phase and the reason posted with each score.

Both mirror enums of FederationLedger (``Phase``, ``Reason``; a uint8 in the ABI); every role
reads and writes them through this one module.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "DEFAULT_MIN_ROUND_WINDOW",
    "MAX_ROUND_ID",
    "MAX_ROUND_WINDOW",
    "MAX_SITE_SAMPLES",
    "SANE_SITE_SAMPLES",
    "Decline",
    "Phase",
    "Reason",
]

MAX_ROUND_ID = 2**32 - 1
"""FederationLedger numbers rounds from 1 and packs the id in 32 bits."""

MAX_SITE_SAMPLES = 2**48 - 1
"""The contract's limit on a site's ``maxSamples`` (a uint48, so it shares the slot a reveal
writes); a revealed sample count is at most the site's ``maxSamples``."""

SANE_SITE_SAMPLES = 10**9
"""The largest ``maxSamples`` fedtrail's coordinator commands give a site (the contract takes up
to :data:`MAX_SITE_SAMPLES`). No site trains on a billion images, and below this bound a
positive score can never round to weight 0 (the sum of samples x score stays under 1e18 for
any round the block gas limit admits), the edge on which a site withholding a scored update at
weight 0 can stall peer rounds (README *Peer rounds*, h-297)."""

DEFAULT_MIN_ROUND_WINDOW = 10
"""Seconds: the shortest commit window, and reveal window, a ledger deployed with the defaults
accepts. A deadline a couple of seconds ahead would let an aggregator shut sites out."""

MAX_ROUND_WINDOW = 2**32
"""Seconds: the longest commit, reveal or score window the aggregator opens (``aggregator run
--round-seconds`` and the others), 136 years. A ledger whose minimum window is longer is one
where no round can open, so ``chain deploy`` refuses it (the contract alone would take up to
about 2**62 s, a deadline that still fits its 64 bits)."""


class Phase(IntEnum):
    """Mirror of ``FederationLedger.Phase``."""

    NONE = 0
    OPEN = 1
    VALUED = 2
    FINALIZED = 3
    CANCELLED = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def has_scores(self) -> bool:
        """Whether the round's submissions carry scores, reasons and weights (before valuation
        they read as 0 / reason 0, which is not an OK verdict)."""
        return self in (Phase.VALUED, Phase.FINALIZED)


class Reason(IntEnum):
    """Mirror of ``FederationLedger.Reason``: why an update got its score, posted on chain next
    to it. The contract refuses a score that disagrees with its reason: the score is positive
    exactly when the reason is OK. NOT_REVEALED is for logs only: a commitment never revealed
    is not valued on chain at all. CONTRADICTED (after NOT_REVEALED, so the older numbers keep
    their meaning) is posted only with signed evidence in the round's log
    (:mod:`fedtrail.protocol.evidence`). PEER_REJECTED is posted by the contract itself in a
    peer round (:mod:`fedtrail.protocol.peers`), never by an aggregator; so is WITHHELD, when
    the aggregator drops a weighted update of a valued peer round it cannot read back
    (``dropWithheld``)."""

    OK = 0
    LOW_GAIN = 1
    OUTLIER_DIRECTION = 2
    OUTLIER_NORM = 3
    TAMPERED = 4
    MALFORMED = 5
    DUPLICATE = 6
    LATE = 7
    EXPLANATION_SHIFT = 8
    LOW_QUALITY = 9
    FREE_RIDER = 10
    IMPLAUSIBLE_SAMPLES = 11
    NOT_REVEALED = 12
    CONTRADICTED = 13
    PEER_REJECTED = 14
    WITHHELD = 15

    @property
    def label(self) -> str:
        """Short lower-case name for tables and logs (``"outlier direction"``)."""
        return self.name.lower().replace("_", " ")

    @property
    def description(self) -> str:
        """One sentence an auditor can read."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[Reason, str] = {
    Reason.OK: "The update improves the model; its score grows with its contribution.",
    Reason.LOW_GAIN: "The update does not improve the global model on the aggregator's "
    "validation split (marginal gain at or below the threshold; in the standing's warm-up "
    "round, the model with this update alone is clearly worse than the global model).",
    Reason.OUTLIER_DIRECTION: "The update points away from the other updates (cosine "
    "similarity to the coordinate-wise median update below the threshold), as a sign-flipped "
    "or otherwise poisoned update does.",
    Reason.OUTLIER_NORM: "The update's L2 norm is far above the other updates' "
    "(robust z-score above the threshold), as a scaled or boosted update's is.",
    Reason.TAMPERED: "The stored bytes do not match the sha256 recorded on chain.",
    Reason.MALFORMED: "The blob failed validation (format, names, shapes, dtypes, "
    "non-finite values or model spec) or claims no training samples, or its DP parameters "
    "contradict the privacy spend the site declared on chain (another epsilon, another delta "
    "than the round's terms, a delta above 1 / its samples, a spend without DP parameters, or "
    "none under terms that require DP), or the update lacks the Gaussian noise its DP "
    "parameters add (or is compressed, so that noise cannot be checked).",
    Reason.DUPLICATE: "The update repeats an update committed earlier in the round (by on-chain "
    "commit order), byte for byte or numerically near-identical.",
    Reason.LATE: "The update arrived after the round's deadline.",
    Reason.EXPLANATION_SHIFT: "The updated model's explanations shift away from the "
    "global model's beyond the threshold.",
    Reason.LOW_QUALITY: "The site's running value (its normalised validation values accumulated "
    "over the rounds) is at or below -demote_scale, or so near it that the demoted score is under "
    "1% of the full score: its updates have been consistently harmful over rounds, not just in "
    "this one.",
    Reason.FREE_RIDER: "The update carries no training of its own: it is zero, its norm is tiny "
    "next to the round's other updates, the global model or the site's own previous update, or "
    "it is a stale copy of an earlier update (such as the site's previous one) or of the last "
    "global delta.",
    Reason.IMPLAUSIBLE_SAMPLES: "The claimed sample count is implausible: more than the round's "
    "max_sample_ratio times the median count of the round's usable updates (its own count "
    "included under the terms' sample_median_self; the others' only in rounds before it), so "
    "the update is not weighted by it.",
    Reason.NOT_REVEALED: "The site committed to an update but never revealed it within the "
    "reveal window; it is not valued on chain.",
    Reason.CONTRADICTED: "The site signed a Flower reply that contradicts its on-chain "
    "submission (another CID, sha256 or sample count, or a reveal the chain does not hold); "
    "the signed reply is in the round's log as evidence.",
    Reason.PEER_REJECTED: "In a peer-scored round, the median of the scores the other sites "
    "gave the update on their own validation splits was 0 (or no other site scored it).",
    Reason.WITHHELD: "In a peer-scored round, the other sites weighted the update, but the "
    "aggregator could not read it back by the score reveal deadline (its site may have withheld "
    "the blob once scored): it was dropped and its weight went to the other updates.",
}


class Decline(IntEnum):
    """Why a site refused a round's committed terms, as its node declares it on chain: a
    commitment (:func:`fedtrail.ledger.decline_commitment`) that no reveal can open, binding
    the site, the round, the terms' sha256 and this code. Without it a refusal left no trace
    but the site's absence, so an aggregator that wrote terms some sites refuse and paid the
    rest was indistinguishable from one whose sites were offline (attack a42); ``audit
    verify``'s ``terms.declined`` now names each declining site and its reason."""

    TERMS_UNUSABLE = 1
    """The terms could not be read (for a CID nobody serves: for half the commit window,
    attack a80), or are another round's."""
    WINDOWS = 2
    """The chain's commit or reveal window is not the terms' (``terms.windows``)."""
    PAYMENT_CHANGED = 3
    """A later round changes what round 1's terms fixed (``terms.task_fixed``)."""
    UNBOUND_START = 4
    """Round 1's start model is not bound to the deployment (``start_model.initial``)."""
    UNACCEPTED = 5
    """Settings this site cannot run or does not accept (its ``[accept]``: ``terms.limits``)."""
    SHORT_WINDOW = 6
    """A commit window shorter than this site's ``[accept] min_commit_seconds`` (attack a43:
    round 1's windows, which bound every later round's, opened short enough to shut out the
    slowest sites), or a reveal window shorter than its ``min_reveal_seconds`` (attack a50)."""
    PRIVACY = 7
    """The terms' privacy block: DP required of a site whose ``[privacy]`` is off, a DP
    ``delta`` outside its ``[privacy]`` bounds (attack a39's refusal), or a per-update noise
    check (``dp_noise_check`` 1) that this site's compressed DP updates cannot pass (a47)."""
    START_UNAVAILABLE = 8
    """The round's start model could not be fetched (not under the CID ``openRound`` named,
    nor as the last finalized global model) for half the commit window, or its CID serves
    other bytes (attack a81: a global model finalized under a CID nobody serves, published
    after the next round, shut every honest node out of it leaving no trace on chain)."""
    CAP_BELOW_DATA = 9
    """This site's cap on chain (``maxSamples``) is below the samples its update would claim:
    the ledger would refuse its reveal (``TooManySamples``), so it does not train (attack
    a96: the coordinator cut an honest site's cap between rounds and the site sat out every
    later round leaving no trace on chain but its absence). Not the site's refusal of the
    terms but the coordinator's move: ``sites.registry`` counts such a site, when the cap was
    set inside the round, as having lost its update, as it counts a site with no
    commitment."""

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")
