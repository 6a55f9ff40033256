"""A14: an aggregator writes round terms that switch one of today's rules off or to an extreme.

For each, prints the node's refusal (``ThresholdLimits().refusal``, the default ``[accept]``
with its ``[accept.loosest]``: a node does not take part in such a round) and, for the valuation
thresholds, runs one round of four honest 150-image sites under them and prints `audit
verify`'s verdict (``terms.limits`` must fail for a verifier told nothing).

usage: python attacks/a14_terms_extremes.py [run]   (without ``run``: the refusals only)
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.valuation import default_combiner
from fedtrail.valuation.limits import ThresholdLimits

base = default_combiner(True)
dup = DuplicateRule()
CASES = {
    "norm_size_cap 1e6 (any boost excused by a count)": (replace(base, norm_size_cap=1e6), dup),
    # the default since a10: the allowance on needs the sites' consent ([accept.loosest])
    "norm_size_cap 10 (the opt-in allowance, a10)": (replace(base, norm_size_cap=10.0), dup),
    "tiny_size_power 50 (free-rider floor ~0 below the median)": (
        replace(base, tiny_size_power=50.0),
        dup,
    ),
    "tiny_size_power 0 (allowance off)": (replace(base, tiny_size_power=0.0), dup),
    "dp_spend_check 0": (replace(base, dp_spend_check=0), dup),
    "duplicates.scaled_cosine absent": (base, replace(dup, scaled_cosine=None)),
    "duplicates.scaled_cosine 1.0": (base, replace(dup, scaled_cosine=1.0)),
    "duplicates.scaled_cosine 0.99 (zeroes honest skewed sites)": (
        base,
        replace(dup, scaled_cosine=0.99),
    ),
}
limits = ThresholdLimits()
for label, (comb, rule) in CASES.items():
    print(f"{label}: node refusal: {limits.refusal(comb, rule)}")

if len(sys.argv) > 1 and sys.argv[1] == "run":
    from harness import Site, run

    for label, (comb, rule) in CASES.items():
        if rule != dup:
            continue  # the aggregator writes the product's duplicate rule (tests/auditor)
        print(f"== {label}")
        run(
            [Site(f"h{i}", 150) for i in range(4)],
            rounds=1,
            verbose=False,
            settings=AggregatorSettings(
                explain_method=None, round_seconds=60, reveal_seconds=30, combiner=comb
            ),
        )
