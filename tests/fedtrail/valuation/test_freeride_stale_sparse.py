"""The stale screen's sparse test (``stale_support_cosine``, attack a91): an earlier public update
resent through ``topk8`` at a fraction below 1 is 0.995-0.9995 from its reference on the whole
update, under ``stale_cosine``, but on the entries it carries its codes are the reference's
exactly; honest sparse updates are not copies of their references."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch

from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol.duplicates import _flat, support_copy, support_copy_of
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.storage.codec import Compression, decode_update, encode_update
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.combine import Combiner
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.limits import ThresholdLimits

THRESHOLD = Combiner().stale_support_cosine


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
    """``d`` sent through ``topk8`` at ``fraction`` and decoded, as every reader sees it."""
    spec = ModelSpec()
    blob = encode_update(
        dict(d), spec=spec, round=2, compression=Compression(method="topk8", fraction=fraction)
    ).blob
    return decode_update(blob, spec=spec, expected_round=2)[0]


def _mix(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], w: float) -> dict:
    return {k: (a[k] * (1 - w) + b[k] * w).to(torch.float32) for k in a}


def _screen(
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    refs: Mapping[str, Mapping[str, torch.Tensor]],
    threshold: float,
) -> dict[str, str]:
    return free_riders(
        deltas, refs, min_norm_ratio=0.01, stale_cosine=0.99999, stale_distance=1e6,
        stale_support_cosine=threshold,
    )  # fmt: skip


def _cos(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    x, y = _flat(a), _flat(b)
    return float(torch.dot(x, y) / (x.norm() * y.norm()))


@pytest.mark.parametrize("fraction", [0.9, 0.7, 0.5, 0.1])
def test_an_earlier_update_resent_sparser_is_stale(fraction: float) -> None:
    """a91: the rider resends h0's previous-round update through ``topk8``; beside it honest
    updates (one dense, two sparse at the same and another fraction) are not flagged."""
    h0_before, glob = _update(1), _update(2)
    refs = {"h0's update of round 1": h0_before, "the global delta of round 1": glob}
    rider = _sparse(h0_before, fraction)
    assert _cos(rider, h0_before) < 0.99999  # the whole-update screen misses it
    # honest updates of this round: partly along the references (a trajectory), own data
    deltas = {
        "h0": _sparse(_mix(h0_before, _update(3), 0.5), fraction),
        "h1": _mix(glob, _update(4), 0.3),
        "h2": _sparse(_mix(glob, _update(5), 0.2), 0.5),
        "rider": rider,
    }
    assert _screen(deltas, refs, 1.0) == {}  # off: the rule of terms written before it
    got = _screen(deltas, refs, THRESHOLD)
    assert list(got) == ["rider"]
    assert got["rider"].startswith("a stale copy of h0's update of round 1 on the entries it")


def test_the_screened_search_decides_as_the_pair_by_pair_rule() -> None:
    """support_copy_of gives, for every later update, the first earlier one support_copy calls
    it a repeat of: dense, sparse, copies sent sparser with noise near the threshold."""
    refs = [_update(s) for s in (10, 11, 12)]
    gen = torch.Generator().manual_seed(9)
    later: list[dict[str, torch.Tensor]] = [_update(13), _sparse(_update(14), 0.5)]
    for k, level in enumerate((0.0, 1e-4, 3e-4, 1e-3, 1e-2)):
        copy = _sparse(refs[k % 3], 0.5)
        later.append(
            {
                n: torch.where(t != 0, t + level * t.abs() * torch.randn(t.shape, generator=gen), 0)
                for n, t in copy.items()
            }
        )
    names = sorted(refs[0])
    sizes = [refs[0][n].numel() for n in names]
    expected = {}
    for j, b in enumerate(later):
        for i, a in enumerate(refs):
            if support_copy(_flat(a), _flat(b), sizes, THRESHOLD):
                expected[j] = i
                break
    assert 2 in expected and expected[2] == 0  # the plain copy is found
    assert 0 not in expected and 1 not in expected  # the honest ones are not
    assert support_copy_of(refs, later, THRESHOLD) == expected
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # float64 screen: the same verdicts
        assert support_copy_of(refs, later, THRESHOLD) == expected
    finally:
        torch.set_float32_matmul_precision(previous)


def test_terms_without_the_key_read_as_off_and_are_refused_by_the_loosest_limits() -> None:
    """Terms written before ``stale_support_cosine`` replay with the test off (1); a site's
    ``[accept.loosest]`` refuses them, and terms written now carry the product's value."""
    old = combiner_from(ValuationSettings(method="shapley", metric="auc", combiner={}))
    assert old.stale_support_cosine == 1.0
    assert any(
        b.startswith("stale_support_cosine 1.0") for b in ThresholdLimits().loosest.breaches(old)
    )
    assert ThresholdLimits().loosest.breaches(Combiner()) == []
    assert ThresholdLimits().breaches(Combiner(stale_support_cosine=0.9)) != []
