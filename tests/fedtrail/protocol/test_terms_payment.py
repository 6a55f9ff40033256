"""The settings that decide payment are fixed by round 1's terms (``payment_differences``):
what may change per round does not count, what decides payment is named when it changes."""

from __future__ import annotations

from dataclasses import replace

from fedtrail.protocol.terms import DuplicateRule, PrivacyTerms, RoundTerms, payment_differences

ZERO = "0" * 64
FIRST = RoundTerms(
    round=1,
    aggregation_rule={"name": "weighted", "max_norm": None},
    valuation={"method": "mc_shapley", "metric": "loss", "seed": 8, "standing": True},
    model_spec={"arch": "smallcnn"},
    spec_hash=ZERO,
    seed=7,
    validation_sha256=ZERO,
    validation_images=270,
    commit_seconds=60,
    reveal_seconds=60,
)


def _later(**changes: object) -> RoundTerms:
    """Round 3 as an honest aggregator writes it: the valuation seed moved with the round."""
    base = replace(FIRST, round=3, valuation={**FIRST.valuation, "seed": 10})
    return replace(base, **changes)  # type: ignore[arg-type]


def test_what_may_change_per_round_is_no_difference() -> None:
    later = _later(commit_seconds=90, reveal_seconds=600, seed=99)
    assert payment_differences(FIRST, later) == []


def test_each_payment_setting_is_named_when_it_changes() -> None:
    cases = {
        "validation split": _later(validation_images=80),
        "aggregation rule": _later(aggregation_rule={"name": "norm_clip", "max_norm": 1e-12}),
        '"standing":false': _later(valuation={**_later().valuation, "standing": False}),
        '"metric":"auc"': _later(valuation={**_later().valuation, "metric": "auc"}),
        "seed minus round 7 -> 0": _later(valuation={**_later().valuation, "seed": 3}),
        "duplicate rule": _later(duplicates=DuplicateRule(cosine=1.0, relative_l2=0.0)),
        "canonical encoding": _later(canonical_encoding=False),
        "privacy delta None -> 1e-05": _later(privacy=PrivacyTerms(delta=1e-5, required=False)),
        "commit window 60 s -> 10 s (shorter than round 1's)": _later(commit_seconds=10),
        "reveal window 60 s -> 59 s (shorter than round 1's)": _later(reveal_seconds=59),
    }
    for named, later in cases.items():
        (got,) = payment_differences(FIRST, later)
        assert named in got, (named, got)
    # required DP switched on under round 1's delta (a36)
    plain = replace(FIRST, privacy=PrivacyTerms(delta=1e-5, required=False))
    (got,) = payment_differences(plain, _later(privacy=PrivacyTerms(delta=1e-5, required=True)))
    assert "privacy required False -> True" in got


def test_a_move_to_peer_scoring_is_held_to_the_split_and_rule_only() -> None:
    peers = {"method": "loo", "metric": "auc", "mode": "peers", "quorum": 3}
    moved = _later(valuation=peers, score_commit_seconds=60, score_reveal_seconds=60)
    assert payment_differences(FIRST, moved) == []
    assert (
        payment_differences(moved, replace(moved, round=4, valuation={**peers, "quorum": 2})) == []
    )
    (got,) = payment_differences(FIRST, replace(moved, validation_sha256="ab" * 32))
    assert "validation split" in got


def test_a_move_from_peer_scoring_back_to_the_aggregator_is_named() -> None:
    peers = {"method": "loo", "metric": "auc", "mode": "peers", "quorum": 3}
    first = _later(round=1, valuation=peers, score_commit_seconds=60, score_reveal_seconds=60)
    unbound = _later(valuation={**_later().valuation, "standing": False})
    (got,) = payment_differences(first, unbound)
    assert "valuation mode peers -> " in got


def test_without_a_valuation_seed_the_base_seed_is_the_valuation_seed() -> None:
    """Terms whose valuation names no seed are valued with the base ``seed`` plus the round
    (``RoundLog.valuation_seed``): re-choosing the base seed then re-chooses the Monte-Carlo
    permutations, which is named (attack a30); keeping it, or moving to a valuation seed at the
    same offset, is no difference."""
    unseeded = {k: v for k, v in FIRST.valuation.items() if k != "seed"}
    first = replace(FIRST, valuation=unseeded)
    same = replace(first, round=3)
    assert payment_differences(first, same) == []
    (got,) = payment_differences(first, replace(same, seed=1234))
    assert "valuation seed minus round 7 -> 1234" in got, got
    # the same effective seed written as a valuation seed (an upgraded aggregator): 3 + 7
    assert payment_differences(first, replace(same, valuation={**unseeded, "seed": 10})) == []


def test_required_dp_and_its_delta_are_fixed_by_round_1() -> None:
    """Required DP turned off after round 1 is named (attack a36: the aggregator kept its plain
    sites out of the rounds it chose by turning it on and off), and so is another delta or a
    dropped privacy block (attack a39: a delta moved for chosen rounds keeps out the DP sites
    whose [privacy] delta or min_delta refuses it, and with no block each site accounts at a
    delta of its own, up to 1 / its samples); round 1's block repeated is no difference."""
    private = replace(FIRST, privacy=PrivacyTerms(delta=1e-5, required=True))
    (got,) = payment_differences(private, _later(privacy=PrivacyTerms(delta=1e-5, required=False)))
    assert "privacy required True -> False" in got
    got = payment_differences(private, _later())
    assert any("privacy required True -> False" in g for g in got), got
    assert any("privacy delta 1e-05 -> None" in g for g in got), got
    (got,) = payment_differences(private, _later(privacy=PrivacyTerms(delta=1e-6, required=True)))
    assert "privacy delta 1e-05 -> 1e-06" in got
    plain = replace(FIRST, privacy=PrivacyTerms(delta=1e-6, required=False))
    (got,) = payment_differences(plain, _later(privacy=PrivacyTerms(delta=1e-5, required=False)))
    assert "privacy delta 1e-06 -> 1e-05" in got
    same = _later(privacy=PrivacyTerms(delta=1e-5, required=True))
    assert payment_differences(private, same) == []


def test_a_peer_round_1s_score_windows_bound_the_later_peer_rounds() -> None:
    """A score window shortened for a chosen round shuts out the slowest validators, whose
    vectors then never count (session 44, next to a40): named when round 1 was a peer round;
    longer is free. Open: a federation whose round 1 was the aggregator's sets its score
    windows with its first peer round, unbound by round 1 (each site's ``[accept]
    min_commit_seconds`` bounds them instead)."""
    peers = {"method": "loo", "metric": "auc", "mode": "peers", "quorum": 3}
    first = _later(round=1, valuation=peers, score_commit_seconds=60, score_reveal_seconds=60)
    later = replace(first, round=3)
    assert payment_differences(first, replace(later, score_commit_seconds=90)) == []
    (got,) = payment_differences(first, replace(later, score_commit_seconds=10))
    assert "score commit window 60 s -> 10 s (shorter than round 1's)" in got
    (got,) = payment_differences(first, replace(later, score_reveal_seconds=59))
    assert "score reveal window 60 s -> 59 s (shorter than round 1's)" in got
    moved = _later(valuation=peers, score_commit_seconds=10, score_reveal_seconds=10)
    assert payment_differences(FIRST, moved) == []


def test_the_explanation_wording_is_fixed_by_round_1() -> None:
    """``valuation.explanation_wording`` (session 57) names how the round's explanation texts
    are worded, which ``audit verify --validation`` holds them to: a later round that drops it
    (to have a lying text only noted, attack a125 ``detail``) or names another changes round
    1's settings; a ledger whose round 1 named none (an older writer's) stays without."""
    named = replace(FIRST, valuation={**FIRST.valuation, "explanation_wording": 1})
    (dropped,) = payment_differences(named, _later())
    assert '"explanation_wording":1' in dropped, dropped
    (added,) = payment_differences(
        FIRST, _later(valuation={**_later().valuation, "explanation_wording": 1})
    )
    assert '"explanation_wording":1' in added, added
    kept = _later(valuation={**_later().valuation, "explanation_wording": 1})
    assert payment_differences(named, kept) == []
