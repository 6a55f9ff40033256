"""Each update's model alone in a demo's warm-up round: what the warm-up's harm check
(:func:`fedtrail.valuation.round._harmful`, ``WARM_UP_MAX_HARM``) judges, with the ranking
quality it does not look at beside it.

Runs ``fedtrail demo`` with the given arguments and, wherever the harm check runs, prints for
the global model and for every usable update's model alone (the global model plus that update)
the validation utility the check compares, the validation AUC and the range of the logits. A
measuring aid, not a benchmark: no target, exit status that of the demo.

    .venv/bin/python scripts/bench/warmup_alone.py --arch resnet10 --sites 4 --rounds 1 \\
        --epochs 1 --noisy-sites 0 --poison statistics
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from fedtrail.ml.metrics import classification_metrics
from fedtrail.valuation import round as valuation_round
from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.utility import CoalitionUtility

_checked = valuation_round._harmful


def _report(ctx: ValuationContext, cands: list[Candidate], **kwargs: Any) -> Any:
    out = _checked(ctx, cands, **kwargs)
    assert ctx.validation is not None
    ok = [c for c in cands if c.usable and c.delta is not None]
    utility = CoalitionUtility(replace(ctx, candidates=cands), ok)
    for c in [None, *ok]:
        coalition = frozenset() if c is None else frozenset({c.site})
        logits = utility.outputs(coalition)
        m = classification_metrics(logits, ctx.validation.labels)
        who = "global model" if c is None else f"{c.site} ({c.num_samples} images) alone"
        print(
            f"warm-up: {who}: {ctx.metric} utility {utility(coalition):.4g}, AUC {m.auc:.3f}, "
            f"logits {logits.min():.4g} .. {logits.max():.4g}",
            file=sys.stderr,
        )
    return out


def main(argv: list[str]) -> int:
    valuation_round._harmful = _report  # type: ignore[assignment]
    from fedtrail.cli import cli

    try:
        cli(["demo", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
