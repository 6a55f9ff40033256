"""The README's privacy accountant (*The privacy accountant, exactly*: plain Python run from its
text, as `scripts/independent/reader.py` runs it) against fedtrail.ml.privacy (opacus' RDP
accountant): an outsider who follows the README must recompute every declared spend to the
micro-epsilon, under both accounting rules. A near miss (the integer orders alone, or the
summed rule where the composed one is due) must disagree, so the comparison can fail."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedtrail.ml import privacy as product
from fedtrail.protocol.privacy import COMPOSED, SUMMED, DpParams

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text(encoding="utf-8")
MARKER = "<!-- rdp-reference -->\n```python\n"


def readme_accountant() -> dict[str, Any]:
    start = TEXT.index(MARKER) + len(MARKER)
    namespace: dict[str, Any] = {}
    exec(compile(TEXT[start : TEXT.index("```", start)], "README rdp-reference", "exec"), namespace)
    return namespace


ACCT = readme_accountant()
declared: Callable[..., int] = ACCT["declared_micro"]

NOISES = (0.5, 0.8, 1.0, 1.3, 2.0, 5.0)
RATES = (0.01, 0.05, 32 / 217, 128 / 648, 0.5, 1.0)
STEPS = (1, 1000)
DELTAS = (1e-5, 1e-3)


def params(noise: float, rate: float, steps: int, delta: float, rule: str = SUMMED) -> DpParams:
    return DpParams(
        noise_multiplier=noise,
        max_grad_norm=1.0,
        sample_rate=rate,
        steps=steps,
        delta=delta,
        accounting=rule,
    )


def test_orders_are_the_products() -> None:
    assert ACCT["ORDERS"] == product._ALPHAS  # the orders opacus converts at
    assert len(ACCT["ORDERS"]) == 151


@pytest.mark.parametrize("noise", NOISES)
def test_summed_spend_matches_the_product(noise: float) -> None:
    mismatches = []
    for rate in RATES:
        for steps in STEPS:
            for delta in DELTAS:
                p = params(noise, rate, steps, delta)
                want = product.declared_micro(p, [], 0)
                got = declared(p.to_json(), [], 0)
                if got != want:
                    mismatches.append((rate, steps, delta, got, want))
    assert mismatches == []


def test_composed_spend_matches_the_product() -> None:
    history = [
        params(1.2, 32 / 150, 5, 1e-5, COMPOSED),
        params(0.8, 32 / 150, 10, 1e-5, COMPOSED),
        params(1.5, 0.5, 4, 1e-5, COMPOSED),
        params(0.7, 128 / 648, 15, 1e-4, COMPOSED),  # another delta: composed at the update's
    ]
    total = 0
    for i, update in enumerate(history):
        want = product.declared_micro(update, history[:i], total)
        got = declared(update.to_json(), [p.to_json() for p in history[:i]], total)
        assert got == want, (i, got, want)
        total += want
    # a spend on chain above the composed total: the increment is at least 1
    last = history[-1]
    over = product.declared_micro(last, history[:-1], total * 10)
    assert over == 1 == declared(last.to_json(), [p.to_json() for p in history[:-1]], total * 10)


def test_near_misses_disagree() -> None:
    """The integer orders alone, or each update's own epsilon under the composed rule, give
    other spends: the grid above can tell a wrong accountant."""
    integer_only = [a for a in ACCT["ORDERS"] if float(a).is_integer()]
    namespace = readme_accountant()
    namespace["ORDERS"] = integer_only
    wrong = namespace["declared_micro"]
    p = params(1.0, 32 / 150, 5, 1e-5)
    assert wrong(p.to_json(), [], 0) != product.declared_micro(p, [], 0)
    history = [params(1.2, 32 / 150, 5, 1e-5, COMPOSED), params(0.8, 32 / 150, 10, 1e-5, COMPOSED)]
    first = product.declared_micro(history[0], [], 0)
    own = declared({**history[1].to_json(), "accounting": SUMMED}, [], 0)
    assert own != product.declared_micro(history[1], history[:1], first)


def test_readme_states_the_rounding() -> None:
    """The micro-epsilon is the epsilon times 10**6 rounded up, as fedtrail.protocol.privacy."""
    assert re.search(
        r"math\.ceil\(epsilon\(\[entry\(update\)\], update\[\"delta\"\]\) \* 10\*\*6\)", TEXT
    )
    eps = product.epsilon_spent(params(1.0, 32 / 150, 5, 1e-5))
    assert declared(params(1.0, 32 / 150, 5, 1e-5).to_json(), [], 0) == math.ceil(eps * 10**6)
