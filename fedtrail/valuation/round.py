"""One round's valuation as the aggregator runs it — and as an auditor re-runs it.

The settings come from the round's explanation log (method, metric, seed, explanation check), so
anyone holding the same validation split recomputes the same scores.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch

from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.shortcuts import add_marker
from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.combine import SiteValuation, any_positive, value_round
from fedtrail.valuation.explanation import ExplanationScorer

log = logging.getLogger("fedtrail.aggregator")


def explanation_scorer(validation: ImageDataset) -> ExplanationScorer:
    """Probes carry a corner tag: a shortcut only shows on images that have one."""
    n = min(32, len(validation))
    return ExplanationScorer(add_marker(validation.subset(np.arange(n)), label=None))


def score_round(
    *,
    global_state: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    candidates: Sequence[Candidate],
    validation: ImageDataset,
    method: str,
    metric: str,
    seed: int,
    explanation_check: bool = False,
) -> list[SiteValuation]:
    """Scores and reasons of every candidate (address order), deterministic for its inputs.

    When no update improves the validation metric (early, uncalibrated models raise the loss
    while ranking well), it falls back to the data-free screening rather than stall the round,
    and says so in every site's detail.
    """
    ctx = ValuationContext(
        global_state=global_state,
        spec=spec,
        candidates=list(candidates),
        validation=validation,
        metric=metric,  # type: ignore[arg-type]
        seed=seed,
    )
    if explanation_check:
        ctx = replace(ctx, candidates=explanation_scorer(validation).flag(ctx))
    valuations = value_round(ctx, method=method)  # type: ignore[arg-type]
    if any_positive(valuations):
        return valuations
    fallback = value_round(replace(ctx, validation=None), method=method)  # type: ignore[arg-type]
    if not any_positive(fallback):
        return valuations
    log.warning("no update improved the validation %s; data-free fallback", metric)
    note = f"no update improved the validation {metric}, data-free fallback; "
    return [replace(v, detail=note + v.detail) for v in fallback]
