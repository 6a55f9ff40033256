"""Tests of the explanation-aware scorer and the shortcut-site demonstration.

The demonstration trains a global model, then three honest sites and one "shortcut" site whose
pneumonia images carry a bright 4x4 tag in the top-left corner, and probes every model with
validation images that carry the same tag (for every class, so the tag says nothing about the
label): an attribution can only show reliance on a feature that is present in the image. Measured
over 6 seeds of this setup (integrated gradients, 16 steps): the share of attribution mass on the
tag was 0.03..0.09 for honest site models and 0.35..0.42 for the shortcut site's; the change of the
corner-region share over the global model's was -0.05..+0.05 (honest) against +0.26..+0.35.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, Splits, load_bundled
from fedtrail.ml.explain import Explainer, frame_mask, region_share
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.ml.shortcuts import add_marker, marker_mask
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.protocol.codes import Reason
from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.explanation import (
    DEFAULT_SHIFT_THRESHOLD,
    ExplanationScorer,
    SiteExplanationShift,
    rank_correlation,
    top_k_overlap,
)

MARKER_SHARE_THRESHOLD = 0.2  # honest <= 0.09, shortcut >= 0.35 measured (module docstring)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_bundled()


def _state_plus(
    state: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    return {k: v + delta[k] for k, v in state.items()}


@dataclass(frozen=True)
class Federation:
    spec: ModelSpec
    global_state: dict[str, torch.Tensor]
    candidates: list[Candidate]
    probe: ImageDataset  # validation images, every one carrying the tag
    validation: ImageDataset


SHORTCUT = "site3-shortcut"


@pytest.fixture(scope="module")
def federation(splits: Splits) -> Federation:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = ModelSpec()
        perm = np.random.default_rng(0).permutation(len(splits.train))
        start = initial_model(spec, seed=0).state_dict()
        warm = train_local(
            start, splits.train.subset(perm[:600]), spec=spec, config=TrainConfig(epochs=3)
        )
        global_state = _state_plus(start, warm.delta)
        candidates = []
        for i in range(4):
            data = splits.train.subset(perm[600 + 400 * i : 600 + 400 * (i + 1)])
            name = f"site{i}-honest"
            if i == 3:
                data = add_marker(data, corner="top_left", size=4, label=1)
                name = SHORTCUT
            result = train_local(
                global_state, data, spec=spec, config=TrainConfig(epochs=3, seed=i + 1)
            )
            candidates.append(Candidate(name, result.num_samples, result.delta))
    finally:
        torch.set_num_threads(before)
    idx = np.sort(np.random.default_rng(1).choice(len(splits.val), size=32, replace=False))
    probe = add_marker(splits.val.subset(idx), corner="top_left", size=4, label=None)
    return Federation(spec, global_state, candidates, probe, splits.val)


def _ctx(fed: Federation) -> ValuationContext:
    return ValuationContext(
        global_state=fed.global_state,
        spec=fed.spec,
        candidates=fed.candidates,
        validation=fed.validation,
    )


def _context(
    state: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    candidates: Sequence[Candidate],
    validation: ImageDataset | None,
    seed: int = 0,
) -> ValuationContext:
    return ValuationContext(
        global_state=state, spec=spec, candidates=candidates, validation=validation, seed=seed
    )


# ---------------------------------------------------------------- the shortcut site


def test_shortcut_site_puts_its_attribution_on_the_marker(federation: Federation) -> None:
    mask = marker_mask((28, 28), corner="top_left", size=4)
    probe = torch.from_numpy(np.array(federation.probe.images))
    shares = {}
    for cand in federation.candidates:
        assert cand.delta is not None
        model = federation.spec.build()
        model.load_state_dict(_state_plus(federation.global_state, cand.delta))
        exp = Explainer(model, "integrated_gradients", n_steps=16).explain(probe)
        shares[cand.site] = float(region_share(exp.heatmaps, mask).mean())
    assert shares[SHORTCUT] > MARKER_SHARE_THRESHOLD, shares
    for site, share in shares.items():
        if site != SHORTCUT:
            assert share < MARKER_SHARE_THRESHOLD, shares


def test_scorer_gives_the_shortcut_site_the_lowest_score(federation: Federation) -> None:
    scorer = ExplanationScorer(federation.probe)
    ctx = _ctx(federation)
    scores = scorer.score(ctx)
    assert list(scores) == [c.site for c in federation.candidates]
    assert min(scores, key=scores.__getitem__) == SHORTCUT
    assert all(0.0 <= s <= 1.0 for s in scores.values())

    shifts = scorer.assess(ctx)
    assert [s for s, v in shifts.items() if v.shifted] == [SHORTCUT]
    bad = shifts[SHORTCUT]
    assert bad.threshold == DEFAULT_SHIFT_THRESHOLD
    assert bad.excess_share > 2 * DEFAULT_SHIFT_THRESHOLD
    assert "no-clinical-signal region" in bad.reason and "threshold" in bad.reason
    for site, v in shifts.items():
        assert v.global_region_share == shifts[SHORTCUT].global_region_share
        assert -1.0 <= v.rank_correlation <= 1.0 and 0.0 <= v.top_k_overlap <= 1.0
        if site != SHORTCUT:
            assert v.score > bad.score + 0.2
    flagged = scorer.flag(ctx)
    assert [c.site for c in flagged if c.status is Reason.EXPLANATION_SHIFT] == [SHORTCUT]
    assert [c.detail for c in flagged if c.site == SHORTCUT] == [bad.reason]
    d = bad.as_dict()
    assert set(d) >= {"rank_correlation", "top_k_overlap", "region_share", "shifted", "threshold"}


def test_scorer_with_a_wider_region_and_another_method(federation: Federation) -> None:
    # The outer 4-pixel frame as the region, gradient SHAP as the method: the same verdict.
    scorer = ExplanationScorer(
        federation.probe, method="gradient_shap", region=frame_mask(28, 28, 4), n_samples=10
    )
    shifts = scorer.assess(_ctx(federation))
    assert [s for s, v in shifts.items() if v.shifted] == [SHORTCUT]


# ---------------------------------------------------------------- scorer mechanics


def _tiny(splits: Splits) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    spec = ModelSpec()
    return spec, dict(initial_model(spec, seed=0).state_dict())


def test_an_unchanged_model_scores_one_and_unusable_candidates_are_skipped(
    splits: Splits,
) -> None:
    spec, state = _tiny(splits)
    zero = {k: torch.zeros_like(v) for k, v in state.items()}
    cands = [
        Candidate("a", 10, zero),
        Candidate("b", 10, None, status=Reason.MALFORMED),
        Candidate("c", 10, zero, status=Reason.LATE),
    ]
    ctx = _context(state, spec, cands, splits.val, 5)
    scorer = ExplanationScorer(probe_size=6)
    torch_state = torch.random.get_rng_state()
    shifts = scorer.assess(ctx)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert list(shifts) == ["a"]
    same = shifts["a"]
    assert same.score == 1.0 and not same.shifted and same.excess_share == 0.0
    assert same.rank_correlation == pytest.approx(1.0)
    assert same.top_k_overlap == 1.0
    assert same.region_share == same.global_region_share
    assert scorer.score(ctx) == {"a": 1.0}
    assert scorer.flag(ctx) == cands
    assert ExplanationScorer.name == "explanation"


def test_the_default_probe_is_a_seeded_choice_from_validation(splits: Splits) -> None:
    spec, state = _tiny(splits)
    delta = {k: 0.01 * torch.ones_like(v) for k, v in state.items()}
    ctx = _context(state, spec, [Candidate("a", 10, delta)], splits.val, 5)
    scorer = ExplanationScorer(probe_size=6)
    first, second = scorer.assess(ctx)["a"], scorer.assess(ctx)["a"]
    assert first == second
    other = scorer.assess(_context(state, spec, [Candidate("a", 10, delta)], splits.val, 6))["a"]
    assert other.region_share != first.region_share


def test_bad_settings_and_contexts_are_refused(splits: Splits) -> None:
    spec, state = _tiny(splits)
    with pytest.raises(ConfigError, match="unknown explanation method"):
        ExplanationScorer(method="lrp")
    with pytest.raises(ConfigError, match="does not take"):
        ExplanationScorer(method="occlusion", n_steps=3)
    with pytest.raises(ConfigError, match="top_k"):
        ExplanationScorer(top_k=0.0)
    with pytest.raises(ConfigError, match="shift_threshold"):
        ExplanationScorer(shift_threshold=1.5)
    with pytest.raises(ConfigError, match="boolean"):
        ExplanationScorer(region=np.ones((28, 28)))
    with pytest.raises(ConfigError, match="probe"):
        ExplanationScorer(np.zeros((0, 1, 28, 28), dtype=np.float32))
    zero = {k: torch.zeros_like(v) for k, v in state.items()}
    no_data = _context(state, spec, [Candidate("a", 1, zero)], None, 0)
    with pytest.raises(ConfigError, match="no probe images"):
        ExplanationScorer().assess(no_data)
    assert ExplanationScorer(np.zeros((2, 1, 28, 28), dtype=np.float32)).score(no_data) == {
        "a": 1.0
    }
    partial = {k: v for k, v in zero.items() if k != "fc2.bias"}
    bad = _context(state, spec, [Candidate("a", 1, partial)], splits.val, 0)
    with pytest.raises(ConfigError, match="tensors"):
        ExplanationScorer(probe_size=2).assess(bad)
    with pytest.raises(ConfigError, match="region mask"):
        ExplanationScorer(probe_size=2, region=np.ones((8, 8), dtype=bool)).assess(
            _context(state, spec, [Candidate("a", 1, zero)], splits.val, 0)
        )


def test_rank_correlation_matches_pearson_of_average_ranks() -> None:
    a = np.array([[1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    b = np.array([[1.0, 3.0, 2.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    got = rank_correlation(a, b)
    ranks_a0 = np.array([1.0, 2.5, 2.5, 4.0])
    ranks_b0 = np.array([1.0, 3.0, 2.0, 4.0])
    np.testing.assert_allclose(got, [np.corrcoef(ranks_a0, ranks_b0)[0, 1], -1.0, 0.0])
    # invariant under monotone transforms
    rng = np.random.default_rng(0)
    x, y = rng.random((3, 5, 5)), rng.random((3, 5, 5))
    np.testing.assert_allclose(rank_correlation(x, y), rank_correlation(np.exp(x), y**3))
    np.testing.assert_allclose(rank_correlation(x, x), 1.0)
    with pytest.raises(ConfigError):
        rank_correlation(x, y[:, :4])


def test_top_k_overlap_by_hand() -> None:
    a = np.array([[9.0, 8.0, 1.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    b = np.array([[9.0, 0.0, 8.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_allclose(top_k_overlap(a, b, 0.4), [0.5, 0.0])
    np.testing.assert_allclose(top_k_overlap(a, b, 1.0), [1.0, 1.0])
    np.testing.assert_allclose(top_k_overlap(a, a, 0.2), [1.0, 1.0])
    with pytest.raises(ConfigError):
        top_k_overlap(a, b, 0.0)


def test_site_explanation_shift_as_dict() -> None:
    s = SiteExplanationShift("x", 0.5, 0.4, 0.3, 0.2, 0.1, 0.875, False, 0.1, "ok")
    assert s.as_dict()["score"] == 0.875


# ---------------------------------------------------------------- the shortcut simulation


def _mixed(splits: Splits, n: int) -> ImageDataset:
    # the bundled splits are sorted by label; a random subset holds both classes
    return splits.val.subset(np.random.default_rng(0).choice(len(splits.val), n, replace=False))


def test_add_marker_tags_the_chosen_class_only(splits: Splits) -> None:
    ds = _mixed(splits, 40)
    original = np.array(ds.images)
    tagged = add_marker(ds, corner="bottom_right", size=3, value=0.9, label=1)
    mask = marker_mask((28, 28), corner="bottom_right", size=3)
    ones = ds.labels == 1
    assert ones.any() and (~ones).any()
    assert np.all(tagged.images[ones][:, :, mask] == np.float32(0.9))
    np.testing.assert_array_equal(tagged.images[ones][:, :, ~mask], original[ones][:, :, ~mask])
    np.testing.assert_array_equal(tagged.images[~ones], original[~ones])
    np.testing.assert_array_equal(tagged.labels, ds.labels)
    np.testing.assert_array_equal(ds.images, original)  # input untouched
    every = add_marker(ds, label=None)
    assert np.all(every.images[:, :, marker_mask((28, 28))] == 1.0)


def test_add_marker_rate_is_seeded(splits: Splits) -> None:
    ds = _mixed(splits, 60)
    mask = marker_mask((28, 28))
    n_ones = int((ds.labels == 1).sum())

    def tagged_rows(out: ImageDataset) -> np.ndarray:
        return np.flatnonzero(np.all(out.images[:, 0][:, mask] == 1.0, axis=1))

    a = tagged_rows(add_marker(ds, rate=0.5, seed=1))
    assert a.size == round(0.5 * n_ones)
    assert np.all(ds.labels[a] == 1)
    np.testing.assert_array_equal(a, tagged_rows(add_marker(ds, rate=0.5, seed=1)))
    assert not np.array_equal(a, tagged_rows(add_marker(ds, rate=0.5, seed=2)))
    assert tagged_rows(add_marker(ds, rate=0.0)).size == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"corner": "middle"}, "corner"),
        ({"size": 0}, "size"),
        ({"size": 29}, "exceeds"),
        ({"value": 1.5}, "value"),
        ({"rate": -0.1}, "rate"),
        ({"label": -1}, "label"),
        ({"seed": -1}, "seed"),
    ],
)
def test_add_marker_refuses_bad_settings(
    splits: Splits, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        add_marker(splits.val.subset(np.arange(4)), **kwargs)  # type: ignore[arg-type]
