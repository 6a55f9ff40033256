"""``round_one_fixed``: a later round's terms with round 1's value of every field that
``payment_differences`` holds to round 1 (an older version's defaults), and their own value of
every other field, the fields found by ``payment_differences`` itself."""

from __future__ import annotations

from dataclasses import replace

from fedtrail.protocol.terms import (
    ABSENT,
    DuplicateRule,
    Personalisation,
    PrivacyTerms,
    RoundTerms,
    payment_differences,
    round_one_fixed,
)

ZERO = "0" * 64
OLD_RULE = DuplicateRule(support_overlap=None, white_noise_z=None)
FIRST = RoundTerms(
    round=1,
    aggregation_rule={"name": "weighted", "max_norm": None},
    valuation={
        "method": "mc_shapley",
        "metric": "loss",
        "seed": 1,
        "combiner": {"dp_noise_check": 1, "max_sample_ratio": 10.0},
    },
    model_spec={"arch": "smallcnn"},
    spec_hash=ZERO,
    seed=0,
    validation_sha256=ZERO,
    validation_images=270,
    commit_seconds=60,
    reveal_seconds=60,
    duplicates=OLD_RULE,
    privacy=PrivacyTerms(delta=1e-5, required=True),
)
# round 3 as a newer version writes it by default: new combiner field and value, the new
# duplicate fields, no privacy block, a personalisation block and longer windows of its own
LATER = replace(
    FIRST,
    round=3,
    valuation={
        "method": "mc_shapley",
        "metric": "loss",
        "seed": 3,
        "combiner": {"dp_noise_check": 2, "max_sample_ratio": 10.0, "stale_support_overlap": 0.99},
    },
    duplicates=DuplicateRule(),
    privacy=None,
    personalisation=Personalisation(steps=5),
    commit_seconds=600,
    reveal_seconds=30,
    seed=5,
)


def test_round_ones_payment_fields_are_taken_and_every_other_field_kept() -> None:
    assert payment_differences(FIRST, LATER)  # the newer defaults: a round nodes decline
    got, taken = round_one_fixed(FIRST, LATER)
    assert payment_differences(FIRST, got) == []
    assert got.round == 3
    assert got.valuation["combiner"] == FIRST.valuation["combiner"]
    assert got.valuation["seed"] == 3  # its own round's seed (round 1's offset)
    assert got.duplicates == OLD_RULE and got.privacy == FIRST.privacy
    assert got.personalisation == Personalisation(steps=5)  # free: its own
    assert (got.commit_seconds, got.reveal_seconds) == (600, 60)  # longer kept, shorter taken
    paths = {path: (ours, first) for path, ours, first in taken}
    assert paths["valuation/combiner/dp_noise_check"] == (2, 1)
    assert paths["valuation/combiner/stale_support_overlap"] == (0.99, ABSENT)
    assert paths["duplicates/white_noise_z"][1] is ABSENT
    assert paths["privacy/delta"] == (ABSENT, 1e-5)
    assert paths["windows/reveal_seconds"] == (30, 60)
    assert set(paths) == {
        "valuation/combiner/dp_noise_check",
        "valuation/combiner/stale_support_overlap",
        "duplicates/support_overlap",
        "duplicates/white_noise_z",
        "privacy/delta",
        "privacy/required",
        "windows/reveal_seconds",
    }


def test_own_paths_are_never_taken_and_stay_differences() -> None:
    mine = replace(LATER, validation_images=80)
    got, taken = round_one_fixed(FIRST, mine, own={"validation/images"})
    assert got.validation_images == 80
    assert "validation/images" not in {p for p, _, _ in taken}
    (left,) = payment_differences(FIRST, got)
    assert "validation split" in left


def test_the_same_terms_take_nothing() -> None:
    same = replace(FIRST, round=2, valuation={**FIRST.valuation, "seed": 2})
    assert round_one_fixed(FIRST, same) == (same, [])


def test_a_ledger_started_with_monte_carlo_keeps_it_under_another_default_large_game() -> None:
    """Should ``aggregator run``'s default large game change (issue 18: ``budget_shapley`` for
    new federations), a ledger whose round 1 was written without ``large_game`` (Monte-Carlo at
    every size) continues with Monte-Carlo, and an operator who gives the other game is
    refused: the terms ``AggregatorSettings`` writes, taken back to round 1's."""
    from fedtrail.aggregator.service import AggregatorSettings
    from fedtrail.protocol.roundlog import ValuationSettings

    newer = "budget_shapley"

    def terms(round_id: int, large_game: str | None) -> RoundTerms:
        valuation = AggregatorSettings(large_game=large_game).valuation_terms(
            round_id, quorum=None, probe=None
        )
        return replace(FIRST, round=round_id, valuation=valuation.to_json())

    first, later = terms(1, None), terms(2, newer)
    assert "large_game" not in first.valuation and later.valuation["large_game"] == newer
    assert payment_differences(first, later)  # nodes would decline the other game's round
    got, taken = round_one_fixed(first, later)
    assert payment_differences(first, got) == []
    assert ValuationSettings.from_json(got.valuation).large_game is None  # Monte-Carlo
    assert ("valuation/large_game", newer, ABSENT) in taken
    given, _ = round_one_fixed(first, later, own={"valuation/large_game"})
    assert given.valuation["large_game"] == newer and payment_differences(first, given)
