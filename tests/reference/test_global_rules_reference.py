"""README *Global model* (*The public rules, exactly*) as ``scripts/independent/reader.py``
implements it from the text alone (``aggregate_rule``: every aggregation rule and every
``statistics`` setting), against the product's ``aggregate`` + ``apply_delta`` bit for bit: odd
and even counts, ties (equal updates, so Krum's tie-break decides), zeros of both signs, zero
weights, updates above and below the clipping norm, more than one 1024-wide block, and every
count of paid updates from 1 (Krum with fewer than ``2 * krum_f + 3`` or ``krum_m`` above the
count, which the product refused before session 54). Each rule also has a plausible
misreading that must disagree somewhere, so the comparison can fail. On a real federation:
``tests/reference/test_robust_rules_chain_reference.py``."""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import (
    RULE_NAMES,
    STATISTICS_RULES,
    AggregationError,
    AggregationRule,
    aggregate,
    apply_delta,
)
from fedtrail.protocol.weights import onchain_weights

ROOT = Path(__file__).resolve().parents[2]
READER = ROOT / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_rules", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _reader()

# layout order (a BatchNorm layer's statistics among the trainable tensors; fc.weight spans
# more than one 1024-wide block)
SHAPES: dict[str, tuple[int, ...]] = {
    "conv.weight": (4, 1, 3, 3),
    "bn.weight": (4,),
    "bn.bias": (4,),
    "bn.running_mean": (4,),
    "bn.running_var": (4,),
    "fc.weight": (2, 700),
    "fc.bias": (2,),
}
ORDER = list(SHAPES)
STATS = ("bn.running_mean", "bn.running_var")
ADDRS = [f"0x{i + 1:040x}" for i in range(8)]


def _case(
    seed: int, n: int, zero: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
    """A start model, ``n`` float32 updates and on-chain weights (``zero`` of them 0). Odd seeds
    round to one decimal with random signs (ties, zeros of both signs) and repeat update 0
    (equal Krum scores); sizes differ by orders of magnitude (clipping bites)."""
    rng = np.random.default_rng(seed)
    start = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    start["conv.weight"].flat[:3] = -0.0
    ups = []
    for i in range(n):
        scale = 10.0 ** ((i + seed) % 3 - 1)
        u = {k: rng.standard_normal(s) * scale for k, s in SHAPES.items()}
        if seed % 2:
            u = {
                k: np.round(v, 1) * np.where(rng.random(v.shape) < 0.5, -1, 1) for k, v in u.items()
            }
        ups.append({k: v.astype(np.float32) for k, v in u.items()})
    if seed % 2 and n > 2:
        ups[n - 1] = {k: v.copy() for k, v in ups[0].items()}
    samples = [int(x) for x in rng.integers(1, 400, n)]
    scores = [0 if i < zero else int(x) for i, x in enumerate(rng.integers(1, 10**6, n))]
    return start, ups, onchain_weights(samples, scores)


def _product(
    rule: AggregationRule, start: dict[str, Any], ups: list[dict[str, Any]], weights: list[int]
) -> dict[str, np.ndarray]:
    torch_ups = [{k: torch.from_numpy(v.copy()) for k, v in u.items()} for u in ups]
    s = {k: torch.from_numpy(v.copy()) for k, v in start.items()}
    out = apply_delta(s, aggregate(rule, torch_ups, weights, statistics=STATS))
    return {k: v.numpy() for k, v in out.items()}


def _readers(
    doc: dict[str, Any], start: dict[str, Any], ups: list[dict[str, Any]], weights: list[int]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = R.aggregate_rule(
        doc,
        start,
        dict(zip(ADDRS, ups, strict=False)),
        dict(zip(ADDRS, weights, strict=False)),
        ORDER,
    )
    return out


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(
        np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32)) for k in a
    )


RULES = [
    AggregationRule(name="weighted"),
    AggregationRule(name="median"),
    AggregationRule(name="trimmed_mean", trim_ratio=0.2),
    AggregationRule(name="trimmed_mean", trim_ratio=0.34),
    AggregationRule(name="krum", krum_f=1),
    AggregationRule(name="krum", krum_f=1, krum_m=2),
    AggregationRule(name="krum", krum_f=0, krum_m=1),
    AggregationRule(name="krum", krum_f=3, krum_m=6),
    AggregationRule(name="norm_clip"),
    AggregationRule(name="norm_clip", max_norm=3.0),
]


def test_the_cases_cover_every_rule_and_setting() -> None:
    assert {r.name for r in RULES} == set(RULE_NAMES)
    text = " ".join((ROOT / "README.md").read_text().split())
    bullet = text[text.index("- **Global model** (`global.recomputed`") :]
    bullet = bullet[: bullet.index("#### ")]
    for name in RULE_NAMES:
        assert f"- `{name}`" in bullet, name
    for setting in STATISTICS_RULES:
        assert f'`"{setting}"`' in bullet, setting


@pytest.mark.parametrize("statistics", STATISTICS_RULES)
@pytest.mark.parametrize(
    "rule", RULES, ids=lambda r: f"{r.name}-{r.trim_ratio}-{r.krum_m}-{r.max_norm}"
)
def test_the_reader_replays_the_product_bit_for_bit(rule: AggregationRule, statistics: str) -> None:
    rule = AggregationRule(**{**rule.to_terms(statistics=True), "statistics": statistics})
    doc = rule.to_terms(statistics=True)
    replayed = 0
    for seed in range(4):
        for n, zero in ((1, 0), (2, 0), (3, 1), (4, 0), (5, 0), (6, 1), (7, 0), (8, 2)):
            start, ups, weights = _case(seed * 10 + n, n, zero)
            # every count of paid updates (n - zero, 1 to 7) gives a global model
            want = _product(rule, start, ups, weights)
            assert _same(_readers(doc, start, ups, weights), want), (seed, n, zero)
            replayed += 1
    assert replayed == 32


def test_terms_without_the_setting_replay_as_weighted_statistics() -> None:
    """No ``statistics`` key (terms written before it): the statistics go through the rule like
    every other tensor; reading the key's absence as the current default would differ."""
    for name, n in (("median", 2), ("krum", 5), ("norm_clip", 4)):
        start, ups, weights = _case(3, n)
        doc = AggregationRule(name=name).to_terms(statistics=False)  # no "statistics" key
        want = _product(AggregationRule.from_terms(doc), start, ups, weights)
        assert _same(_readers(doc, start, ups, weights), want), name
        anchored = {**doc, "statistics": "anchored_median"}
        assert not _same(_readers(anchored, start, ups, weights), want), name


# ---------------------------------------------------------------- misreadings must disagree


def _misread(
    monkeypatch: pytest.MonkeyPatch, attr: str, fake: Callable[..., Any], rule: AggregationRule
) -> bool:
    """Whether the reader with ``attr`` replaced by ``fake`` still agrees with the product on
    every case."""
    monkeypatch.setattr(R, attr, fake)
    doc = rule.to_terms(statistics=True)
    agree = True
    for seed in range(6):
        for n in (2, 4, 5, 6):
            start, ups, weights = _case(seed * 7 + n, n)
            try:
                want = _product(rule, start, ups, weights)
            except AggregationError:
                continue
            agree &= _same(_readers(doc, start, ups, weights), want)
    monkeypatch.undo()
    return agree


def _low_median(rows: np.ndarray) -> np.ndarray:
    s: np.ndarray = np.sort(rows + 0.0, axis=0)
    return s[(rows.shape[0] - 1) // 2].copy()


def test_misreadings_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plausible readings of a looser text disagree with the product somewhere (the honest
    reader, patched with itself, agrees: the comparison is not vacuous either way)."""
    median = AggregationRule(name="median")
    assert _misread(monkeypatch, "median_columns", R.median_columns, median)
    # even counts: the lower middle value instead of the mean of the two middle ones
    assert not _misread(monkeypatch, "median_columns", _low_median, median)
    # the same misreading of norm_clip's default limit (the median norm of an even count)
    clip = AggregationRule(name="norm_clip", statistics="weighted")
    assert _misread(monkeypatch, "median_columns", R.median_columns, clip)
    assert not _misread(monkeypatch, "median_columns", _low_median, clip)


def _line(positions: list[float], negative_zero: bool = False) -> list[dict[str, Any]]:
    """Updates ``p * u`` for one vector ``u`` of small integers: every distance is exact."""
    rng = np.random.default_rng(9)
    u = {k: rng.integers(1, 4, s).astype(np.float32) for k, s in SHAPES.items()}
    out = [{k: (np.float32(p) * v).astype(np.float32) for k, v in u.items()} for p in positions]
    if negative_zero:
        out[0] = {k: np.negative(v) for k, v in out[0].items()}  # 0 * u negated: -0.0
    return out


def test_krum_ties_go_to_the_lower_address() -> None:
    """Positions 0, 1, -1, 10, -10 (f 1): scores 2, 5, 5, 181, 181; with m = 2 the tie between
    the second and third goes to the second (lower address): the global step is +u/2, not
    -u/2."""
    start = {k: np.zeros(s, dtype=np.float32) for k, s in SHAPES.items()}
    ups = _line([0, 1, -1, 10, -10])
    weights = onchain_weights([10] * 5, [10**6] * 5)
    rule = AggregationRule(name="krum", krum_f=1, krum_m=2, statistics="weighted")
    want = _product(rule, start, ups, weights)
    assert _same(_readers(rule.to_terms(statistics=True), start, ups, weights), want)
    assert np.array_equal(want["fc.weight"], ups[1]["fc.weight"] / 2)
    swapped = [ups[0], ups[2], ups[1], ups[3], ups[4]]
    assert np.array_equal(
        _product(rule, start, swapped, weights)["fc.weight"], ups[2]["fc.weight"] / 2
    )


def test_krum_keeps_the_first_rows_zero_signs() -> None:
    """m = 1 and the kept update is all -0.0, the start model too: the mean starts from the
    first kept row (README: ``acc`` = the first kept row), so -0.0 + -0.0 stays -0.0; a mean
    summed from 0.0 would give +0.0."""
    start = {k: np.full(s, -0.0, dtype=np.float32) for k, s in SHAPES.items()}
    ups = _line([0, 1, -1, 10, -10], negative_zero=True)
    weights = onchain_weights([10] * 5, [10**6] * 5)
    rule = AggregationRule(name="krum", krum_f=1, krum_m=1, statistics="weighted")
    want = _product(rule, start, ups, weights)
    assert _same(_readers(rule.to_terms(statistics=True), start, ups, weights), want)
    assert all(np.signbit(v).all() for v in want.values())


def _krum_as_refused(rule: dict[str, Any], rows: np.ndarray, c: list[float]) -> np.ndarray:
    """The rule before session 54: no global model below 2f + 3 updates or for m above n."""
    n, f = rows.shape[0], int(rule["krum_f"])
    m = n - f if rule.get("krum_m") is None else int(rule["krum_m"])
    if rule.get("name") == "krum" and (n < 2 * f + 3 or m > n):
        raise R.RuleRefused("too few updates")
    out: np.ndarray = REAL_RULE_VECTOR(rule, rows, c)
    return out


def _krum_unlowered(rule: dict[str, Any], rows: np.ndarray, c: list[float]) -> np.ndarray:
    """A misreading: scores over ``max(0, n - krum_f - 2)`` neighbours (f not lowered) and, below
    3 updates, the ``m`` lowest addresses."""
    if rule.get("name") != "krum":
        out: np.ndarray = REAL_RULE_VECTOR(rule, rows, c)
        return out
    n, f = rows.shape[0], int(rule["krum_f"])
    m = min(n, n - f if rule.get("krum_m") is None else int(rule["krum_m"]))
    m = max(m, 1)
    dist = {}
    for i in range(n):
        for j in range(i + 1, n):
            diff = rows[i] - rows[j]
            dist[i, j] = dist[j, i] = R.block_sum(diff * diff)
    k = max(0, n - f - 2)
    scores = [math.fsum(sorted(dist[i, j] for j in range(n) if j != i)[:k]) for i in range(n)]
    kept = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])
    acc = rows[kept[0]].copy()
    for i in kept[1:]:
        acc = acc + rows[i]
    res: np.ndarray = acc / float(m)
    return res


REAL_RULE_VECTOR = R.rule_vector


@pytest.mark.parametrize("m", [None, 1, 2, 9])
def test_krum_gives_a_model_for_every_paid_count(monkeypatch: pytest.MonkeyPatch, m: Any) -> None:
    """README `krum`: below 3 paid updates every one is kept; from 3, ``f = min(krum_f, (n - 3)
    // 2)`` and ``m = min(krum_m, n)``. The reader agrees with the product for 1 to 7 paid
    updates under ``krum_f`` 2 (2f + 3 = 7); the rule as it was (refusing) and a reading that
    neither lowers f nor keeps every update below 3 each fail somewhere."""
    rule = AggregationRule(name="krum", krum_f=2, krum_m=m, statistics="weighted")
    doc = rule.to_terms(statistics=True)
    cases = [_case(40 + n, n, zero) for n, zero in ((1, 0), (3, 1), (3, 0), (4, 0), (6, 1), (7, 0))]
    cases += [_case(51, 5), _case(53, 6)]
    for start, ups, weights in cases:
        want = _product(rule, start, ups, weights)
        assert _same(_readers(doc, start, ups, weights), want)
    # two paid updates, m = 1: both kept (their mean), not the lower address alone
    start, ups, weights = _case(42, 2)
    two = _product(rule, start, ups, weights)
    mean = _product(AggregationRule(name="median", statistics="weighted"), start, ups, weights)
    assert _same(two, mean)  # the median of two is their mean, computed the same way
    for fake in (_krum_as_refused, _krum_unlowered):
        monkeypatch.setattr(R, "rule_vector", fake)
        agree = True
        for start, ups, weights in [*cases, _case(42, 2)]:
            try:
                agree &= _same(
                    _readers(doc, start, ups, weights), _product(rule, start, ups, weights)
                )
            except R.RuleRefused:
                agree = False
        monkeypatch.undo()
        if fake is _krum_unlowered and m not in (1, 2):
            continue  # m >= n (9), or n - f: every count kept either way; the small m decide
        assert not agree, fake.__name__


def test_a_median_of_zeros_is_positive() -> None:
    """README "sorted": -0.0 replaced by +0.0 before sorting, so the median of -0.0, -0.0, +0.0
    is +0.0 and a start model of -0.0 becomes +0.0; sorting the signed zeros would keep -0.0."""
    start = {k: np.full(s, -0.0, dtype=np.float32) for k, s in SHAPES.items()}
    zeros = [
        {k: np.full(s, z, dtype=np.float32) for k, s in SHAPES.items()} for z in (-0.0, -0.0, 0.0)
    ]
    weights = onchain_weights([10] * 3, [10**6] * 3)
    rule = AggregationRule(name="median")
    want = _product(rule, start, zeros, weights)
    assert _same(_readers(rule.to_terms(statistics=True), start, zeros, weights), want)
    assert not any(np.signbit(v).any() for v in want.values())


def test_the_reader_has_no_note_for_a_rule_left_unreplayed() -> None:
    """Before session 54 the reader noted ``global.recomputed`` as not replayed for any rule
    but ``weighted``; README said nothing of it."""
    source = READER.read_text()
    assert "not replayed by this reader" not in source
    assert re.search(r"aggregate_rule\(\s*rule, start,", source)


OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("trim_ratio", 0.5),
    ("trim_ratio", -0.01),
    ("trim_ratio", float("nan")),
    ("trim_ratio", True),
    ("krum_f", -1),
    ("krum_f", 1.0),
    ("krum_m", 0),
    ("krum_m", 2.0),
    ("max_norm", 0.0),
    ("max_norm", -1.0),
    ("max_norm", float("inf")),
    ("max_norm", True),
]


@pytest.mark.parametrize("name", RULE_NAMES)
@pytest.mark.parametrize(("setting", "value"), OUT_OF_RANGE, ids=lambda v: repr(v))
def test_the_reader_refuses_the_settings_the_product_refuses(
    setting: str, value: Any, name: str
) -> None:
    """README's ranges: a rule setting out of range is refused by the product whatever the
    rule's name (``AggregationRule.__post_init__``), so it never aggregates such a round and
    ``audit verify`` fails it; the reader replayed them (``max_norm`` 0 gave the start model,
    so a round finalized with it passed; ``krum_m`` 0 raised an IndexError the reader's run
    does not catch). Now it refuses them, naming the setting."""
    doc = {**AggregationRule(name=name).to_terms(statistics=True), setting: value}
    with pytest.raises(ConfigError):
        AggregationRule.from_terms(doc)
    start, ups, weights = _case(3, 5)
    with pytest.raises(R.RuleRefused, match=setting):
        _readers(doc, start, ups, weights)


@pytest.mark.parametrize(
    "rule",
    [
        AggregationRule(name="trimmed_mean", trim_ratio=0),
        AggregationRule(name="trimmed_mean", trim_ratio=0.49),
        AggregationRule(name="krum", krum_f=0, krum_m=1),
        AggregationRule(name="norm_clip", max_norm=1e-300),
        AggregationRule(name="norm_clip", max_norm=2),
    ],
    ids=lambda r: f"{r.name}-{r.trim_ratio}-{r.krum_m}-{r.max_norm}",
)
def test_the_ranges_edges_replay(rule: AggregationRule) -> None:
    """The edges the ranges keep (an integer ``max_norm`` or ``trim_ratio`` is a number) replay
    bit for bit, and README states every range."""
    doc = rule.to_terms(statistics=True)
    for n in (1, 4, 7):
        start, ups, weights = _case(n, n)
        assert _same(_readers(doc, start, ups, weights), _product(rule, start, ups, weights))
    text = " ".join((ROOT / "README.md").read_text().split())
    bullet = text[text.index("- **Global model** (`global.recomputed`") :]
    for stated in (
        "`trim_ratio` a number in `[0, 0.5)`",
        "`krum_f` an integer `>= 0`",
        "`krum_m` `null` or an integer `>= 1`",
        "`max_norm` `null` or a finite number `> 0`",
        "each checked whatever `name` is (a boolean is no number)",
    ):
        assert stated in bullet[:3000], stated
