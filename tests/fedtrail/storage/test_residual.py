"""Tests of fedtrail.storage.residual: the error-feedback file survives restarts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedtrail.errors import InvalidUpdate
from fedtrail.ml.models import ModelSpec
from fedtrail.storage.codec import Compression, encode_update
from fedtrail.storage.residual import load_residual, save_residual

SPEC8 = ModelSpec(width=8)
OTHER = ModelSpec(width=16)
TINY = ModelSpec(width=1, hidden=2, image_size=4)


def rand_state(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) for n, (s, _) in spec.tensor_layout().items()}


def reason(fn: Callable[[], object]) -> str:
    with pytest.raises(InvalidUpdate) as err:
        fn()
    return err.value.reason


def test_missing_file_is_zeros_in_spec_order(tmp_path: Path) -> None:
    fresh = load_residual(tmp_path / "residual.safetensors", SPEC8)
    assert list(fresh) == list(SPEC8.tensor_layout())
    for name, (shape, _) in SPEC8.tensor_layout().items():
        assert fresh[name].shape == shape and fresh[name].dtype == torch.float32
        assert not fresh[name].any()
    assert list(tmp_path.iterdir()) == []  # loading never creates the file


def test_round_trip_is_bit_exact_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "residual.safetensors"
    comp = Compression(method="topk8", fraction=0.05)
    res = encode_update(rand_state(SPEC8, 13), spec=SPEC8, round=4, compression=comp).residual
    save_residual(path, res, spec=SPEC8, round=4)
    back = load_residual(path, SPEC8, expected_round=4)
    assert list(back) == list(res)
    assert all(torch.equal(back[n].view(torch.int32), res[n].view(torch.int32)) for n in res)
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_wrong_round_spec_truncation_and_kind_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "residual.safetensors"
    save_residual(path, rand_state(SPEC8, 1), spec=SPEC8, round=4)
    assert "round" in reason(lambda: load_residual(path, SPEC8, expected_round=5))
    assert "spec hash" in reason(lambda: load_residual(path, OTHER))
    path.write_bytes(path.read_bytes()[:-3])
    assert "residual file" in reason(lambda: load_residual(path, SPEC8))
    # a residual file is not an update, and vice versa
    path.write_bytes(encode_update(rand_state(TINY, 2), spec=TINY, round=0).blob)
    assert "kind" in reason(lambda: load_residual(path, TINY))


def test_save_refuses_a_residual_that_does_not_fit_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "residual.safetensors"
    bad = rand_state(TINY, 3)
    bad.popitem()
    assert "lacks" in reason(lambda: save_residual(path, bad, spec=TINY, round=0))
    assert not path.exists()
