"""find_duplicates: its screened search decides every pair as the pair-by-pair rule does."""

from __future__ import annotations

import torch

from fedtrail.protocol.duplicates import Entry, _flat, find_duplicates, near_identical
from fedtrail.protocol.terms import DuplicateRule

RULE = DuplicateRule()


def _reference(entries: list[Entry], rule: DuplicateRule) -> dict[str, str]:
    """The rule pair by pair, every norm and dot recomputed (the code before the screen)."""
    originals: list[tuple[str, str, torch.Tensor | None]] = []
    out: dict[str, str] = {}
    for e in sorted(entries, key=lambda e: (e.commit_order, e.site)):
        flat = None if e.delta is None else _flat(e.delta)
        source = next(
            (
                site
                for site, sha, other in originals
                if sha == e.sha256
                or (flat is not None and other is not None and near_identical(other, flat, rule))
            ),
            None,
        )
        if source is not None:
            out[e.site] = source
        elif flat is not None:
            originals.append((e.site, e.sha256, flat))
    return out


def _toward(a: torch.Tensor, cosine: float, gen: torch.Generator) -> torch.Tensor:
    """A vector of ``a``'s norm at exactly (to rounding) ``cosine`` to it."""
    noise = torch.randn(a.shape, generator=gen, dtype=torch.float64)
    noise -= (noise @ a) / (a @ a) * a
    noise *= a.norm() / noise.norm()
    return cosine * a + (1 - cosine**2) ** 0.5 * noise


def test_screened_search_equals_the_pair_by_pair_rule() -> None:
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(5000, generator=gen, dtype=torch.float64) for _ in range(6)]
    eps = 1e-9  # well inside the screen's margin: these pairs must reach the exact rule
    vectors = [
        *base,
        base[0].clone(),  # equal
        base[1] * (1 + 1e-7),  # scaled: cosine 1, distance 1e-7
        _toward(base[2], RULE.cosine + eps, gen),  # just above the threshold
        _toward(base[3], RULE.cosine - eps, gen),  # just below
        _toward(base[4], RULE.cosine - 1e-3, gen),  # clearly below
        base[5] * 1.5,  # cosine 1, distance 50%
        torch.zeros(5000, dtype=torch.float64),
        torch.zeros(5000, dtype=torch.float64),  # a zero update equals an earlier zero one
    ]
    entries = [
        Entry(f"s{i:02d}", i + 1, f"{i:064x}", {"w": v.to(torch.float32).reshape(50, 100)})
        for i, v in enumerate(vectors)
    ]
    entries.append(Entry("s98", 98, "e" * 64, None))  # unusable
    entries.append(Entry("s99", 99, entries[3].sha256, {"w": torch.ones(7)}))  # same bytes
    entries.append(Entry("s97", 97, "f" * 64, {"w": torch.ones(7)}))  # another shape
    for rule in (RULE, DuplicateRule(cosine=0.5, relative_l2=0.9), DuplicateRule(cosine=1.0)):
        got = find_duplicates(entries, rule)
        assert got == _reference(entries, rule)
    marks = find_duplicates(entries, RULE)
    assert marks["s06"] == "s00" and marks["s07"] == "s01" and marks["s99"] == "s03"
    assert marks["s13"] == "s12" and "s11" not in marks and "s10" not in marks


def test_the_screen_is_the_rule_on_every_pair_of_real_sized_random_rounds() -> None:
    gen = torch.Generator().manual_seed(1)
    common = torch.randn(20000, generator=gen)
    for spread in (1e-4, 1e-3, 1e-2):  # from near-identical to clearly apart
        entries = [
            Entry(
                f"s{i:02d}",
                i + 1,
                f"{i:064x}",
                {"w": common + spread * torch.randn(20000, generator=gen)},
            )
            for i in range(12)
        ]
        assert find_duplicates(entries, RULE) == _reference(entries, RULE)
