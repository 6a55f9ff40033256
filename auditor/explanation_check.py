"""``reasons.explanation_shift``: every explanation-check verdict, recomputed from public data.

Under terms with the explanation check on, the aggregator scores an update 0 with reason
``EXPLANATION_SHIFT`` when the update's model moves attribution into the "no clinical signal"
corners of the probe images (:class:`~fedtrail.valuation.explanation.ExplanationScorer`). The
terms commit the probe set (``valuation.explanation_probe``: CID and sha256 of a safetensors
blob, :mod:`fedtrail.storage.probe`), fixed from round 1 like every payment setting
(``terms.task_fixed``). This check fetches it (at most ``MAX_PROBE_BYTES``, validated as
untrusted input), explains the round's start model and every usable update's model on it with
the same method, seed and one torch thread, and requires:

* an update is ``EXPLANATION_SHIFT`` on chain exactly when the public probe shifts it (a verdict
  the probe does not give zeroes an honest site; a shifted update paid is an ally let through);
* the log's explanation of each ``EXPLANATION_SHIFT`` site holds the recomputed reason (its
  region shares and excess, to three decimals).

An update that another check takes out first (TAMPERED, MALFORMED, DUPLICATE, CONTRADICTED:
``log.status``, ``duplicates``, the evidence checks) is not explained: the valuation never
looked at it. Terms with the check on but no probe committed (written before the probe was
public, or by an aggregator that keeps it private) fail as ``not checked``: the verdicts are
then the aggregator's word, and passing them would let any aggregator drop the commitment to
hide an a22-style lie. ``audit verify --validation`` still replays them from the split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import torch

from fedtrail.errors import FedtrailError, StoreError
from fedtrail.ledger import Submission
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import RoundLog, ValuationSettings
from fedtrail.storage.probe import MAX_PROBE_BYTES, InvalidProbe, decode_probe
from fedtrail.storage.store import ContentStore

__all__ = ["EXPLANATION_SHIFT_CHECK", "check_explanation_shift"]

EXPLANATION_SHIFT_CHECK: Final = "reasons.explanation_shift"

Check = tuple[str, bool, str]

_TAKEN_OUT_BEFORE = frozenset(
    {Reason.TAMPERED, Reason.MALFORMED, Reason.DUPLICATE, Reason.CONTRADICTED}
)
"""Reasons that take an update out before the explanation check sees it."""


def check_explanation_shift(
    store: ContentStore,
    log: RoundLog,
    subs: Sequence[Submission],
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    unusable: Mapping[str, Reason],
    spec: ModelSpec,
    settings: ValuationSettings,
    start: Mapping[str, torch.Tensor],
) -> Check:
    """``reasons.explanation_shift`` of an aggregator round whose terms run the explanation
    check (see the module docstring). ``deltas``: the decoded updates; ``unusable``: the sites
    the audit found tampered, malformed or duplicate; ``start``: the round's start model."""
    name = EXPLANATION_SHIFT_CHECK
    flagged = [s for s in subs if s.reason == Reason.EXPLANATION_SHIFT]
    ref = settings.explanation_probe
    if ref is None:
        return (
            name,
            False,
            "not checked: the terms run the explanation check but commit no public probe set "
            f"(valuation.explanation_probe), so its verdicts ({len(flagged)} EXPLANATION_SHIFT) "
            "are the aggregator's word; only audit verify --validation replays them",
        )
    try:
        blob = store.get(ref.cid, ref.sha256, max_bytes=MAX_PROBE_BYTES)
    except StoreError as exc:
        return name, False, f"cannot fetch the committed probe set {ref.cid}: {exc}"
    try:
        probe = decode_probe(blob, channels=spec.in_channels, size=spec.image_size)
    except InvalidProbe as exc:
        return name, False, f"the committed probe set {ref.cid} is unusable: {exc}"
    if int(probe.shape[0]) != ref.images:
        return (
            name,
            False,
            f"the committed probe set holds {probe.shape[0]} images, the terms say {ref.images}",
        )
    # heavy (captum): imported only where a round runs the check
    from fedtrail.valuation.base import Candidate, ValuationContext
    from fedtrail.valuation.explanation import ExplanationScorer

    looked_at = [
        s
        for s in subs
        if s.site in deltas
        and s.site not in unusable
        and _reason(s.reason) not in _TAKEN_OUT_BEFORE
    ]
    seed = log.valuation_seed if settings.seed is None else settings.seed
    ctx = ValuationContext(
        global_state=dict(start),
        spec=spec,
        candidates=[Candidate(s.site, s.num_samples, deltas[s.site]) for s in looked_at],
        validation=None,
        metric="loss",
        seed=seed,
    )
    try:
        shifts = ExplanationScorer(probe).assess(ctx)
    except (FedtrailError, RuntimeError, ValueError) as exc:  # a hostile model: a named FAIL
        return name, False, f"cannot explain the round's updates on the probe set: {exc}"
    explained = {e.site: e.explanation for e in log.sites}
    problems: list[str] = []
    for s in looked_at:
        shift = shifts[s.site]
        who = s.site[:10]
        marked = s.reason == Reason.EXPLANATION_SHIFT
        if marked and not shift.shifted:
            problems.append(
                f"{who} is EXPLANATION_SHIFT, but the public probe gives region share "
                f"{shift.region_share:.3f} vs {shift.global_region_share:.3f} (+"
                f"{shift.excess_share:.3f}, within {shift.threshold:.3f})"
            )
        elif shift.shifted and not marked:
            problems.append(
                f"{who}'s update moves attribution +{shift.excess_share:.3f} into the region "
                f"(over {shift.threshold:.3f}) on the public probe, yet it is "
                f"{_label(s.reason)}, not EXPLANATION_SHIFT"
            )
        elif marked and shift.reason not in explained.get(s.site, ""):
            problems.append(
                f"the log's explanation of {who} is not the recomputed one: {shift.reason!r}"
            )
    for s in flagged:
        if s not in looked_at:
            problems.append(f"{_label_site(s)} is EXPLANATION_SHIFT, but has no usable update")
    return (
        name,
        not problems,
        "; ".join(problems)
        or f"{len(flagged)} EXPLANATION_SHIFT verdict(s) of {len(looked_at)} update(s) follow "
        f"from the committed probe set ({ref.images} images, {ref.cid[:12]}…)",
    )


def _reason(code: int) -> Reason | None:
    try:
        return Reason(code)
    except ValueError:
        return None


def _label(code: int) -> str:
    reason = _reason(code)
    return reason.name if reason is not None else str(code)


def _label_site(s: Submission) -> str:
    return s.site[:10]
