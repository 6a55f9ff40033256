"""The stale screen's kept-entries test (``stale_support_overlap``, attack a93 ``stale``): an
earlier public update resent through ``topk8`` with noise added to the entries it keeps passes
``stale_support_cosine`` (the cosine there falls below 0.999995), but the entries it keeps are
still the reference's largest of each tensor; honest sparse updates keep far fewer of them."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch

from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol import duplicates
from fedtrail.protocol.duplicates import _flat, kept_largest_of, sparse, support_overlap
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.storage.codec import Compression, decode_update, encode_update
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.combine import Combiner
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.limits import ThresholdLimits

THRESHOLD = Combiner().stale_support_overlap


def _update(seed: int) -> dict[str, torch.Tensor]:
    """A SmallCNN-shaped update with heavy tails (a few large entries set each int8 scale)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in initial_model(ModelSpec(), 0).state_dict().items()}
    out = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        out[name] = (t * t.abs() * 1e-3).to(torch.float32)
    return out


def _sparse(d: Mapping[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    spec = ModelSpec()
    blob = encode_update(
        dict(d), spec=spec, round=2, compression=Compression(method="topk8", fraction=fraction)
    ).blob
    return decode_update(blob, spec=spec, expected_round=2)[0]


def _noisy_kept(d: Mapping[str, torch.Tensor], level: float, fraction: float) -> dict:
    """a93 ``stale``: ``d`` through ``topk8``, noise of ``level`` of its norm on the kept
    entries, through ``topk8`` again (the same entries)."""
    gen = torch.Generator().manual_seed(3)
    copy = _sparse(d, fraction)
    flat = _flat(copy)
    sd = level * float(flat.norm()) / int((flat != 0).sum()) ** 0.5
    noisy = {
        k: torch.where(v != 0, v + sd * torch.randn(v.shape, generator=gen), v)
        for k, v in copy.items()
    }
    return _sparse(noisy, fraction)


def _mix(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], w: float) -> dict:
    return {k: (a[k] * (1 - w) + b[k] * w).to(torch.float32) for k in a}


def _screen(
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    refs: Mapping[str, Mapping[str, torch.Tensor]],
    overlap: float,
) -> dict[str, str]:
    return free_riders(
        deltas, refs, min_norm_ratio=0.01, stale_cosine=0.99999, stale_distance=1e6,
        stale_support_cosine=0.999995, stale_support_overlap=overlap,
    )  # fmt: skip


def test_an_earlier_update_resent_sparse_with_noise_is_stale() -> None:
    """The rider resends h0's previous-round update through ``topk8`` at 0.1 with 5% noise on
    the kept values: ``stale_support_cosine`` misses it, the kept-entries test does not; honest
    updates beside it (one dense, two sparse, partly along the references) are not flagged."""
    h0_before, glob = _update(1), _update(2)
    refs = {"h0's update of round 1": h0_before, "the global delta of round 1": glob}
    rider = _noisy_kept(h0_before, 0.05, 0.1)
    assert sparse(rider) and support_overlap(h0_before, rider) == 1.0
    deltas = {
        "h0": _sparse(_mix(h0_before, _update(3), 0.5), 0.1),
        "h1": _mix(glob, _update(4), 0.3),
        "h2": _sparse(_mix(glob, _update(5), 0.4), 0.05),
        "rider": rider,
    }
    assert _screen(deltas, refs, 1.0) == {}  # off: the rule of terms written before it
    got = _screen(deltas, refs, THRESHOLD)
    assert list(got) == ["rider"]
    assert got["rider"].startswith("a stale copy of h0's update of round 1 by the entries it")


def test_kept_largest_of_is_the_first_reference_over_the_threshold() -> None:
    """For every later update, the first reference whose support_overlap is above the
    threshold, sparse later updates only (a dense one keeping every entry is never one)."""
    refs = [_update(s) for s in (10, 11, 12)]
    later = [
        _update(13),  # dense: not sparse, never compared
        refs[1],  # a dense resend: the other stale tests' case, not this one
        _sparse(_update(14), 0.05),
        _noisy_kept(refs[2], 0.2, 0.05),
        _noisy_kept(refs[0], 0.05, 0.3),
    ]
    expected = {}
    for j, b in enumerate(later):
        for i, a in enumerate(refs):
            if sparse(b) and support_overlap(a, b) > THRESHOLD:
                expected[j] = i
                break
    assert expected == {3: 2, 4: 0}
    assert kept_largest_of(refs, later, THRESHOLD) == expected


def test_terms_without_the_key_read_as_off_and_are_refused_by_the_loosest_limits() -> None:
    """Terms written before ``stale_support_overlap`` replay with the test off (1); a site's
    ``[accept.loosest]`` refuses them, and terms written now carry the product's value."""
    old = combiner_from(ValuationSettings(method="shapley", metric="auc", combiner={}))
    assert old.stale_support_overlap == 1.0
    assert any(
        b.startswith("stale_support_overlap 1.0") for b in ThresholdLimits().loosest.breaches(old)
    )
    assert ThresholdLimits().loosest.breaches(Combiner()) == []
    assert ThresholdLimits().breaches(Combiner(stale_support_overlap=0.5)) != []


def test_kept_largest_of_skips_only_references_that_cannot_be_over_the_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An earlier update nonzero at no more than the threshold's share of every unmatched later
    update's entries is not ranked (an entry counts at most 1, and 0 where it is 0); the answer
    is still the pair-by-pair rule's at every threshold, sparse references (partly covering the
    later updates) and dense ones alike."""
    refs = [
        _sparse(_update(20), 0.05),
        _sparse(_update(21), 0.5),
        _update(22),
        _sparse(_mix(_update(23), _update(20), 0.5), 0.3),
    ]
    later = [
        _sparse(_update(24), 0.05),
        _noisy_kept(refs[1], 0.05, 0.05),
        _sparse(_mix(_update(20), _update(25), 0.3), 0.05),
        _noisy_kept(refs[2], 0.1, 0.1),
    ]
    ranked: list[int] = []
    of = duplicates._Ranked.of

    def counted(a: torch.Tensor, sizes: list[int]) -> duplicates._Ranked:
        ranked.append(1)
        return of(a, sizes)

    monkeypatch.setattr(duplicates._Ranked, "of", counted)
    skipped = False
    for threshold in (0.0, 0.3, 0.5, 0.6, 0.9, 0.99):
        expected = {}
        for j, b in enumerate(later):
            for i, a in enumerate(refs):
                if sparse(b) and support_overlap(a, b) > threshold:
                    expected[j] = i
                    break
        ranked.clear()
        assert kept_largest_of(refs, later, threshold) == expected, threshold
        flags = [sparse(b) for b in later]
        assert kept_largest_of(refs, later, threshold, flags) == expected, threshold
        skipped |= len(ranked) < 2 * len(refs) and len(expected) < len(later)
    assert skipped  # some reference was never ranked while some later update was unmatched
    # the caller's sparse answers are the ones used: none sparse, none compared
    assert kept_largest_of(refs, later, 0.0, [False] * len(later)) == {}
