"""One revealed update's declared privacy spend against the DP parameters in its blob.

The one home of the rule that the aggregator (before valuation: a mismatch is scored 0 as
MALFORMED, :mod:`fedtrail.valuation.candidates`), every peer validator (the same reading),
``audit verify`` (which replays that verdict) and ``fedtrail audit privacy`` (which reports it)
share: the spend a site declared at reveal (its ``PrivacySpent`` event; none: 0) must be the
spend its update's DP parameters give under the accounting rule they name
(:meth:`~fedtrail.storage.privacy_history.PrivacyHistory.expected_micro`, the code the node
declares with), at the delta the round's terms fix and no looser than 1 / the site's on-chain
sample count. A site that declares less than it spent keeps its contract budget unspent; one
that reveals a DP update as a plain one escapes it altogether.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from fedtrail.errors import FedtrailError
from fedtrail.ledger import PrivacySpend, checksum
from fedtrail.protocol.privacy import SUMMED, DpParams
from fedtrail.protocol.terms import PrivacyTerms
from fedtrail.storage.privacy_history import PrivacyHistory, UnavailableSpend, UnbackedSpend

__all__ = [
    "BINDING",
    "SpendVerdict",
    "Status",
    "check_spend",
    "declared_by_site",
    "sampling_problem",
]


class Status:
    """How one update's declared spend compares with its blob (:data:`PASSING`: it agrees)."""

    AGREES = "agrees"
    """The epsilon recomputed from the blob's DP parameters equals the declared spend."""
    NOT_PRIVATE = "not private"
    """No DP parameters and no declared spend: a plain update."""
    NOT_READ = "declared only"
    """Blobs were not read (``--declared-only``): the declaration is shown, not checked."""
    DIFFERS = "DIFFERS"
    """The recomputed epsilon is not the declared one (a plain reveal of a DP update too)."""
    NO_PARAMETERS = "NO DP PARAMETERS"
    """A spend was declared but the blob carries no DP parameters to back it."""
    WRONG_DELTA = "WRONG DELTA"
    """The DP parameters account at another delta than the round's terms fix (a larger delta
    gives a smaller epsilon for the same training)."""
    LOOSE_DELTA = "DELTA ABOVE 1/n"
    """The DP parameters account at a delta above 1 / the site's on-chain sample count: a
    guarantee that lets one of its images leak outright with that probability, which the
    declared epsilon does not show (the terms' delta is the aggregator's choice)."""
    IMPLAUSIBLE_SAMPLING = "SAMPLING IMPLAUSIBLE"
    """The DP parameters sample fewer than one image a step on average (``sample_rate`` times
    the on-chain sample count below 1) or count steps that are no whole number of epochs
    (``steps`` not a multiple of ``max(1, round(1 / sample_rate))``), which no node's plan gives
    (:func:`~fedtrail.ml.privacy.plan_privacy`): such parameters shrink the spend the site
    declares and widen what the noise check lets through (a68: a plain update paid 0.250
    declaring 0.103 epsilon at a sample rate of 1e-9, where ``audit verify`` named it only
    afterwards)."""
    DP_REQUIRED = "DP REQUIRED"
    """The round's terms require DP training and the update carries no DP parameters."""
    UNBACKED_HISTORY = "EARLIER SPEND UNBACKED"
    """A ``"composed"`` update whose history holds a spend the site declared for an update
    whose blob carries no DP parameters or cannot be decoded: the site broke its own history (a
    plain or garbage reveal declaring a spend, scored 0 in its round), so its composed spend can
    never be recomputed; were that
    UNREADABLE, every later declaration of the site would go unchecked and be paid
    (``scripts/attacks/a11_dp_unreadable_history.py``)."""
    UNAVAILABLE_HISTORY = "EARLIER SPEND UNAVAILABLE"
    """A ``"composed"`` update whose history holds a spend the site declared for an update
    this reader's store does not give and that its round already scored 0 on chain as one its
    scorers could not use (:data:`~fedtrail.storage.privacy_history.UNAVAILABLE_VERDICTS`: the
    aggregator's MALFORMED ``not retrievable``, the validators' PEER_REJECTED, a WITHHELD drop):
    the site revealed a DP update declaring a spend and never published it, so its composed
    spend can never be recomputed; were that UNREADABLE, every later declaration of the site
    would go unchecked and be paid (``a11_dp_unreadable_history.py withhold``). The verdict
    rests on the chain, not on one store; a reader that does hold the blob composes over it."""
    UNREADABLE = "UNREADABLE"
    """The blob, its round's terms, or its DP parameters could not be read or accounted, and
    no verdict on chain says the blob was unusable (a weighted update, a round cancelled
    before it was valued): a store's state, not the site's."""
    UNUSED = "unreadable, unused"
    """The blob cannot be fetched or decoded, the reveal declared no spend, and the chain
    already scored the update 0 as one its round's scorers could not use either (weight 0
    under a reason of :data:`~fedtrail.storage.privacy_history.UNAVAILABLE_VERDICTS`): it
    reached no model and claims nothing to check. Named, not failed (a spend declared for such
    a blob stays UNREADABLE, as ``audit verify``'s ``privacy.spend`` fails it, a11):
    one reveal under a CID that is no CID made ``audit privacy`` fail for every reader
    (``scripts/attacks/a58_abi_edges.py``) though every other spend was checked. A later
    composed update of the site's that needs this blob's parameters is
    :data:`UNAVAILABLE_HISTORY`, which fails."""

    PASSING = frozenset({AGREES, NOT_PRIVATE, NOT_READ, UNUSED})


BINDING: Final = frozenset(
    {
        Status.DIFFERS,
        Status.NO_PARAMETERS,
        Status.WRONG_DELTA,
        Status.LOOSE_DELTA,
        Status.IMPLAUSIBLE_SAMPLING,
        Status.DP_REQUIRED,
        Status.UNBACKED_HISTORY,
        Status.UNAVAILABLE_HISTORY,
    }
)
"""The statuses that score an update 0 (MALFORMED) at valuation, under terms whose
``dp_spend_check`` is on: each follows from the update's own blob, the chain and the terms.
Not UNREADABLE: an earlier blob the composed rule needs may be missing from one store and not
another, so that verdict is not the same for every reader (``audit privacy`` still fails it).
UNBACKED_HISTORY is: it follows from the chain and a blob that was read. So is
UNAVAILABLE_HISTORY: a missing earlier blob whose round the chain already records as scored 0
for an update its scorers could not use; only a reader that holds the blob reads otherwise,
and it composes over it (its verdict then follows from the blob)."""


@dataclass(frozen=True)
class SpendVerdict:
    """What :func:`check_spend` found: ``status`` (a :class:`Status`), why, the parameters
    read and the spend recomputed from them (None where none was)."""

    status: str
    detail: str = ""
    params: DpParams | None = None
    recomputed: int | None = None

    @property
    def binding(self) -> bool:
        """Whether the update is scored 0 for it (:data:`BINDING`)."""
        return self.status in BINDING

    @property
    def reason(self) -> str:
        """The verdict as the round log's explanation of a zeroed update states it."""
        return f"privacy spend {self.status}" + (f": {self.detail}" if self.detail else "")


def declared_by_site(spends: Iterable[PrivacySpend]) -> dict[str, int]:
    """Each site's declared spend (micro-epsilon) from one round's ``PrivacySpent`` events,
    keyed by checksummed address (the contract takes one per reveal; a repeat adds up)."""
    out: dict[str, int] = {}
    for spend in spends:
        site = checksum(spend.site)
        out[site] = out.get(site, 0) + spend.epsilon_micro
    return out


def sampling_problem(params: DpParams, num_samples: int) -> str | None:
    """What is implausible in ``params``' sampling for a site of ``num_samples`` images (its
    on-chain count; 0: not known, the batch is not checked), or None
    (:data:`Status.IMPLAUSIBLE_SAMPLING`)."""
    problems = []
    if num_samples > 0 and params.sample_rate * num_samples < 1 - 1e-9:
        problems.append(
            f"sample rate {params.sample_rate:g} over {num_samples} samples expects no image a step"
        )
    inverse = 1 / params.sample_rate  # inf for a subnormal rate: round() would raise
    per_epoch = max(1, round(inverse)) if math.isfinite(inverse) else 0
    if per_epoch == 0 or per_epoch > params.steps:
        problems.append(f"{params.steps} steps are less than one epoch of {inverse:.6g}")
    elif params.steps % per_epoch:
        problems.append(f"{params.steps} steps are not whole epochs of {per_epoch}")
    return "; ".join(problems) or None


def check_spend(
    history: PrivacyHistory,
    *,
    round_id: int,
    site: str,
    params: DpParams | None,
    declared: int,
    privacy: PrivacyTerms | None,
    num_samples: int = 0,
) -> SpendVerdict:
    """``site``'s update of ``round_id`` carrying ``params`` (read from its hash-checked blob)
    against the ``declared`` micro-epsilon, under the round's ``privacy`` terms (None: none).
    Never raises: a spend that cannot be recomputed is UNREADABLE."""
    history.remember(round_id, site, params)
    if params is None:
        if declared:
            return SpendVerdict(
                Status.NO_PARAMETERS,
                f"declared {declared} micro-epsilon; the update carries no DP parameters",
            )
        if privacy is not None and privacy.required:
            return SpendVerdict(Status.DP_REQUIRED, f"round {round_id}'s terms require DP")
        return SpendVerdict(Status.NOT_PRIVATE)
    if privacy is not None and params.delta != privacy.delta:
        return SpendVerdict(
            Status.WRONG_DELTA,
            f"accounted at delta {params.delta!r}; the terms fix {privacy.delta!r}",
            params,
        )
    if num_samples > 0 and params.delta > 1 / num_samples:
        return SpendVerdict(
            Status.LOOSE_DELTA,
            f"accounted at delta {params.delta!r} > 1 / its {num_samples} samples",
            params,
        )
    implausible = sampling_problem(params, num_samples)
    if implausible is not None:
        return SpendVerdict(Status.IMPLAUSIBLE_SAMPLING, implausible, params)
    try:
        recomputed = history.expected_micro(site, round_id, params)
    except UnbackedSpend as exc:
        return SpendVerdict(Status.UNBACKED_HISTORY, str(exc), params)
    except UnavailableSpend as exc:
        return SpendVerdict(Status.UNAVAILABLE_HISTORY, str(exc), params)
    except FedtrailError as exc:  # InvalidPrivacy, StoreError: an earlier blob unreadable
        return SpendVerdict(
            Status.UNREADABLE,
            f"cannot account {params.to_json()} under the {params.accounting} rule: {exc}",
            params,
        )
    if recomputed != declared:
        how = "a plain reveal" if declared == 0 else f"declared {declared}"
        rule = "" if params.accounting == SUMMED else f" under the {params.accounting} rule"
        return SpendVerdict(
            Status.DIFFERS,
            f"its DP parameters spend {recomputed} micro-epsilon{rule}; {how}",
            params,
            recomputed,
        )
    return SpendVerdict(Status.AGREES, "", params, recomputed)
