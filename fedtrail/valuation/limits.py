"""The strictest valuation thresholds a site accepts in a round's terms.

The aggregator writes the thresholds into each round's terms before any update exists, and
``audit verify`` replays the round under them: a round valued under thresholds that zero honest
updates (``stale_cosine`` 0.5 makes nearly every update a "copy", ``max_norm_z`` 0.1 an
"outlier", ``demote_scale`` 1e-9 demotes any site whose record dips below zero) would replay
bit for bit and pass every other check. So each threshold has a bound on the side that harms
sites: tightening one beyond the product's defaults needs the sites' consent (``[accept]`` in a
node's config.toml) and fails ``terms.limits`` for an auditor who was not told of it (``audit
verify --accept FILE``).

Loosening harms them too, through the weight it hands to others: an aggregator colluding with
some sites could write ``stale_cosine`` 1.0 (a resent copy is paid), ``free_rider_norm`` 0 (a
zero update is paid), ``max_sample_ratio`` 1e9 (an inflated count within the site's cap takes
the weight), ``min_robust_sites`` 1000 (no norm screen), a duplicate rule of cosine 1.0 or
without ``scaled_cosine`` (a copy scaled by 1.01 is paid), and the round would replay bit for
bit. So each bounded threshold has a loosest accepted value too
(:class:`LoosestLimits`, ``[accept.loosest]``), by default the loosest of the product's presets.

The defaults are the strictest of the product's own presets (:class:`Combiner` for per-round
valuation, :data:`~fedtrail.valuation.combine.HISTORY_COMBINER` with standing), except
``stale_cosine``, accepted down to 0.9999: honest updates were measured up to cosine 0.99982
with their references (``scripts/bench/stale_cosine.py``), and logs written before the 0.99999
default recorded 0.9999. The loosest defaults are the loosest of the same presets, except
``stale_distance``, accepted down to the 0.01 that logs written before its 1e6 default recorded.

``norm_size_cap`` and ``tiny_size_power`` (the allowance the norm and free-rider screens make
for a site's claimed sample count) loosen as they rise. ``tiny_size_power``'s limits are both
its default (2): the rule before it (0, what terms that omit it read as) zeroes honest small
hospitals as FREE_RIDER, so an aggregator writes it only with its sites' consent
(``tiny_size_power = 0.0`` under ``[accept]``, as auditing a ledger written before it needs).
``tiny_size_reference`` loosens as it rises too (the floor is scaled by the round's median
claim over it, below it): its loosest accepted value is its default (150), its strictest 0 (off,
what terms that omit it read as). ``tiny_size_own`` (1: every round's floor reads each site's
own claim alone; 0: the median's, which colluders' claims lower, ``scripts/attacks/
a123_median_claim_floor.py``) is bounded at 1 on both sides; terms that omit it read as 0,
refused only where it decides anything (``tiny_size_reference`` above 0 and ``tiny_size_power``
above 0: terms written in stop 55; auditing such a ledger takes ``tiny_size_own = 0`` under
``[accept.loosest]``).
``norm_size_cap``'s limits are both its default, 1 (off): above it a site that inflates its
claimed count within its cap may also boost its update as many times
(``scripts/attacks/a10_inflate_boost.py``), so turning it on takes the sites' consent under
``[accept.loosest]``.

The payment settings round 1 fixes for a deployment (:func:`~fedtrail.protocol.terms.
payment_differences`) are bounded here too, every round alike (later rounds must equal round
1's anyway): whether scores come from standing (``per_round``), the games and metrics a site
accepts (``methods``, ``metrics``), and the aggregation rules with floors on their parameters
(``rules``, ``min_clip_norm``, ``max_trim_ratio``, ``min_krum_m``); :meth:`ThresholdLimits.
payment_breaches`. Without them an aggregator could open round 1 with terms that turn standing
off (a data-less ally replaying the global delta took 0.784 of the weight,
``scripts/attacks/a18_perround_replay.py``), freeze the model with ``norm_clip`` at 1e-12
(``a20_rule_freeze.py``) or demote honest sites with leave-one-out (``a21_metric_choice.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, TypeVar

from fedtrail.errors import ConfigError, FedtrailError
from fedtrail.fsutil import read_toml
from fedtrail.ml.aggregation import RULE_NAMES, STATISTICS_RULES, AggregationRule
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.protocol.terms import (
    DUPLICATE_COSINE,
    DUPLICATE_RELATIVE_L2,
    DUPLICATE_SCALED_COSINE,
    DUPLICATE_SHARED_TENSOR,
    DUPLICATE_SUPPORT_COSINE,
    DUPLICATE_SUPPORT_OVERLAP,
    DUPLICATE_WHITE_NOISE_Z,
    INITIAL_MODEL_DEPLOYMENT,
    VALIDATOR_GAMES,
    DuplicateRule,
    RoundTerms,
)
from fedtrail.valuation.base import METRICS
from fedtrail.valuation.combine import (
    BLOCK_NOISE_Z,
    BOOST_CLIP,
    WARM_UP_FLOOR,
    Combiner,
)
from fedtrail.valuation.round import LARGE_GAMES, METHODS

__all__ = [
    "ACCEPTED_GAMES",
    "DEFAULT_MIN_COMMIT_SECONDS",
    "DEFAULT_MIN_REVEAL_SECONDS",
    "DUPLICATE_LIMITS",
    "GAME_NAMES",
    "HIGHER_IS_STRICTER",
    "LOWER_IS_LOOSER",
    "PAIRED_LIMITS",
    "PAYMENT_LIMITS",
    "PROJECT_SHIFT_SETTINGS",
    "START_LIMITS",
    "UNBOUNDED",
    "WARM_UP_SCOPES",
    "WINDOW_LIMITS",
    "LoosestLimits",
    "ThresholdLimits",
    "accept_as_written",
    "limits_from",
    "load_limits",
    "payment_refusal",
    "played_games",
    "start_refusal",
    "statistics_refusal",
    "window_refusal",
]

PAYMENT_LIMITS: Final = frozenset(
    {
        "per_round",
        "methods",
        "metrics",
        "rules",
        "min_clip_norm",
        "max_trim_ratio",
        "min_krum_m",
        "project_shift",
    }
)
""":class:`ThresholdLimits` fields that bound a round's payment settings
(:meth:`ThresholdLimits.payment_breaches`), not a :class:`Combiner` threshold."""

START_LIMITS: Final = frozenset({"unbound_start"})
""":class:`ThresholdLimits` fields that bound a round-1 start model (:func:`start_refusal`),
not a :class:`Combiner` threshold."""

WINDOW_LIMITS: Final = frozenset({"min_commit_seconds", "min_reveal_seconds"})
""":class:`ThresholdLimits` fields that bound a round's windows (:func:`window_refusal`), not
a :class:`Combiner` threshold."""

DEFAULT_MIN_COMMIT_SECONDS: Final = 30
"""Seconds: the shortest commit window a site's node takes by default (``[accept]
min_commit_seconds``). The contract's own floor (``minRoundWindow``, 10 s by default) bounds
only the aggregator's open; later rounds may not be shorter than round 1's (a40), but round 1's
window is the aggregator's choice, and one shorter than a site's training shuts that site out
of every round with no trace (attack a43). 30 s is the Flower app's default window; a site
whose training takes longer sets its own floor above its training time."""

DEFAULT_MIN_REVEAL_SECONDS: Final = 20
"""Seconds: the shortest reveal window (and a peer round's score reveal window) a site's node
takes by default (``[accept] min_reveal_seconds``). A node reveals no earlier than
``CLOCK_SLACK`` (2 s) after the commit deadline, at its next poll, then puts its blob on the
store and sends one transaction; a reveal window shorter than that shuts a committed site out
of every round, read by verify as a commitment the site withheld (attack a50: a site whose
reveal took 15 s missed a 10 s window in every round while the others were paid, and ``audit
verify`` passed). 20 s is the Flower app's default reveal window; a site whose reveal takes
longer (a large blob, a slow link, a chain with slow blocks) sets its own floor above it."""

PAIRED_LIMITS: Final = frozenset({"warm_up_scopes"})
""":class:`ThresholdLimits` fields that bound one :class:`Combiner` threshold's values under
another's (``warm_up_scopes``: the ``warm_up_scope`` values a site takes under a
``warm_up_floor`` below 1), not a threshold of their own name."""

WARM_UP_SCOPES: Final = (1,)
"""The ``warm_up_scope`` values a site takes under a ``warm_up_floor`` below 1 by default
(``[accept] warm_up_scopes``): 1 alone, the scoped warm-up new federations' terms carry since
session 63 (only an *outweighing* update floored and recorded). 0, what terms without
``warm_up_scope`` read as, floors and records every warm-up passer from its noisy share: the
rule that zeroed more honest site-rounds of scenario (a) (docs/results.md *The warm-up's
scope*), which before session 63 took ``[accept] warm_up_floor = 0.5``, so it takes the site's
word again: ``warm_up_scopes = [0, 1]``, or an ``[accept]`` that sets ``warm_up_floor`` and not
this key (:func:`accept_as_written`)."""

WARM_UP_SCOPES_AS_WRITTEN: Final = (0, 1)
"""What ``warm_up_scopes`` reads as in an ``[accept]`` table that sets ``warm_up_floor`` and not
it: every scope that existed when such a table was written (0 before session 63; 0 and 1 in
it, which bounded no scope). A scope added later is not among them: a table cannot have
consented to a rule written after it."""

PROJECT_SHIFT_SETTINGS: Final = ("off", "on")
"""The settings of a round's ``valuation.project_shift`` a site can accept (``[accept]
project_shift``): ``"on"`` the terms carry it true, ``"off"`` they omit it."""

GAME_NAMES: Final = tuple(dict.fromkeys((*METHODS, *LARGE_GAMES, *VALIDATOR_GAMES)))
"""Every game a round's terms can name (``method``, ``large_game``, ``validator_game``)."""
ACCEPTED_GAMES: Final = tuple(g for g in GAME_NAMES if g != "loo")
"""The games a site accepts by default: all but leave-one-out, whose values (1e-5..2e-4 of
both signs among four honest IID sites) become shares of +-0.05..0.4 under the standing and
demoted two honest sites to weight 0 (``scripts/attacks/a21_metric_choice.py balanced_loss
loo 6 -1``; Shapley: 0.250 each in every round)."""


def played_games(settings: ValuationSettings) -> tuple[str, ...]:
    """The games a round under ``settings`` plays: a peer round's validator game, or else the
    method and the large game (when set)."""
    if settings.peers and settings.validator_game is not None:
        return (settings.validator_game,)
    large = () if settings.large_game is None else (settings.large_game,)
    return (settings.method, *large)


HIGHER_IS_STRICTER: Final = frozenset(
    {
        "min_cosine",
        "min_gain",
        "free_rider_norm",
        "small_norm_ratio",
        "credit_cosine",
        "relief_cosine",
        "boost_clip",
        "white_noise_z",
        "duplicate_white_noise_z",
        "duplicate_shared_tensor",
        "duplicate_either_order",
        "shaped_noise_z",
        "block_noise_z",
        "span_residual",
        "duplicate_relative_l2",
        "tiny_size_own",
    }
)
"""Thresholds that flag or cut more updates as they rise (the others: as they fall)."""

DUPLICATE_LIMITS: Final = {
    "duplicate_cosine": "cosine",
    "duplicate_relative_l2": "relative_l2",
    "duplicate_scaled_cosine": "scaled_cosine",
    "duplicate_support_cosine": "support_cosine",
    "duplicate_support_overlap": "support_overlap",
    "duplicate_white_noise_z": "white_noise_z",
    "duplicate_shared_tensor": "shared_tensor",
    "duplicate_either_order": "either_order",
    "duplicate_white_noise_dp_cosine": "white_noise_dp_cosine",
}
"""The limits on the terms' duplicate rule (:class:`~fedtrail.protocol.terms.DuplicateRule`),
by the rule's field: a later update within both thresholds of an earlier one, or above its
``scaled_cosine``, is a DUPLICATE, scored 0, so a lower ``cosine`` or ``scaled_cosine`` or a
higher ``relative_l2`` zeroes more honest updates (at cosine 0.5 and relative_l2 0.9 every
honest update but the first committed is a "copy"; two honest updates of the same round were
measured up to cosine 0.99993). Terms without ``scaled_cosine`` (the rule before it, which a
copy scaled by 1.01 passes) read as 1.0: looser than the loosest default, so refused; so do
terms without ``support_cosine`` (the rule before it, which a copy sent through ``topk8`` at a
fraction below 1 passes: ``scripts/attacks/a90_sparse_copy.py``), and terms without
``support_overlap`` (the rule before it, which such a copy with noise added to the entries it
keeps passes: ``scripts/attacks/a93_sparse_noisy_copy.py``); terms without ``white_noise_z``
(the rule before it, which a copy plus 1% noise passes: ``a1_sybil_scaled_copy.py noise 3
0.01``) read as 0, off: below the loosest default, so refused; so do terms without
``shared_tensor`` (the rule before it, which a copy with noise on every tensor but one passes:
``scripts/attacks/a101_partial_copy.py``); ``either_order`` (1 on, 0 off: the rule before it,
whose sparse tests read a later update against an earlier one only, which a sparse copy
committed before its original passes: ``scripts/attacks/a99_sparse_copy_first.py``). Terms
without ``white_noise_dp_cosine`` (the default: no DP-declared update tested; opt-in, since a
copy plus noise of twice its norm that declares DP-SGD passes it anyway and honest DP-SGD
updates at epsilon 50 were marked: ``scripts/attacks/a100_dp_declared_copy.py``) read as 1.0,
the default on both sides: terms naming 0.5 take ``[accept] duplicate_white_noise_dp_cosine``."""


def _duplicate_value(duplicates: DuplicateRule, limit: str) -> float:
    """The rule's threshold bounded by ``limit``; an absent ``scaled_cosine``,
    ``support_cosine``, ``support_overlap`` or ``white_noise_dp_cosine`` (the rule of terms
    written before it: no cosine alone, no comparison on a sparser copy's entries, no look at
    which entries a sparse update keeps, or no white-noise test of a DP-declared update, marks
    a copy) reads as 1.0, the check off; ``either_order`` reads as 1 when true, 0 (the sparse
    tests one way) when absent or false."""
    value = getattr(duplicates, DUPLICATE_LIMITS[limit])
    if limit == "duplicate_either_order":  # true: 1 (on); absent or false: 0 (one way)
        return 1.0 if value else 0.0
    if value is None:  # off: the white-noise and shared-tensor tests' off is 0 (they flag
        # more as they rise)
        return 0.0 if limit in ("duplicate_white_noise_z", "duplicate_shared_tensor") else 1.0
    return float(value)


UNBOUNDED: Final = frozenset(
    {
        "stale_distance",
        "stale_rounds",
        "dp_spend_check",
        "dp_noise_check",
        "record_floor",
        "size_norm_count",
        "warm_up_scope",
    }
)
"""Thresholds with no limit: ``stale_distance``'s default (1e6) is already no bound in effect,
and ``stale_rounds`` only widens the references to rounds that exist (more fetching for the
aggregator and auditors, no harm to an honest update, whose cosine to its own earlier updates
stays below ``stale_cosine``). ``dp_spend_check`` has no strictest side (on, it zeroes only
an update whose own blob contradicts its declared privacy spend); its loosest is bounded
(:class:`LoosestLimits`: off pays a site that understates its spend). So is ``dp_noise_check``
(on, it zeroes only an update that does not carry the noise its own DP parameters add).
``record_floor`` has no limit on either side: its loosest effect is bounded by ``demote_scale``'s
(the records are kept ``max(record_floor, demote_scale)`` below their references, so a raised
record always scores 0 and no value below ``demote_scale`` lifts a score), and its strictest,
0 (off, the unbounded record terms written before it read as), is the rule every ledger before
it was valued with; a larger floor is nearer to off. ``size_norm_count`` has none either: any
positive value only lowers the count ``size_norm_z``'s allowance is judged against, so it only
takes that screen's rejections back (never past the raw screen, whose ``max_norm_z`` is
bounded), and its strictest, 0 (none), is the rule ``size_norm_z`` T (bounded) was consented
to with. ``warm_up_scope`` has no limit of its own name: it acts only under ``warm_up_floor``
below 1 (bounded), and which of its values a site takes there is ``warm_up_scopes``
(:data:`PAIRED_LIMITS`, :data:`WARM_UP_SCOPES`: by default 1 alone; 0, what terms without it
read as, floors and records every warm-up passer, the rule sites consented to with ``[accept]
warm_up_floor`` before session 63)."""


LOWER_IS_LOOSER: Final = HIGHER_IS_STRICTER | {
    "stale_distance",
    "stale_rounds",
    "dp_spend_check",
    "dp_noise_check",
}
"""Thresholds that let more updates through as they fall (:class:`LoosestLimits`' sides):
``stale_distance`` bounds the stale screen's relative distance, so 0 calls nothing stale;
``stale_rounds`` is how far back a resent update is recognised; ``dp_spend_check`` 0 pays an
update whose declared privacy spend its blob contradicts; ``dp_noise_check`` 0 one that declares
DP-SGD and carries no noise."""


def _valid_thresholds(values: dict[str, Any]) -> None:
    """Every limit is itself a valid threshold (same ranges, same types): ConfigError if not."""
    rule = {field: values.pop(limit) for limit, field in DUPLICATE_LIMITS.items()}
    order = rule["either_order"]  # a limit counts it 0 (one way) or 1 (both ways)
    if type(order) is int and order in (0, 1):
        rule["either_order"] = bool(order)
    Combiner(**values)
    try:
        DuplicateRule(**rule)
    except FedtrailError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True, kw_only=True)
class LoosestLimits:
    """For each threshold whose loosening pays what the valuation should not (a copy, a zero
    update, an inflated count, an outlier the norm screen would flag), the loosest value a site
    accepts. Defaults: the loosest of the product's presets (``min_cosine`` -1 is already the
    check off: no bound in effect; ``stale_distance`` 0.01, the oldest recorded). Not bounded:
    ``max_norm_ratio``, ``small_norm_ratio``, ``boost_clip`` and ``warm_up_floor`` (off, their
    loosest, is the
    default).
    ``credit_cosine``, ``relief_cosine`` and ``stale_rounds`` are bounded at the product's value:
    terms that omit them read as a log recorded before they existed (-1: off; 1 round), which
    would turn off the standing's sign-flip rules or let a resent update from two rounds back be
    paid.
    ``dp_spend_check`` is bounded at 1 (on) for the same reason: terms that omit it read as
    written before it (off), which pays a site that understates its privacy spend; so is
    ``dp_noise_check``, bounded at 2: off pays a site that declares DP-SGD and sends a plain
    update, and 1 (terms written before session 52) one that claims more samples than it has
    to pass an update with less noise than it declares (``scripts/attacks/
    a97_dp_count_inflation.py``)."""

    min_cosine: float = -1.0
    max_norm_z: float = 20.0
    norm_scale_floor: float = 0.25
    min_gain: float = 0.0
    min_robust_sites: int = 3
    demote_scale: float = 0.5
    free_rider_norm: float = 0.01
    stale_cosine: float = 0.99999
    stale_distance: float = 0.01
    stale_rounds: int = 3
    max_sample_ratio: float = 10.0
    credit_cosine: float = -0.7
    dp_spend_check: int = 1
    norm_size_cap: float = 1.0
    tiny_size_power: float = 2.0
    tiny_size_reference: float = 150.0
    tiny_size_own: int = 1
    """At least 1: 0 (terms written in stop 55, or that omit it) lets colluders' small claims
    lower every site's free-rider floor (``scripts/attacks/a123_median_claim_floor.py``). Not
    a breach where the rule it picks is off (``tiny_size_reference`` or ``tiny_size_power``
    0: terms written before stop 55), as it then changes no verdict."""
    dp_noise_check: int = 2
    relief_cosine: float = -0.7
    stale_support_cosine: float = 0.999995
    """At most the product's value: terms that omit it read as 1 (off, the stale screen before
    it), under which an earlier update resent through ``topk8`` at a fraction below 1 is paid
    as an honest one (``scripts/attacks/a91_stale_sparse_copy.py``)."""
    stale_support_overlap: float = 0.99
    """At most the product's value: terms that omit it read as 1 (off, the stale screen before
    it), under which an earlier update resent through ``topk8`` with noise added to the entries
    it keeps is paid (``scripts/attacks/a93_sparse_noisy_copy.py stale``)."""
    duplicate_cosine: float = DUPLICATE_COSINE
    duplicate_relative_l2: float = DUPLICATE_RELATIVE_L2
    duplicate_scaled_cosine: float = DUPLICATE_SCALED_COSINE
    duplicate_support_cosine: float = DUPLICATE_SUPPORT_COSINE
    duplicate_support_overlap: float = DUPLICATE_SUPPORT_OVERLAP
    duplicate_white_noise_z: float = DUPLICATE_WHITE_NOISE_Z
    duplicate_shared_tensor: int = DUPLICATE_SHARED_TENSOR
    duplicate_either_order: int = 1
    """At least 1 (on): terms that omit it read as 0, the sparse tests one way, under which a
    sparse copy committed before its original is paid (``scripts/attacks/
    a99_sparse_copy_first.py``)."""
    duplicate_white_noise_dp_cosine: float = 1.0

    def __post_init__(self) -> None:
        _valid_thresholds(asdict(self))

    def breaches(self, combiner: Combiner, duplicates: DuplicateRule | None = None) -> list[str]:
        """Each threshold of ``combiner`` (and of ``duplicates``, when given) looser than its
        limit, as ``name value (accepted: ...)``; empty when every one is within."""
        out: list[str] = []
        for f in fields(self):
            if f.name in DUPLICATE_LIMITS:
                if duplicates is None:
                    continue
                value = _duplicate_value(duplicates, f.name)
            else:
                value = getattr(combiner, f.name)
            limit = getattr(self, f.name)
            lower = f.name in LOWER_IS_LOOSER
            if f.name == "tiny_size_own" and not (
                combiner.tiny_size_reference > 0 and combiner.tiny_size_power > 0
            ):
                continue  # the rule it picks is off: it changes no verdict
            if value < limit if lower else value > limit:
                side = "at least" if lower else "at most"
                out.append(f"{f.name} {value} (accepted: {side} {limit})")
        return out

    def widened(self, combiner: Combiner) -> LoosestLimits:
        """These limits, each loosened as far as ``combiner``'s threshold where that is looser
        (the duplicate rule's limits unchanged)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            mine = getattr(self, f.name)
            if f.name in DUPLICATE_LIMITS:
                values[f.name] = mine
                continue
            theirs = getattr(combiner, f.name)
            values[f.name] = min(mine, theirs) if f.name in LOWER_IS_LOOSER else max(mine, theirs)
        return type(self)(**values)


@dataclass(frozen=True, kw_only=True)
class ThresholdLimits:
    """For each valuation threshold (the fields of :class:`Combiner` but those in
    :data:`UNBOUNDED`), the strictest value a site accepts. ``max_norm_ratio`` and
    ``small_norm_ratio`` are off at 0: a limit of 0 accepts them only off. ``duplicate_*``
    bound the terms' duplicate rule (:data:`DUPLICATE_LIMITS`; defaults: the only rule the
    product writes; ``duplicate_scaled_cosine`` 0.999995 is 14x closer to 1 than the closest
    honest pair measured, ``scripts/bench/dup_cosine.py``). ``loosest``: the other side of
    each bound (:class:`LoosestLimits`; a table, as ``[accept.loosest]`` gives it, is read into
    one)."""

    min_cosine: float = -0.5
    max_norm_z: float = 10.0
    norm_scale_floor: float = 0.25
    min_gain: float = 0.0
    min_robust_sites: int = 3
    demote_scale: float = 0.5
    free_rider_norm: float = 0.01
    stale_cosine: float = 0.9999
    max_sample_ratio: float = 10.0
    max_norm_ratio: float = 0.0
    small_norm_ratio: float = 0.0
    credit_cosine: float = -0.7
    norm_size_cap: float = 1.0
    """1, its least value: no strict bound (the cap off is the default, see the loose side)."""
    tiny_size_power: float = 2.0
    """At least 2 by default: a lower power (0, the rule before it) zeroes an honest small
    hospital as FREE_RIDER (7 of 20 rounds for a 20-image site beside 150-image sites). Terms
    that omit it read as 0."""
    tiny_size_own: int = 1
    """1, its greatest value: no strict bound (1 only raises the floor of a site claiming more
    than a small round's median, to what its own claim gives)."""
    tiny_size_reference: float = 0.0
    """0, its least value: no strict bound (terms that omit it read as 0, the floor before it,
    which a ledger written before it is audited with)."""
    relief_cosine: float = -0.7
    """At least -0.7 by default, as ``credit_cosine``: lower gives an update pointing against
    the consensus the median site's relief (:func:`~fedtrail.valuation.standing.
    relieved_reference`); terms that omit it read as -1 (off)."""
    boost_clip: float = BOOST_CLIP
    """Only off (0) by default, the product's default: on, it cuts honest sites' long updates
    along the consensus too (:func:`~fedtrail.valuation.standing.boost_factor`; at 0.5 it cut 9
    of 240 honest updates of the accuracy bench's scenario (c) at alpha 1 to 0.31-0.93 of their
    score), so turning it on takes the sites'
    consent (``boost_clip = 0.5`` under ``[accept]``). Not bounded on the loose side (off, its
    loosest, is the default), as ``max_norm_ratio``."""
    warm_up_floor: float = WARM_UP_FLOOR
    """At least 0.5 by default, the product's default (since session 63, with ``warm_up_scope``
    1): below 1 the warm-up round's shares are accumulated and its scores floored
    (:func:`~fedtrail.valuation.standing.floored_score`), so a lower floor takes the sites'
    consent (``warm_up_floor = 0.25`` under ``[accept]``). Not bounded on the loose side (off,
    1, the rule terms without it read as). Which ``warm_up_scope`` it is taken with is
    ``warm_up_scopes``."""
    warm_up_scopes: tuple[int, ...] = WARM_UP_SCOPES
    """The ``warm_up_scope`` values taken under a ``warm_up_floor`` below 1 (a floor of 1, off,
    is taken with any scope: the scope then decides nothing); by default 1 alone
    (:data:`WARM_UP_SCOPES`). Terms with a floor below 1 and a scope outside it (0: terms that
    omit ``warm_up_scope``, the all-passer floor) are refused, naming both. ``[0, 1]`` takes the
    all-passer floor too; ``[]`` no warm-up floor at all. An ``[accept]`` table that sets
    ``warm_up_floor`` without this key reads it as ``[0, 1]`` (:func:`accept_as_written`: what
    that table meant before session 63, and since)."""
    white_noise_z: float = 1000.0
    """At most the default: higher moves the white-noise screen toward honest updates
    (measured at 1e4 and more, docs/results.md *Noisy copies*). Not bounded on the loose side (off
    is
    what terms written before it read as, and a copier who shapes its noise passes it anyway,
    docs/results.md *Noisy copies*)."""
    shaped_noise_z: float = 1000.0
    """At most the default, as ``white_noise_z``: higher moves the shaped-noise screen toward
    honest updates (measured at 1e4 and more, docs/results.md *Noisy copies*). Not bounded on the
    loose
    side (off is what terms written before it read as)."""
    block_noise_z: float = BLOCK_NOISE_Z
    """At most the default: higher moves the block-noise screen toward honest updates (measured
    at 18.1 and more, ``topk8``; docs/results.md *Noise with a public profile*). Not bounded on the
    loose
    side (off is what terms written before it read as)."""
    stale_support_cosine: float = 0.99999
    """At least this: lower moves the stale screen's sparse test toward honest sparse updates
    (honest ``topk8`` updates measured up to 0.992 against their references restricted to their
    entries, ``scripts/bench/stale_cosine.py --compression topk8``)."""
    span_residual: float = 0.0
    """Only off (0) by default, the product's default: above 0 the span test zeroes an update
    close to the span of the references, and honest updates come close as the sites grow in
    number (0.16 at 5 sites, 0.060 at 10, 0.0114 at 20 against the measured 0.01: README
    *Linear mixtures*), so turning it on takes the sites' consent (``span_residual = 0.01``
    under ``[accept]``, :data:`~fedtrail.valuation.combine.SPAN_RESIDUAL`). Not bounded on the
    loose side (off is the default, and what terms written before it read as)."""
    stale_support_overlap: float = 0.99
    """At least this: lower moves the stale screen's kept-entries test toward honest sparse
    updates (honest ``topk8`` updates measured up to 0.8953 against their references,
    40 sites of at least 10 images, ``scripts/bench/support_overlap.py``; README *Sparse noisy
    copies*)."""
    dp_copy_z: float = 60.0
    """At least this, or 0 (off, the terms' default), as ``max_norm_ratio``: a lower threshold
    moves the DP copy test toward honest DP-SGD updates (measured up to 48.8 at epsilon 8,
    docs/results.md *DP-declared copies*). Not bounded on the loose side (off is what terms written
    before it read as)."""
    size_norm_z: float = 0.0
    """Only off (0) by default, the product's default: the second norm screen
    (:meth:`~fedtrail.valuation.combine.Combiner.size_screen_z`) at a threshold T rejects what
    the raw screen passes, so turning it on takes the sites' consent (``size_norm_z = T`` under
    ``[accept]``: at least T is then accepted). Not bounded on the loose side (off is the
    default, and what terms written before it read as)."""
    sample_median_self: int = 1
    """1 accepts only the product's median of sample counts (the judged count included); 0
    also accepts the earlier rule (the others' counts only), under which colluders claiming 1
    sample each drag the median down and zero honest sites as IMPLAUSIBLE_SAMPLES
    (``scripts/attacks/a3_tiny_count_sabotage.py``). Terms that omit it read as 0 (recorded
    before it existed), so auditing such a ledger takes ``sample_median_self = 0``."""
    duplicate_cosine: float = DUPLICATE_COSINE
    duplicate_relative_l2: float = DUPLICATE_RELATIVE_L2
    duplicate_scaled_cosine: float = DUPLICATE_SCALED_COSINE
    duplicate_support_cosine: float = DUPLICATE_SUPPORT_COSINE
    duplicate_support_overlap: float = DUPLICATE_SUPPORT_OVERLAP
    duplicate_white_noise_z: float = DUPLICATE_WHITE_NOISE_Z
    duplicate_shared_tensor: int = DUPLICATE_SHARED_TENSOR
    duplicate_either_order: int = 1
    """At most 1: on is the strictest there is (no honest update of a mixed dense and ``topk8``
    federation marked in either commit order, 5-50 sites, with error feedback as a node keeps
    it, ``scripts/bench/either_order.py``; without it, alpha 0.3, one honest sparse site was
    marked in later rounds, and ``topk8`` fractions near 2e-5 are marked, hence the node's
    floor of 0.001: docs/results.md *Sparse copies committed first*)."""
    duplicate_white_noise_dp_cosine: float = 1.0
    loosest: LoosestLimits = field(default_factory=LoosestLimits)
    statistics: tuple[str, ...] = ("anchored_median", "median")
    """The running-statistics rules (:data:`~fedtrail.ml.aggregation.STATISTICS_RULES`) a site
    accepts for a model that has them (BatchNorm): by default the two medians. Averaged
    (``"weighted"``), one site that shifts its statistics without changing a weight collapses
    the global model to a constant output, and the valuation cannot see it once the global
    model's statistics are poisoned (every coalition model is collapsed too), so an aggregator
    writing ``"weighted"`` hands any one site that power. Terms without the setting (written
    before it existed) mean ``"weighted"``. A model without running statistics ignores it."""
    per_round: bool = False
    """False: only terms whose scores come from standing (``valuation.standing``) are accepted.
    Without standing the free-rider screen does not run and scores are ``value / best``: a
    data-less ally resending 2x the previous global delta took 0.389, then 0.784 of the weight
    (``scripts/attacks/a18_perround_replay.py perround 3``). A federation that values each round
    on its own (``--per-round``) needs its sites' ``per_round = true``."""
    methods: tuple[str, ...] = ACCEPTED_GAMES
    """The valuation games accepted (:data:`GAME_NAMES`; each the round plays,
    :func:`played_games`); by default all but ``"loo"`` (:data:`ACCEPTED_GAMES`)."""
    metrics: tuple[str, ...] = METRICS
    """The validation metrics accepted (:data:`~fedtrail.valuation.METRICS`; default: all, the
    AUC too: a sign-flipper under it was zeroed from round 2, ``a21_metric_choice.py auc``)."""
    rules: tuple[str, ...] = RULE_NAMES
    """The aggregation rules accepted (:data:`~fedtrail.ml.aggregation.RULE_NAMES`; default:
    all), each within the parameter limits below."""
    min_clip_norm: float = 0.0
    """``norm_clip``'s fixed ``max_norm``, at least this; 0 (default): only the median norm
    (``max_norm`` unset) is accepted. A fixed norm is set before any update exists, so nothing
    ties it to their scale: at 1e-12 the model never moved while every site was paid
    (``a20_rule_freeze.py clip 3``: validation AUC 0.5088 every round)."""
    max_trim_ratio: float = 0.3
    """``trimmed_mean``'s ``trim_ratio``, at most this (the product's 0.2 with a margin; near
    0.5 the rule is the median's and ignores all but the middle updates)."""
    min_krum_m: int = 2
    """``krum``'s ``krum_m`` (updates averaged), unset (``n - krum_f``) or at least this: at 1
    the global step is one site's update (``a20_rule_freeze.py krum 3``)."""
    project_shift: tuple[str, ...] = PROJECT_SHIFT_SETTINGS
    """The terms' ``valuation.project_shift`` settings accepted: ``"on"`` (the validation game
    values each update with its first-order uniform logit shift removed, the aggregator's
    default for terms that require DP) and ``"off"`` (absent: the plain game); default both.
    A site whose value the projection changes against its consent lists only the other."""
    unbound_start: bool = False
    """False: a round opened before any round was finalized is taken part in only when its
    terms bind the start model to the deployment (``initial_model: "deployment"`` with an
    ``initial_salt``). Under the legacy rule every deployment with the same seed starts from the
    same model, so a data-less site replaying another federation's round-r update was paid
    0.250 in five of six rounds (``scripts/attacks/a23_foreign_replay.py replay 6``). True also
    accepts such terms (a ledger opened by an aggregator before this version)."""
    min_commit_seconds: int = DEFAULT_MIN_COMMIT_SECONDS
    """The shortest commit window (the terms' ``commit_seconds``, which the chain's must equal:
    ``terms.windows``) this site takes part in; a shorter one is declined on chain
    (``SHORT_WINDOW``) before training. Set it above the site's training time: a window the
    site accepts but cannot train in still shuts it out unseen (:func:`window_refusal`)."""
    min_reveal_seconds: int = DEFAULT_MIN_REVEAL_SECONDS
    """The shortest reveal window (the terms' ``reveal_seconds``, and a peer round's
    ``score_reveal_seconds``) this site takes part in; a shorter one is declined on chain
    (``SHORT_WINDOW``) before training (attack a50, :data:`DEFAULT_MIN_REVEAL_SECONDS`)."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "statistics", _names_in("statistics", self.statistics, STATISTICS_RULES, "rule")
        )
        object.__setattr__(self, "methods", _names_in("methods", self.methods, GAME_NAMES, "game"))
        object.__setattr__(self, "metrics", _names_in("metrics", self.metrics, METRICS, "metric"))
        object.__setattr__(self, "rules", _names_in("rules", self.rules, RULE_NAMES, "rule"))
        object.__setattr__(
            self,
            "project_shift",
            _names_in("project_shift", self.project_shift, PROJECT_SHIFT_SETTINGS, "setting"),
        )
        object.__setattr__(self, "warm_up_scopes", _scopes(self.warm_up_scopes))
        if not isinstance(self.per_round, bool):
            raise ConfigError(f"per_round must be true or false, got {self.per_round!r}")
        if not isinstance(self.unbound_start, bool):
            raise ConfigError(f"unbound_start must be true or false, got {self.unbound_start!r}")
        clip, trim, krum_m = self.min_clip_norm, self.max_trim_ratio, self.min_krum_m
        if not (_number(clip) and clip >= 0 and math.isfinite(clip)):
            raise ConfigError(f"min_clip_norm must be a finite number >= 0, got {clip!r}")
        if not (_number(trim) and 0 <= trim < 0.5):
            raise ConfigError(f"max_trim_ratio must lie in [0, 0.5), got {trim!r}")
        if isinstance(krum_m, bool) or not isinstance(krum_m, int) or krum_m < 1:
            raise ConfigError(f"min_krum_m must be an integer >= 1, got {krum_m!r}")
        for name in ("min_commit_seconds", "min_reveal_seconds"):
            floor = getattr(self, name)
            if isinstance(floor, bool) or not isinstance(floor, int) or not 0 <= floor < 2**64:
                raise ConfigError(f"{name} must be an integer >= 0, got {floor!r}")
        if isinstance(self.loosest, dict):
            object.__setattr__(
                self, "loosest", _table(LoosestLimits, self.loosest, "[accept.loosest]")
            )
        elif not isinstance(self.loosest, LoosestLimits):
            raise ConfigError(f"loosest must be a table, got {self.loosest!r}")
        _valid_thresholds(
            {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_THRESHOLDS}
        )
        # a strictest limit set past the default loosest (a table written before the loosest
        # existed, e.g. max_sample_ratio = 20) moves that default with it
        default, moved = LoosestLimits(), {}
        for name in _BOTH_SIDES:
            mine, theirs = getattr(self, name), getattr(self.loosest, name)
            past = mine < theirs if name in HIGHER_IS_STRICTER else mine > theirs
            if past and theirs == getattr(default, name):
                moved[name] = mine
        if moved:
            object.__setattr__(self, "loosest", replace(self.loosest, **moved))
        # a range that accepts nothing would make the site sit out every round
        empty = [
            f"{name} (strictest {getattr(self, name)}, loosest {getattr(self.loosest, name)})"
            for name in _BOTH_SIDES
            if (getattr(self, name) < getattr(self.loosest, name)) == (name in HIGHER_IS_STRICTER)
            and getattr(self, name) != getattr(self.loosest, name)
        ]
        if empty:
            raise ConfigError(
                "the loosest accepted value is stricter than the strictest for " + "; ".join(empty)
            )

    @classmethod
    def accepting(cls, combiner: Combiner) -> ThresholdLimits:
        """Limits that accept ``combiner`` and the defaults alike: each limit the looser of
        the default and the combiner's threshold (a simulated federation's sites consenting to
        their aggregator's thresholds)."""
        return cls().widened(combiner)

    def widened(self, combiner: Combiner) -> ThresholdLimits:
        """These limits, each moved as far as ``combiner``'s threshold where that is outside
        them, on either side (the duplicate rule's limits unchanged)."""
        cls = type(self)
        base = self
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "loosest":
                values[f.name] = base.loosest.widened(combiner)
                continue
            if f.name == "warm_up_scopes":
                values[f.name] = base.warm_up_scopes
                if combiner.warm_up_floor < 1 and combiner.warm_up_scope not in base.warm_up_scopes:
                    values[f.name] = tuple(sorted({*base.warm_up_scopes, combiner.warm_up_scope}))
                continue
            if f.name in _NOT_THRESHOLDS:  # statistics and the payment settings: as they are
                values[f.name] = getattr(base, f.name)
                continue
            if f.name in DUPLICATE_LIMITS:  # not a Combiner threshold: the default
                values[f.name] = getattr(base, f.name)
                continue
            mine, theirs = getattr(base, f.name), getattr(combiner, f.name)
            if f.name in {"max_norm_ratio", "small_norm_ratio", "dp_copy_z", "size_norm_z"} and (
                mine == 0 or theirs == 0
            ):
                values[f.name] = mine if theirs == 0 else theirs
            elif f.name in HIGHER_IS_STRICTER:
                values[f.name] = max(mine, theirs)
            else:
                values[f.name] = min(mine, theirs)
        return cls(**values)

    def taking(
        self,
        *,
        rule: AggregationRule,
        standing: bool,
        games: tuple[str, ...],
        metric: str,
        project_shift: bool = False,
    ) -> ThresholdLimits:
        """These limits widened to accept an aggregator's payment settings (a simulated
        federation's sites consenting to their aggregator's choices, or a test's)."""
        shift = "on" if project_shift else "off"
        return replace(
            self,
            project_shift=tuple(dict.fromkeys((*self.project_shift, shift))),
            per_round=self.per_round or not standing,
            methods=tuple(dict.fromkeys((*self.methods, *games))),
            metrics=tuple(dict.fromkeys((*self.metrics, metric))),
            rules=tuple(dict.fromkeys((*self.rules, rule.name))),
            min_clip_norm=self.min_clip_norm
            if rule.name != "norm_clip" or rule.max_norm is None
            else min(self.min_clip_norm or math.inf, rule.max_norm),
            max_trim_ratio=max(self.max_trim_ratio, rule.trim_ratio)
            if rule.name == "trimmed_mean"
            else self.max_trim_ratio,
            min_krum_m=min(self.min_krum_m, rule.krum_m)
            if rule.name == "krum" and rule.krum_m is not None
            else self.min_krum_m,
        )

    def taking_terms(self, rule: AggregationRule, settings: ValuationSettings) -> ThresholdLimits:
        """These limits widened to accept the payment settings of a round's terms."""
        return self.taking(
            rule=rule,
            standing=bool(settings.standing),
            games=played_games(settings),
            metric=settings.metric,
            project_shift=bool(settings.project_shift),
        )

    def payment_breaches(self, rule: AggregationRule, settings: ValuationSettings) -> list[str]:
        """Each payment setting of a round's terms (its aggregation ``rule`` and valuation
        ``settings``) outside these limits, as ``setting value (accepted: ...)``; empty when
        every one is within."""
        out = []
        if not settings.standing and not self.per_round:
            out.append("standing off (accepted: only with per_round = true)")
        for game in played_games(settings):
            if game not in self.methods:
                out.append(f"valuation game {game!r} (accepted: methods = {list(self.methods)})")
        if settings.metric not in self.metrics:
            out.append(
                f"valuation metric {settings.metric!r} (accepted: metrics = {list(self.metrics)})"
            )
        if (
            settings.explanation_check
            and settings.mode != "peers"
            and settings.explanation_probe is None
        ):
            # without a committed probe set the EXPLANATION_SHIFT verdicts are the aggregator's
            # word (attack a22): no table opts into that
            out.append(
                "explanation check without a public probe set (accepted: only with "
                "valuation.explanation_probe, which lets anyone recompute the verdicts)"
            )
        shift = "on" if settings.project_shift else "off"
        if shift not in self.project_shift:
            out.append(
                f"valuation.project_shift {shift} (accepted: project_shift = "
                f"{list(self.project_shift)})"
            )
        if rule.name not in self.rules:
            out.append(f"aggregation rule {rule.name!r} (accepted: rules = {list(self.rules)})")
        elif rule.name == "norm_clip" and rule.max_norm is not None:
            if self.min_clip_norm == 0 or rule.max_norm < self.min_clip_norm:
                floor = self.min_clip_norm
                accepted = f"at least {floor}" if floor else "unset, the median norm"
                out.append(
                    f"norm_clip max_norm {rule.max_norm} (accepted: {accepted}; min_clip_norm)"
                )
        elif rule.name == "trimmed_mean" and rule.trim_ratio > self.max_trim_ratio:
            out.append(
                f"trimmed_mean trim_ratio {rule.trim_ratio} (accepted: at most "
                f"{self.max_trim_ratio}; max_trim_ratio)"
            )
        elif rule.name == "krum" and rule.krum_m is not None and rule.krum_m < self.min_krum_m:
            out.append(
                f"krum krum_m {rule.krum_m} (accepted: unset or at least {self.min_krum_m}; "
                "min_krum_m)"
            )
        return out

    def refusal(self, combiner: Combiner, duplicates: DuplicateRule | None = None) -> str | None:
        """Why a site with these limits does not take part under ``combiner`` (and the terms'
        ``duplicates`` rule); None when it does. One sentence for the node and its validator."""
        parts = []
        stricter = self.breaches(combiner, duplicates)
        if stricter:
            parts.append(
                "valuation thresholds stricter than this site accepts ([accept] in its "
                "config.toml): " + "; ".join(stricter)
            )
        looser = self.loosest.breaches(combiner, duplicates)
        if looser:
            parts.append(
                "valuation thresholds looser than this site accepts ([accept.loosest] in its "
                "config.toml): " + "; ".join(looser)
            )
        return "; and ".join(parts) or None

    def breaches(self, combiner: Combiner, duplicates: DuplicateRule | None = None) -> list[str]:
        """Each threshold of ``combiner`` (and of the terms' ``duplicates`` rule, when given)
        stricter than its limit, as ``name value (limit L)``; empty when every one is within."""
        out: list[str] = []
        for f in fields(self):
            if f.name in _NOT_THRESHOLDS:
                continue
            if f.name in DUPLICATE_LIMITS:
                if duplicates is None:
                    continue
                value = _duplicate_value(duplicates, f.name)
            else:
                value = getattr(combiner, f.name)
            limit = getattr(self, f.name)
            if f.name in {
                "max_norm_ratio",
                "dp_copy_z",
                "size_norm_z",
            }:  # lower is stricter, 0 is off
                bad = value != 0 and (limit == 0 or value < limit)
            elif f.name in HIGHER_IS_STRICTER:
                bad = value > limit
            else:
                bad = value < limit
            if not bad:
                continue
            if (
                f.name in {"max_norm_ratio", "small_norm_ratio", "dp_copy_z", "size_norm_z"}
                and limit == 0
            ):
                accepted = "only off (0)"
            else:
                side = "at most" if f.name in HIGHER_IS_STRICTER else "at least"
                accepted = f"{side} {limit}"
            out.append(f"{f.name} {value} (accepted: {accepted})")
        scope = self.scope_breach(combiner)
        if scope is not None:
            out.append(scope)
        return out

    def scope_breach(self, combiner: Combiner) -> str | None:
        """``combiner``'s ``warm_up_scope`` where its ``warm_up_floor`` is below 1 and these
        limits' ``warm_up_scopes`` do not take it, as ``warm_up_scope S under warm_up_floor F
        (accepted: ...)``; None when they do (or the floor is 1, off: no scope acts)."""
        floor, scope = combiner.warm_up_floor, combiner.warm_up_scope
        if floor >= 1 or scope in self.warm_up_scopes:
            return None
        taken = list(self.warm_up_scopes)
        what = "every warm-up passer floored and recorded" if scope == 0 else "another rule"
        return (
            f"warm_up_scope {scope} under warm_up_floor {floor} (accepted: warm_up_scopes = "
            f"{taken} under a warm_up_floor below 1; scope {scope}, {what}, takes "
            f"warm_up_scopes = {sorted({*taken, scope})})"
        )


def statistics_refusal(
    accept: ThresholdLimits, rule: AggregationRule, *, running_statistics: bool
) -> str | None:
    """Why a site with ``accept`` does not take part under ``rule`` (the terms' aggregation
    rule, :meth:`~fedtrail.ml.aggregation.AggregationRule.from_terms`) for a model with
    (``running_statistics``) or without running statistics; None when it does. The rule
    ``median`` takes the median of every tensor, so its statistics are the median whatever
    ``rule.statistics`` says."""
    plain = rule.name == "median" and rule.statistics != "anchored_median"
    effective = "median" if plain else rule.statistics
    if not running_statistics or effective in accept.statistics:
        return None
    return (
        f"running statistics combined by {effective!r}, which this site does not accept "
        f"(statistics = {list(accept.statistics)} under [accept] in its config.toml)"
    )


def payment_refusal(
    accept: ThresholdLimits, rule: AggregationRule, settings: ValuationSettings
) -> str | None:
    """Why a site with ``accept`` does not take part under a round's payment settings (its
    aggregation ``rule`` and valuation ``settings``, :meth:`ThresholdLimits.payment_breaches`);
    None when it does. One sentence for the node and its validator."""
    breaches = accept.payment_breaches(rule, settings)
    if not breaches:
        return None
    return "payment settings this site does not accept ([accept] in its config.toml): " + (
        "; ".join(breaches)
    )


def start_refusal(accept: ThresholdLimits, terms: RoundTerms) -> str | None:
    """Why a site with ``accept`` does not take part in a round opened before any round was
    finalized under ``terms`` (the round starts from the seeded initial model): terms that do
    not bind that model to the deployment (:attr:`ThresholdLimits.unbound_start`). None: it
    does. Whether the start model matches the terms is ``audit verify``'s
    ``start_model.initial``."""
    if accept.unbound_start or terms.initial_model == INITIAL_MODEL_DEPLOYMENT:
        return None
    return (
        "the round starts from the initial model of the bare seed, which every deployment with "
        "this seed shares (another federation's updates can be replayed here for pay); this "
        "site accepts only terms with initial_model 'deployment' (unbound_start = true under "
        "[accept] in its config.toml accepts them)"
    )


def window_refusal(accept: ThresholdLimits, terms: RoundTerms) -> str | None:
    """Why a site with ``accept`` does not take part under ``terms``' windows: a commit window
    (or a peer round's score commit window) shorter than its ``min_commit_seconds`` (attack
    a43: round 1's windows, which bound every later round's, opened at the contract's minimum
    to shut out the slowest sites; a score window that short shuts out the slowest validators,
    whose vectors then never count), or a reveal window (or score reveal window) shorter than
    its ``min_reveal_seconds`` (attack a50: a committed site whose reveal is slower misses it in
    every round, read as a withheld update). None: it does."""
    commit, reveal = accept.min_commit_seconds, accept.min_reveal_seconds
    floors = [("commit", terms.commit_seconds, commit, "min_commit_seconds")]
    if terms.score_commit_seconds is not None:  # a peer round's validators commit their scores
        floors.append(("score commit", terms.score_commit_seconds, commit, "min_commit_seconds"))
    floors.append(("reveal", terms.reveal_seconds, reveal, "min_reveal_seconds"))
    if terms.score_reveal_seconds is not None:
        floors.append(("score reveal", terms.score_reveal_seconds, reveal, "min_reveal_seconds"))
    short = [
        f"{name} window is {seconds} s, shorter than the {floor} s this site accepts ({key} "
        "under [accept] in its config.toml)"
        for name, seconds, floor, key in floors
        if seconds < floor
    ]
    if not short:
        return None
    return f"the terms' {' and '.join(short)}: too short a window shuts out the slowest sites"


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _names_in(key: str, names: Any, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``names`` (a list of ``what`` names, at least one, each in ``known``) as a tuple:
    ConfigError."""
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise ConfigError(f"{key} must be a list of {what} names, got {names!r}")
    if not names:
        raise ConfigError(f"{key} must name at least one of {list(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{key} names unknown {what}(s) {unknown}; known: {list(known)}")
    return tuple(names)


def _scopes(scopes: Any) -> tuple[int, ...]:
    """``warm_up_scopes`` (a list of ``warm_up_scope`` values :class:`Combiner` takes, each
    once; empty: no warm-up floor taken) as a tuple: ConfigError."""
    if isinstance(scopes, str) or not isinstance(scopes, list | tuple):
        raise ConfigError(f"warm_up_scopes must be a list of warm_up_scope values, got {scopes!r}")
    for scope in scopes:
        if isinstance(scope, bool) or not isinstance(scope, int):
            raise ConfigError(f"warm_up_scopes must hold integers, got {scope!r}")
        try:
            Combiner(warm_up_scope=scope)
        except ConfigError as exc:
            raise ConfigError(f"warm_up_scopes: {exc}") from None
    return tuple(dict.fromkeys(scopes))


def accept_as_written(table: Any) -> Any:
    """An ``[accept]`` table as its writer meant it: one that sets ``warm_up_floor`` and not
    ``warm_up_scopes`` (written before session 63, when a floor below 1 took the sites' word
    and ``warm_up_scope`` did not exist, or in it, when no scope was bounded) takes the floor
    with every scope of that time (:data:`WARM_UP_SCOPES_AS_WRITTEN`); any other table (not a
    table: as it is, for the reader's error) unchanged. The node's ``config.toml`` and
    ``audit verify --accept`` read ``[accept]`` through it."""
    if isinstance(table, dict) and "warm_up_floor" in table and "warm_up_scopes" not in table:
        return {**table, "warm_up_scopes": list(WARM_UP_SCOPES_AS_WRITTEN)}
    return table


def load_limits(path: Path) -> ThresholdLimits:
    """The ``[accept]`` table of a TOML file (a site's config.toml, or a file holding only that
    table); the defaults where the file has none."""
    try:
        raw = read_toml(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"no file at {path}") from exc
    return limits_from(raw.get("accept", {}), where=f"[accept] of {path}")


def limits_from(table: Any, *, where: str = "[accept]") -> ThresholdLimits:
    """Limits from a parsed ``[accept]`` table (``loosest`` a sub-table), read as written
    (:func:`accept_as_written`): unknown names and invalid values refused."""
    return _table(ThresholdLimits, accept_as_written(table), where)


_T = TypeVar("_T", ThresholdLimits, LoosestLimits)


def _table(cls: type[_T], table: Any, where: str) -> _T:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown threshold(s) in {where}: {unknown}; known: {sorted(known)}")
    try:
        return cls(**table)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


_NOT_THRESHOLDS: Final = (
    frozenset({"loosest", "statistics"})
    | PAYMENT_LIMITS
    | START_LIMITS
    | WINDOW_LIMITS
    | PAIRED_LIMITS
)
""":class:`ThresholdLimits` fields that bound no :class:`Combiner` threshold."""

_BOTH_SIDES: Final = tuple(
    f.name for f in fields(LoosestLimits) if f.name in {g.name for g in fields(ThresholdLimits)}
)
"""The thresholds bounded on both sides (``stale_distance`` and ``stale_rounds`` only on their
loose side)."""
