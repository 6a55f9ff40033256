"""The duplicate rule's per-update work done ahead (issue 18: ``audit verify`` does it as each
update is decoded, while the round's later updates are still being fetched):
:class:`~fedtrail.protocol.duplicates.DuplicateWork`'s Gram entries keep the screen's error
bound whatever order the rows came in, :func:`find_duplicates` takes every flat, code, count and
screen from it instead of computing them, and finds the same copies; a delta it does not hold
(another object, one left out, rows past its capacity, another rule) is computed as before."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from fedtrail.protocol import duplicates
from fedtrail.protocol.duplicates import (
    AHEAD_BATCH,
    SCREEN_CHUNK,
    DuplicateWork,
    Entry,
    _gram,
    near_identical,
)
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.valuation.freeride import duplicate_residual_z
from tests.fedtrail.protocol.test_duplicates import OLD, RULE, WHITE, _flat, _toward, _update

COUNTED = ("_flat", "codes", "_nonzero_counts", "_fill_plain", "_fill_codes")
"""The per-update steps :class:`DuplicateWork` does ahead."""


@contextmanager
def _calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often :func:`find_duplicates` calls each of :data:`COUNTED` inside the block."""
    counts = dict.fromkeys(COUNTED, 0)
    with monkeypatch.context() as m:
        for name in COUNTED:
            real = getattr(duplicates, name)

            def counted(
                *a: Any, __name: str = name, __real: Callable[..., Any] = real, **k: Any
            ) -> Any:
                counts[__name] += 1
                return __real(*a, **k)

            m.setattr(duplicates, name, counted)
        yield counts


def _round(n: int = 2 * AHEAD_BATCH + 5) -> list[Entry]:
    """A round of model-shaped updates in which some are copies: equal, scaled, near the
    cosine threshold on both sides, noisy (white), and honest ones, committed out of site
    order."""
    gen = torch.Generator().manual_seed(7)
    base = [_update(seed) for seed in range(n // 2)]
    deltas: list[Mapping[str, torch.Tensor]] = list(base)
    for k in range(n - len(base)):
        d = base[k % len(base)]
        flat = _flat(d)
        if k % 4 == 0:
            deltas.append({name: v * 1.5 for name, v in d.items()})
        elif k % 4 == 1:
            near = _toward(flat, RULE.cosine + 1e-9 if k % 8 == 1 else RULE.cosine - 1e-9, gen)
            deltas.append(_unflat(near, d))
        elif k % 4 == 2:
            noise = {n: 1e-3 * v.std() * torch.randn(v.shape, generator=gen) for n, v in d.items()}
            deltas.append({name: v + noise[name] for name, v in d.items()})
        else:
            deltas.append({name: v.clone() for name, v in d.items()})
    order = list(range(1, n + 1))
    random.Random(3).shuffle(order)
    return [Entry(f"s{k:02d}", order[k], f"{k:064x}", d) for k, d in enumerate(deltas)]


def _unflat(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, at = {}, 0
    for name in sorted(like):
        size = like[name].numel()
        out[name] = flat[at : at + size].reshape(like[name].shape).to(torch.float32)
        at += size
    return out


def _work(entries: Sequence[Entry], rule: DuplicateRule, seed: int = 0) -> DuplicateWork:
    """Every usable delta of ``entries`` added in a shuffled order (as fetches arrive)."""
    work = DuplicateWork(rule, len(entries))
    shuffled = [e for e in entries if e.delta is not None]
    random.Random(seed).shuffle(shuffled)
    for e in shuffled:
        assert e.delta is not None
        work.add(e.delta)
    return work


def _find(entries: Sequence[Entry], rule: DuplicateRule, work: DuplicateWork | None) -> Any:
    return duplicates.find_duplicates(entries, rule, whiteness=duplicate_residual_z, work=work)


def test_the_gram_built_ahead_is_within_the_screens_stated_error() -> None:
    """Rows added one at a time, their Gram entries taken :data:`AHEAD_BATCH` rows at a time
    against every row before: each entry within gamma_c * sum |a_k b_k| of the float64
    product (the bound ``_screen_margin`` rests on, as ``_gram``'s), and the codes'
    Gram exact."""
    gen = torch.Generator().manual_seed(5)
    n = 2 * AHEAD_BATCH + 3
    rows = torch.randn(n, 3 * SCREEN_CHUNK + 17, generator=gen) ** 3  # heavy-tailed
    work = DuplicateWork(RULE, n)
    for row in rows:
        work.add({"w": row})
    work._extend()
    gram = work._grams[0][:n, :n]
    exact = rows.to(torch.float64) @ rows.to(torch.float64).T
    magnitudes = rows.abs().to(torch.float64) @ rows.abs().to(torch.float64).T
    gamma = SCREEN_CHUNK * 2.0**-24 / (1 - SCREEN_CHUNK * 2.0**-24)
    assert bool(((gram - exact).abs() <= gamma * magnitudes).all())
    assert float((gram - exact).abs().max()) > 0  # float32 blocks
    codes = work._matrices[1][:n]
    assert torch.equal(work._grams[1][:n, :n], _gram(codes))  # integers: exact either way


@pytest.mark.parametrize("rule", [RULE, WHITE, OLD], ids=["rule", "white", "old"])
def test_find_duplicates_takes_the_work_ahead_and_finds_the_same_copies(
    rule: DuplicateRule, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = _round()
    plain = _find(entries, rule, None)
    assert len(plain) >= 5  # the round has copies to find
    work = _work(entries, rule)
    with _calls(monkeypatch) as calls:
        ahead = _find(entries, rule, work)
    assert ahead == plain
    assert calls == dict.fromkeys(COUNTED, 0)  # nothing per update computed again
    ordered = sorted(entries, key=lambda e: (e.commit_order, e.site))
    width = sum(v.numel() for v in entries[0].delta.values())  # type: ignore[union-attr]
    floor = min(rule.cosine, rule.scaled_cosine or rule.cosine)
    apart = work.apart([e.delta for e in ordered], width, floor)
    assert apart  # honest pairs are screened out
    for i, j in apart:  # and every one of them is no copy by the exact rule
        a, b = ordered[i].delta, ordered[j].delta
        assert a is not None and b is not None
        assert not near_identical(_flat(a), _flat(b), OLD)


def test_a_delta_the_work_does_not_hold_is_computed_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Equal values in other objects, one update left out, rows past the capacity, or work
    prepared under another rule: :func:`find_duplicates` computes what it lacks itself (the
    screen included) and finds the same copies."""
    entries = _round()
    plain = _find(entries, RULE, None)
    others = [Entry(e.site, e.commit_order, e.sha256, dict(e.delta or {})) for e in entries]
    left_out = DuplicateWork(RULE, len(entries))
    full = DuplicateWork(RULE, len(entries) - 1)  # one row short
    for k, e in enumerate(entries):
        assert e.delta is not None
        full.add(e.delta)
        if k:
            left_out.add(e.delta)
    for case, work, judged in (
        ("other objects", _work(entries, RULE), others),
        ("one left out", left_out, entries),
        ("past its capacity", full, entries),
        ("another rule", _work(entries, OLD), entries),
    ):
        with _calls(monkeypatch) as calls:
            got = _find(judged, RULE, work)
        assert got == plain, case
        assert calls["_fill_plain"] > 0, case  # the screen's rows built there
        if case in ("other objects", "another rule"):
            assert calls["_flat"] > 0, case
