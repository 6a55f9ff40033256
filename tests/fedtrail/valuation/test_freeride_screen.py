"""The free-rider checks screen the stale pairs with one Gram matrix (BLAS) before the exact
pair computation: their decisions and reasons must be those of the plain pair-by-pair rule,
bit for bit, including pairs whose exact cosine or distance sits on the threshold itself."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch

from fedtrail.ml.aggregation import deterministic_dot
from fedtrail.valuation import freeride
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.rows import Rows

Delta = dict[str, torch.Tensor]
SHAPES = {"conv.weight": (7, 3, 5, 5), "conv.bias": (7,), "fc.weight": (10, 131), "fc.bias": (10,)}
# 525 + 7 + 1310 + 10 = 1852 values: one full 1024-block and a padded tail


def _flat(delta: Mapping[str, torch.Tensor]) -> np.ndarray:
    return np.concatenate([delta[k].numpy().astype(np.float64).ravel() for k in SHAPES])


def _delta(vec: np.ndarray) -> Delta:
    out: Delta = {}
    offset = 0
    for name, shape in SHAPES.items():
        size = math.prod(shape)
        out[name] = torch.from_numpy(vec[offset : offset + size].astype(np.float32).reshape(shape))
        offset += size
    return out


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Exact cosine and distance (relative to ``b``) of one pair, as the rule defines them."""
    na, nb = math.sqrt(deterministic_dot(a, a)), math.sqrt(deterministic_dot(b, b))
    diff = a - b
    return deterministic_dot(a, b) / (na * nb), math.sqrt(deterministic_dot(diff, diff)) / nb


def reference_rule(
    deltas: Mapping[str, Delta],
    references: Mapping[str, Delta],
    *,
    min_norm_ratio: float,
    stale_cosine: float,
    stale_distance: float,
    model_norm: float = 0.0,
    min_model_ratio: float = 0.0,
) -> dict[str, str]:
    """The rule written plainly: every norm, then every (update, reference) pair in turn."""
    sites, labels = list(deltas), list(references)
    rows = [_flat(deltas[s]) for s in sites] + [_flat(references[r]) for r in labels]
    norms = [math.sqrt(deterministic_dot(r, r)) for r in rows]
    median = sorted(norms[: len(sites)])[(len(sites) - 1) // 2]
    out: dict[str, str] = {}
    for i, site in enumerate(sites):
        norm = norms[i]
        if norm == 0.0:
            out[site] = "the update is zero"
        elif norm < min_norm_ratio * median:
            out[site] = (
                f"norm {norm:.3g} is {norm / median:.2%} of the median {median:.3g} "
                f"(below {min_norm_ratio:.0%})"
            )
        elif norm < min_model_ratio * model_norm:
            out[site] = (
                f"norm {norm:.3g} is {norm / model_norm:.3%} of the global model's "
                f"{model_norm:.3g} (below {min_model_ratio:.1%})"
            )
        else:
            for j, label in enumerate(labels, start=len(sites)):
                if label.startswith(f"{site}'s update") and norm < min_norm_ratio * norms[j]:
                    out[site] = (
                        f"norm {norm:.3g} is {norm / norms[j]:.2%} of its own earlier update's "
                        f"{norms[j]:.3g} ({label}; below {min_norm_ratio:.0%})"
                    )
                    break
            if site in out:
                continue
            for j, label in enumerate(labels, start=len(sites)):
                if norms[j] == 0.0:
                    continue
                cosine, distance = _pair(rows[i], rows[j])
                if cosine > stale_cosine and distance < stale_distance:
                    out[site] = (
                        f"a stale copy of {label} (cosine {cosine:.6f}, distance "
                        f"{distance:.2%} of its norm)"
                    )
                    break
    return out


def _round(seed: int) -> tuple[dict[str, Delta], dict[str, Delta], list[tuple[str, str]]]:
    """Updates and references with stale candidates at both thresholds' edges: copies of a
    reference plus an orthogonal-ish perturbation of 0.5-1.6% of its norm (the default
    thresholds' boundaries: distance 1%, cosine 0.9999 at about 1.41%), scaled copies (cosine
    about 1, far in distance), honest ones, a zero reference and a tiny own update."""
    rng = np.random.default_rng(seed)
    width = sum(math.prod(s) for s in SHAPES.values())
    refs = {f"s{k}'s update of round 3": rng.normal(0, 0.02, width) for k in range(6)}
    refs["the global delta of round 3"] = rng.normal(0, 0.01, width)
    refs["s5's update of round 2"] = np.zeros(width)
    ref_rows = list(refs.values())
    ups: dict[str, np.ndarray] = {}
    pairs: list[tuple[str, str]] = []
    for k in range(12):
        site = f"s{k}"
        kind = k % 4
        j = int(rng.integers(0, 7))
        base = ref_rows[j]
        if kind == 0:  # honest: unrelated
            ups[site] = rng.normal(0, 0.02, width)
        elif kind == 1:  # a scaled copy
            ups[site] = base * rng.uniform(0.5, 1.5)
        else:  # a perturbed copy near a threshold
            noise = rng.normal(0, 1, width)
            noise *= rng.uniform(0.005, 0.016) * np.linalg.norm(base) / np.linalg.norm(noise)
            ups[site] = base + noise
            pairs.append((site, list(refs)[j]))
    ups["s11"] = ref_rows[5] * 0.001  # tiny against its own earlier update
    deltas = {s: _delta(v) for s, v in ups.items()}
    references = {label: _delta(v) for label, v in refs.items()}
    return deltas, references, [(s, r) for s, r in pairs if s != "s11"]


@pytest.mark.parametrize("seed", range(6))
def test_the_screen_decides_as_the_pair_by_pair_rule(seed: int) -> None:
    deltas, references, pairs = _round(seed)
    rule = {"min_norm_ratio": 0.01, "stale_cosine": 0.9999, "stale_distance": 0.01}
    expected = reference_rule(deltas, references, **rule)
    assert free_riders(deltas, references, **rule) == expected
    assert any(r.startswith("a stale copy") for r in expected.values())  # both outcomes seen
    assert len(expected) < len(deltas)
    # thresholds on a pair's exact values, and one ulp to either side: the screen must leave
    # the decision to the exact computation (a pair exactly on a threshold is not stale)
    for site, label in pairs:
        cosine, distance = _pair(_flat(deltas[site]), _flat(references[label]))
        for c in (math.nextafter(cosine, -1.0), cosine):
            for d in (distance, math.nextafter(distance, 2.0)):
                near = {"min_norm_ratio": 0.01, "stale_cosine": c, "stale_distance": d}
                want = reference_rule(deltas, references, **near)
                assert free_riders(deltas, references, **near) == want
                stale = c < cosine and d > distance
                assert (want.get(site, "").startswith("a stale copy")) or not stale


def test_model_norm_rule_and_no_references() -> None:
    deltas, references, _ = _round(99)
    rule = {"min_norm_ratio": 0.01, "stale_cosine": 0.9999, "stale_distance": 0.01}
    norms = sorted(float(np.linalg.norm(_flat(d))) for d in deltas.values())
    extra = {"model_norm": norms[3] * 1000, "min_model_ratio": 1e-3}
    expected = reference_rule(deltas, references, **rule, **extra)
    assert any("global model" in r for r in expected.values())
    assert free_riders(deltas, references, **rule, **extra) == expected
    assert free_riders(deltas, {}, **rule) == reference_rule(deltas, {}, **rule)


@pytest.mark.parametrize("seed", range(3))
def test_unrelated_updates_are_settled_by_the_groups_bound_without_the_gram(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No update near a copy of a reference: the groups' Cauchy-Schwarz bound rules out every
    pair, so the Gram matrix is never computed, and the decisions are the plain rule's."""
    deltas, references, _ = _round(seed)
    honest = {s: d for s, d in deltas.items() if int(s[1:]) % 4 == 0}
    assert len(honest) == 3
    rule = {"min_norm_ratio": 0.01, "stale_cosine": 0.9999, "stale_distance": 0.01}
    expected = reference_rule(honest, references, **rule)

    def no_gram(*args: object) -> None:
        raise AssertionError("the Gram matrix was computed")

    monkeypatch.setattr(Rows, "gram", no_gram)
    assert free_riders(honest, references, **rule) == expected
    # a copy among them cannot be settled by the bound: the Gram (here refused) is consulted
    copied = {**honest, "copy": references["s2's update of round 3"]}
    with pytest.raises(AssertionError, match="Gram matrix"):
        free_riders(copied, references, **rule)


@pytest.mark.parametrize("seed", range(3))
def test_updates_the_norms_mark_are_not_compared_with_the_references(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update the norms alone mark (zero, tiny, tiny against the model or its own earlier
    update) keeps that verdict and reason, and the pair tests (the Gram matrix, the sparse and
    kept-entries stale tests) read only the others: the plain rule's decisions for all."""
    deltas, references, _ = _round(seed)
    deltas["zero"] = {k: torch.zeros_like(v) for k, v in deltas["s0"].items()}
    rule = {"min_norm_ratio": 0.01, "stale_cosine": 0.9999, "stale_distance": 0.01}
    norms = sorted(float(np.linalg.norm(_flat(d))) for d in deltas.values())
    extra = {"model_norm": norms[4] * 1000, "min_model_ratio": 1e-3}
    expected = reference_rule(deltas, references, **rule, **extra)
    marked = {s for s, r in expected.items() if r.startswith(("norm", "the update is zero"))}
    assert len(marked) >= 4 and "zero" in marked and "s11" in marked
    assert any(r.startswith("a stale copy") for r in expected.values())
    sites = list(deltas)
    read: dict[str, list[int]] = {"gram": [], "support": [], "kept": []}
    gram = Rows.gram

    def spy_gram(self: Rows, left: list[int], right: range) -> np.ndarray:
        read["gram"] += list(left)
        return gram(self, left, right)

    def spy(name: str, inner: Any) -> Any:
        def wrapped(earlier: Any, later: Any, *args: Any) -> Any:
            ids = {id(d) for d in later}
            read[name] += [i for i, s in enumerate(sites) if id(deltas[s]) in ids]
            return inner(earlier, later, *args)

        return wrapped

    monkeypatch.setattr(Rows, "gram", spy_gram)
    monkeypatch.setattr(freeride, "support_copy_of", spy("support", freeride.support_copy_of))
    monkeypatch.setattr(freeride, "kept_largest_of", spy("kept", freeride.kept_largest_of))
    stale_sparse = {"stale_support_cosine": 0.99, "stale_support_overlap": 0.99}
    assert free_riders(deltas, references, **rule, **extra, **stale_sparse) == expected
    unmarked = {i for i, s in enumerate(sites) if s not in marked}
    for name, rows_read in read.items():
        assert set(rows_read) == unmarked, name
