"""How ``audit verify`` compares a log's explanation text with the one the re-run renders
(:func:`fedtrail.auditor.components.text_gap`): words exactly, numbers parsed, each within one
unit of the last digit the re-run's prints (plus the figures' tolerance), so that last-bit
differences across machines pass and nothing else does."""

from __future__ import annotations

import pytest

from fedtrail.auditor.components import text_gap

RERUN = "ok: shapley value 0.0004874, accumulated 0.3164: not below, full score"


@pytest.mark.parametrize(
    "logged",
    [
        RERUN,
        "ok: shapley value 0.0004875, accumulated 0.3163: not below, full score",  # last digits
        "ok: shapley value 4.874e-04, accumulated 0.3164: not below, full score",  # spelled so
    ],
)
def test_the_re_runs_text_and_last_digit_differences_pass(logged: str) -> None:
    assert text_gap(logged, RERUN) is None


def test_a_figure_on_a_rounding_boundary_passes_either_way() -> None:
    """``%.4g`` of 0.00099996 and of 0.00099994: another number of digits, one unit apart."""
    assert text_gap("value 0.001 here", "value 0.0009999 here") is None
    assert text_gap("value 0.0009999 here", "value 0.001 here") is None


@pytest.mark.parametrize(
    "logged",
    [
        # attack a125 detail: another game value and a demotion
        "ok: shapley value -0.3000, accumulated -0.3000: not below, demoted to 1.0%",
        "ok: shapley value 0.0004874, accumulated 0.3164: not below, demoted to 1.0%",
        "ok: shapley value 0.0004874, accumulated 0.3166: not below, full score",  # two units
        # fewer digits, to widen the tolerance to the log's own last digit: passed before
        "ok: shapley value 0, accumulated 1: not below, full score",
        "ok: shapley value 0.0004874: not below, full score",  # a number left out
    ],
)
def test_any_other_text_is_named(logged: str) -> None:
    gap = text_gap(logged, RERUN)
    assert gap is not None and gap.startswith(repr(logged[:120]))


def test_the_figures_tolerance_widens_each_number() -> None:
    assert text_gap("value 0.3170", "value 0.3164", slack=1e-3) is None
    assert text_gap("value 0.3180", "value 0.3164", slack=1e-3) is not None


def test_a_small_accumulated_value_passes_within_the_standings_tolerance() -> None:
    """Below 0.1, four significant digits print units under the ~1e-5 an auditor on another
    thread count re-derives an accumulated value apart: verify passes the standing's
    tolerance (1e-4, ``STANDING_TOLERANCE``) as ``slack``."""
    from fedtrail.auditor.verify import STANDING_TOLERANCE

    logged, rerun = "accumulated -0.003164: below", "accumulated -0.003171: below"
    assert text_gap(logged, rerun) is not None
    assert text_gap(logged, rerun, slack=STANDING_TOLERANCE) is None


def test_a_demotion_that_prints_100_percent_reads_as_a_full_score() -> None:
    """An accumulated value within the noise of its reference is demoted by a few score units
    on one machine and not on another (the score tolerance passes it): the two texts are one."""
    from fedtrail.auditor.verify import _full_score

    full = "ok: loo value 0.01, accumulated -1e-06: not below, full score"
    assert _full_score("ok: loo value 0.01, accumulated -1e-06: below, demoted to 100.0%") == full
    warm = "ok: loo value 0.01, accumulated -1e-06: below, demoted to 100.0% (warm-up: floor 0.5)"
    assert _full_score(warm) == full
    assert _full_score(full) == full
    kept = "ok: loo value 0.01, accumulated -0.001: below, demoted to 99.8%"
    assert _full_score(kept) == kept


NEAR = (
    "ok: shapley value 0.01234, accumulated -0.1000 against the median site's -2e-06: below, "
    "demoted to 80.0%"
)


def test_a_median_clause_on_either_side_of_zero_passes_within_the_slack() -> None:
    """The median site's reference within noise of 0 is written on one machine (-2e-06) and
    not on another (0): the clause is left out of both before comparing, at the figures'
    tolerance; one well away from 0 is still compared (review of session 57)."""
    without = "ok: shapley value 0.01234, accumulated -0.1000: below, demoted to 80.0%"
    assert text_gap(NEAR, without, 1e-4) is None
    assert text_gap(without, NEAR, 1e-4) is None
    far = NEAR.replace("-2e-06", "-0.05")
    assert text_gap(far, without, 1e-4) is not None
    assert text_gap(without, far, 1e-4) is not None


def test_the_credit_clause_of_a_value_within_noise_of_zero_passes_within_the_slack() -> None:
    credit = (
        "; this round's positive value not credited: cosine -0.412 to the median update is "
        "below 0.1"
    )
    base = "ok: shapley value 3e-06, accumulated 0.2000: not below, full score"
    assert text_gap(base + credit, base, 1e-4) is None
    assert text_gap(base, base + credit, 1e-4) is None
    clear = base.replace("3e-06", "0.04")
    assert text_gap(clear, clear + credit, 1e-4) is not None


@pytest.mark.parametrize(
    ("logged", "rerun"),
    [
        ("stale copy of 0xAb13's update of round 4", "stale copy of 0xAb12's update of round 4"),
        ("stale copy of 0xAb12's update of round 5", "stale copy of 0xAb12's update of round 4"),
        ("stale copy of 1x0b12's update of round 4", "stale copy of 0x0b12's update of round 4"),
        ("claims 101 samples, 2.0x the median", "claims 100 samples, 2.0x the median"),
    ],
)
def test_addresses_rounds_and_counts_are_compared_exactly(logged: str, rerun: str) -> None:
    """Digits inside an address, a round number and a sample count are not figures a machine
    rounds: one unit apart is another text (passed before: review of session 57)."""
    assert text_gap(logged, rerun, 1e-4) is not None


def test_a_ratio_printed_before_an_x_is_still_a_figure() -> None:
    assert text_gap("norm 1.235x the median", "norm 1.234x the median") is None
