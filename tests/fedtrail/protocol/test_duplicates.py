"""find_duplicates: its screened search decides every pair as the pair-by-pair rule does, the
scale-free rule (``scaled_cosine``) catches a Sybil's scaled, recoded or noisy copy, and the
support rule (``support_cosine``) its copy sent sparser (a90), and the kept-entries rule
(``support_overlap``) that copy with noise added to the values it keeps (a93)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol import duplicates
from fedtrail.protocol.duplicates import (
    SCREEN_CHUNK,
    SCREEN_GROUP,
    Entry,
    _fill_codes,
    _fill_plain,
    _flat,
    _gram,
    _screen,
    _screen_margin,
    _Screens,
    codes,
    kept_largest_of,
    near_identical,
    sparse,
    support_copy,
    support_overlap,
    zero_share,
)
from fedtrail.protocol.terms import DuplicateRule, InvalidTerms, RoundTerms
from fedtrail.storage.codec import Compression, decode_update, encode_update
from fedtrail.valuation.freeride import duplicate_residual_z


def find_duplicates(entries: Sequence[Entry], rule: DuplicateRule) -> dict[str, str]:
    """The product's search with the white-noise statistic the aggregator and auditor pass."""
    return duplicates.find_duplicates(entries, rule, whiteness=duplicate_residual_z)


RULE = DuplicateRule(white_noise_z=None, shared_tensor=None)
"""The rule of terms written before ``white_noise_z`` (and ``shared_tensor``), for the other
parts' tests: their synthetic updates and "honest" pairs are random, so a pair's residual is
white noise, which the white-noise test (tests at the end, on structured updates) calls a copy."""
WHITE = DuplicateRule()
"""The rule of terms written now."""
OLD = DuplicateRule(
    scaled_cosine=None,
    support_cosine=None,
    support_overlap=None,
    white_noise_z=None,
    shared_tensor=None,
    either_order=None,
)
"""The rule of terms written before ``scaled_cosine``: cosine and distance together."""
NO_SUPPORT = DuplicateRule(
    support_cosine=None,
    support_overlap=None,
    white_noise_z=None,
    shared_tensor=None,
    either_order=None,
)
"""The rule of terms written before ``support_cosine`` (a90)."""
NO_OVERLAP = DuplicateRule(
    support_overlap=None, white_noise_z=None, shared_tensor=None, either_order=None
)
"""The rule of terms written before ``support_overlap`` (a93)."""
NO_SHARED = DuplicateRule(shared_tensor=None)
"""The rule of terms written before ``shared_tensor`` (a101)."""
ONE_WAY = DuplicateRule(white_noise_z=None, shared_tensor=None, either_order=None)
"""``RULE`` without ``either_order``: the sparse tests one way (the rule before a99)."""
NO_DP = DuplicateRule()
"""The rule of terms written now, and before ``white_noise_dp_cosine`` (a100): DP-declared
later updates exempt."""
DP_ON = DuplicateRule(white_noise_dp_cosine=0.5)
"""Terms that opt in to ``white_noise_dp_cosine`` (0.5)."""
HONEST_MAX = 0.999930
"""The largest cosine of two honest updates of one round that ``scripts/bench/dup_cosine.py``
measured (20 sites, Dirichlet alpha 0.3, dense; the two 1.2% apart in L2)."""


def _reference(entries: list[Entry], rule: DuplicateRule) -> dict[str, str]:
    """The rule pair by pair, every norm and dot recomputed (the code before the screen)."""
    originals: list[tuple[str, str, torch.Tensor | None, torch.Tensor | None]] = []
    deltas: dict[str, Mapping[str, torch.Tensor]] = {}
    out: dict[str, str] = {}
    for e in sorted(entries, key=lambda e: (e.commit_order, e.site)):
        flat = None if e.delta is None else _flat(e.delta)
        code = None if e.delta is None else codes(e.delta)
        source = next(
            (
                site
                for site, sha, other, other_code in originals
                if sha == e.sha256
                or (
                    flat is not None
                    and other is not None
                    and (
                        near_identical(other, flat, rule, other_code, code)
                        or (
                            rule.support_cosine is not None
                            and e.delta is not None
                            and support_copy(
                                other,
                                flat,
                                [e.delta[n].numel() for n in sorted(e.delta)],
                                rule.support_cosine,
                            )
                        )
                        or (
                            rule.support_overlap is not None
                            and e.delta is not None
                            and _kept_largest(other, e.delta, rule.support_overlap)
                        )
                    )
                )
            ),
            None,
        )
        if source is not None:
            out[e.site] = source
        elif flat is not None and e.delta is not None:
            if rule.either_order:
                # the sparse tests the other way round: an earlier original not yet marked that
                # repeats this one on the entries it carries is the copy (it stays an original)
                for site, _, other, _ in originals:
                    earlier = deltas[site]
                    if site in out or other is None or other.shape != flat.shape:
                        continue
                    sizes = [earlier[n].numel() for n in sorted(earlier)]
                    support = rule.support_cosine
                    if (support is not None and support_copy(flat, other, sizes, support)) or (
                        rule.support_overlap is not None
                        and _kept_largest(flat, earlier, rule.support_overlap)
                    ):
                        out[site] = e.site
            originals.append((e.site, e.sha256, flat, code))
            deltas[e.site] = e.delta
    return out


def _kept_largest(a: torch.Tensor, b: Mapping[str, torch.Tensor], threshold: float) -> bool:
    """The kept-entries rule written out entry by entry: ``b`` sparse (more than half of its
    values 0 once its all-zero rows and columns are cut) and more than ``threshold`` of its
    nonzero entries at positions where flat ``a`` is nonzero and fewer than ``k`` entries of
    ``a``'s tensor are larger in magnitude (``k``: ``b``'s nonzero entries in the tensor), the
    ``E`` entries of its magnitude sharing the ``k - larger`` places left when they overflow
    them (each ``(k - larger) / E``)."""
    total = zeros = kept = 0
    hits = Fraction(0)
    at = 0
    for name in sorted(b):
        t = b[name]
        rows = [r for r in range(t.shape[0]) if bool(t[r].ne(0).any())] if t.dim() >= 2 else []
        m = t.reshape(t.shape[0], -1) if t.dim() >= 2 else t.reshape(1, -1)
        cols = [c for c in range(m.shape[1]) if bool(m[:, c].ne(0).any())]
        size = len(rows) * len(cols) if t.dim() >= 2 else t.numel()
        nonzero = [i for i, v in enumerate(t.reshape(-1).tolist()) if v != 0.0]
        total, zeros = total + size, zeros + size - len(nonzero)
        mags = [abs(v) for v in a[at : at + t.numel()].tolist()]
        ordered = sorted(mags)
        k = len(nonzero)
        for i in nonzero:
            if mags[i] == 0.0:
                continue
            larger = len(ordered) - bisect.bisect_right(ordered, mags[i])
            equal = bisect.bisect_right(ordered, mags[i]) - bisect.bisect_left(ordered, mags[i])
            if larger + equal <= k:
                hits += 1
            elif larger < k:
                hits += Fraction(k - larger, equal)
        kept += k
        at += t.numel()
    return 2 * zeros > total and kept > 0 and hits / kept > Fraction(threshold)


def _toward(a: torch.Tensor, cosine: float, gen: torch.Generator) -> torch.Tensor:
    """A vector of ``a``'s norm at exactly (to rounding) ``cosine`` to it."""
    noise = torch.randn(a.shape, generator=gen, dtype=torch.float64)
    noise -= (noise @ a) / (a @ a) * a
    noise *= a.norm() / noise.norm()
    out: torch.Tensor = cosine * a + (1 - cosine**2) ** 0.5 * noise
    return out


def test_the_screens_rows_are_flat_and_codes_bit_for_bit() -> None:
    """The screen's float32 rows hold ``_flat`` rounded to float32 (float16 and float32 values
    exactly) and ``codes`` exactly, whatever the dtype; a zero update is not screened."""
    gen = torch.Generator().manual_seed(3)
    deltas: list[dict[str, torch.Tensor]] = [
        {
            "b": torch.randn(3, 4, generator=gen, dtype=dtype) * 1e-3,
            "a": torch.randn(7, generator=gen, dtype=dtype),
            "z": torch.zeros(5, dtype=dtype),
            "e": torch.empty(0, dtype=dtype),
        }
        for dtype in (torch.float32, torch.float16, torch.float64)
    ]
    for d in deltas:
        row = torch.empty(24, dtype=torch.float32)
        assert _fill_plain(d, row)
        assert torch.equal(row, _flat(d).to(torch.float32))
        if d["a"].dtype != torch.float64:
            assert torch.equal(row.to(torch.float64), _flat(d))
        assert _fill_codes(d, row)
        assert torch.equal(row.to(torch.float64), codes(d))
        assert row.abs().sum() > 0  # not a row of zeros compared with zeros
    zero = {"w": torch.zeros(24)}
    assert not _fill_plain(zero, torch.empty(24)) and not _fill_codes(zero, torch.empty(24))
    assert not _fill_plain({"w": torch.full((24,), 1e20)}, torch.empty(24))  # out of range
    assert not _fill_plain({"w": torch.full((24,), 1e-12)}, torch.empty(24))  # too small


def test_the_blocked_float32_gram_is_within_its_stated_error() -> None:
    """Each entry of ``_gram`` lies within gamma_c * sum |a_k b_k| of the float64 product (the
    bound the screen's margin rests on), and the codes' Gram is exact."""
    gen = torch.Generator().manual_seed(5)
    rows = torch.randn(6, 3 * SCREEN_CHUNK + 17, generator=gen) ** 3  # heavy-tailed
    exact = rows.to(torch.float64) @ rows.to(torch.float64).T
    magnitudes = rows.abs().to(torch.float64) @ rows.abs().to(torch.float64).T
    gamma = SCREEN_CHUNK * 2.0**-24 / (1 - SCREEN_CHUNK * 2.0**-24)
    error = (_gram(rows) - exact).abs()
    assert bool((error <= gamma * magnitudes).all())
    assert float(error.max()) > 0  # float32 blocks, not a float64 product
    code_rows = torch.randint(-127, 128, (6, 4 * SCREEN_CHUNK), generator=gen)
    as_f32 = code_rows.to(torch.float32)
    want = code_rows.to(torch.float64) @ code_rows.to(torch.float64).T
    assert torch.equal(_gram(as_f32), want)


def test_the_screen_skips_pairs_clearly_apart_and_keeps_those_near_its_margin() -> None:
    gen = torch.Generator().manual_seed(6)
    base = torch.randn(50_000, generator=gen, dtype=torch.float64)
    floor = RULE.cosine
    margin = _screen_margin(SCREEN_CHUNK)
    assert margin < 1e-4
    vectors = [
        base,
        _toward(base, floor - 2 * margin, gen),  # clearly apart: skipped
        _toward(base, floor - margin / 4, gen),  # inside the margin: left to the exact rule
        torch.randn(50_000, generator=gen, dtype=torch.float64),  # unrelated: skipped
    ]
    deltas: list[Mapping[str, torch.Tensor] | None] = [{"w": v.to(torch.float32)} for v in vectors]
    apart, _ = _screen(deltas, 50_000, _fill_plain, floor)
    assert (0, 1) in apart and (0, 3) in apart and (0, 2) not in apart


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
    for rule in (
        RULE,
        OLD,
        NO_SUPPORT,
        DuplicateRule(
            cosine=0.5,
            relative_l2=0.9,
            scaled_cosine=None,
            support_cosine=None,
            white_noise_z=None,
            shared_tensor=None,
        ),
        DuplicateRule(cosine=1.0, scaled_cosine=None, white_noise_z=None, shared_tensor=None),
        DuplicateRule(cosine=1.0, scaled_cosine=0.5, white_noise_z=None, shared_tensor=None),
    ):
        got = find_duplicates(entries, rule)
        assert got == _reference(entries, rule)
    marks = find_duplicates(entries, OLD)
    assert marks["s06"] == "s00" and marks["s07"] == "s01" and marks["s99"] == "s03"
    assert marks["s13"] == "s12" and "s11" not in marks and "s10" not in marks
    # the scale-free rule: the copy 1.5x as long is one; 1e-3 off in cosine is not
    assert find_duplicates(entries, RULE) == marks | {"s11": "s05"}


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
        for rule in (RULE, OLD):
            assert find_duplicates(entries, rule) == _reference(entries, rule)


def _asked(entries: list[Entry], rule: DuplicateRule) -> list[tuple[int, int, bool]]:
    """Every ``(original, later, apart)`` that ``find_duplicates`` asked its screen, in order
    (indices in commit order)."""
    asked: list[tuple[int, int, bool]] = []
    apart = _Screens.apart

    def recording(self: _Screens, i: int, j: int, originals: Sequence[int]) -> bool:
        answer = apart(self, i, j, originals)
        asked.append((i, j, answer))
        return answer

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_Screens, "apart", recording)
        find_duplicates(entries, rule)
    return asked


def _whole_screen(entries: list[Entry], rule: DuplicateRule) -> set[tuple[int, int]]:
    """The pairs the whole-round screen (``_screen`` of every pair, plain and codes, as
    ``find_duplicates`` took it before :class:`_Screens`) shows apart."""
    deltas: list[Mapping[str, torch.Tensor] | None] = [e.delta for e in entries]
    width = sum(t.numel() for t in entries[0].delta.values()) if entries[0].delta else 0
    floor = RULE.cosine if rule.scaled_cosine is None else min(rule.cosine, rule.scaled_cosine)
    plain, _ = _screen(deltas, width, _fill_plain, floor)
    coded, _ = _screen(deltas, width, _fill_codes, floor) if rule.scaled_cosine else (plain, None)
    return plain & coded


@pytest.mark.parametrize("copies", [True, False])
def test_the_screen_asks_only_originals_and_answers_as_the_whole_rounds_screen(
    copies: bool,
) -> None:
    """``find_duplicates`` screens each later update against the originals before it only
    (:class:`_Screens`, in groups of up to ``SCREEN_GROUP``): a round of noisy copies of one
    update compares each with the few originals (about n pairs, not n (n - 1) / 2), a round of
    originals every pair, across several groups; every pair asked gets the whole-round
    screen's answer, and the marks are the pair-by-pair rule's, near the thresholds too."""
    gen = torch.Generator().manual_seed(11)
    n, width = 2 * SCREEN_GROUP + 5, 1200 + 7 + 10 * SCREEN_CHUNK

    def noise() -> torch.Tensor:
        return torch.randn(width, generator=gen, dtype=torch.float64)

    base = noise()
    if copies:  # 0.3 of the base's spread as noise: cosine ~0.92 to each other, all apart
        vectors = [base + 0.3 * noise() for _ in range(n)]
        vectors[1] = vectors[0] * (1 + 1e-9)  # cosine 1: a copy by the exact rule
        scaled = RULE.scaled_cosine
        assert scaled is not None
        vectors[2] = _toward(vectors[0], scaled + 1e-7, gen)  # a copy by the scaled cosine
        vectors[3] = _toward(vectors[0], RULE.cosine - 1e-9, gen)  # not apart, no copy
    else:
        vectors = [noise() for _ in range(n)]
        vectors[n // 2] = vectors[3] * (1 + 1e-9)  # one copy, of an original of another group
    shapes = {"a": (40, 30), "b": (7,), "c": (10, SCREEN_CHUNK)}  # several tensors, 2-D
    assert sum(math.prod(v) for v in shapes.values()) == width

    def layout(v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, at = {}, 0
        for name in sorted(shapes):
            size = math.prod(shapes[name])
            out[name] = v[at : at + size].to(torch.float32).reshape(shapes[name])
            at += size
        return out

    entries = [Entry(f"s{i:03d}", i + 1, f"{i:064x}", layout(v)) for i, v in enumerate(vectors)]
    for rule in (WHITE, NO_OVERLAP, OLD):
        asked = _asked(entries, rule)
        whole = _whole_screen(entries, rule)
        marks = find_duplicates(entries, rule)
        precision = torch.get_float32_matmul_precision()
        try:
            torch.set_float32_matmul_precision("high")  # no screen: every pair decided exactly
            assert find_duplicates(entries, rule) == marks
        finally:
            torch.set_float32_matmul_precision(precision)
        if rule is not WHITE:
            assert marks == _reference(entries, rule)
        assert all(((i, j) in whole) == answer for i, j, answer in asked)
        # asked: each later update against the originals before it, up to the one it repeats
        want: list[int] = []
        originals: list[int] = []
        for j, e in enumerate(entries):
            for i in originals:
                want.append(i)
                if marks.get(e.site) == entries[i].site:
                    break
            if e.site not in marks:
                originals.append(j)
        assert [i for i, _, _ in asked] == want
        near = {(i, j) for i in range(4) for j in range(4)} if copies else {(3, n // 2)}
        assert all(answer != ((i, j) in near) for i, j, answer in asked)  # the rest apart
        if copies:
            assert marks["s001"] == "s000" and ("s002" in marks) == (rule is not OLD)
            if rule is WHITE:  # the others white-noise copies of s000: one pair each
                assert marks == {f"s{j:03d}": "s000" for j in range(1, n)}
                assert len(asked) == n - 1
            else:
                assert "s003" not in marks  # inside the margin, below the threshold
        else:
            assert marks == {f"s{n // 2:03d}": "s003"}
            assert len(asked) > n * (n - 1) // 2 - n


def _update(seed: int) -> dict[str, torch.Tensor]:
    """A model-shaped update (the bundled SmallCNN's tensors) with heavy tails, as trained
    updates have: a few large entries set each tensor's int8 scale."""
    gen = torch.Generator().manual_seed(seed)
    spec = ModelSpec()
    shapes = {k: v.shape for k, v in initial_model(spec, 0).state_dict().items()}
    out = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        out[name] = (t * t.abs() * 1e-3).to(torch.float32)  # squared: heavy-tailed
    return out


def _marked(original: Mapping[str, torch.Tensor], copy: Mapping[str, torch.Tensor]) -> list[str]:
    """Under which of (the default rule, the old rule) ``copy``, committed second, is a
    DUPLICATE of ``original``."""
    entries = [Entry("h0", 1, "a" * 64, original), Entry("sybil", 2, "b" * 64, copy)]
    return [
        label
        for label, rule in (("new", RULE), ("old", OLD))
        if find_duplicates(entries, rule) == {"sybil": "h0"}
    ]


def _cos(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    fa, fb = _flat(a), _flat(b)
    return float(fa @ fb / (fa.norm() * fb.norm()))


@pytest.mark.parametrize("scale", [1.01, 0.5, 3.0])
def test_a_scaled_copy_is_a_duplicate_that_the_old_rule_paid(scale: float) -> None:
    """a1 ``scale``: 1% longer is 1% away in L2, past the old rule's 0.1%."""
    d = _update(0)
    assert _marked(d, {k: v * scale for k, v in d.items()}) == ["new"]


def test_a_topk8_recoded_copy_is_a_duplicate_by_its_codes() -> None:
    """a1 ``topk``: the int8 rounding moves the plain cosine below ``scaled_cosine`` (real
    updates: 0.99976, as close as honest ones come), but the copy's codes are its original's."""
    d = _update(1)
    spec = ModelSpec()
    for scale in (1.0, 1.01):
        blob = encode_update(
            {k: v * scale for k, v in d.items()},
            spec=spec,
            round=1,
            compression=Compression(method="topk8", fraction=1.0),
        ).blob
        copy, _ = decode_update(blob, spec=spec, expected_round=1)
        assert RULE.scaled_cosine is not None and _cos(d, copy) < RULE.scaled_cosine
        assert torch.equal(codes(copy), codes(d))
        assert _marked(d, copy) == ["new"]


@pytest.mark.parametrize(
    ("level", "caught"), [(0.002, True), (0.003, True), (0.004, False), (0.01, False)]
)
def test_a_noisy_copy_is_a_duplicate_up_to_the_noise_the_margin_allows(
    level: float, caught: bool
) -> None:
    """a1 ``noise``: Gaussian noise of ``level`` times each tensor's std. 0.2% and 0.3% are
    caught; 0.4% (1 - cosine about 8e-6) and 1% (cosine 0.99995) are not: 1% is closer than
    the closest honest pair measured (0.99993), so no cosine can catch it without zeroing two
    honest skewed sites."""
    d = _update(2)
    gen = torch.Generator().manual_seed(7)
    noisy = {k: v + level * v.std() * torch.randn(v.shape, generator=gen) for k, v in d.items()}
    assert _marked(d, noisy) == (["new"] if caught else [])


def test_two_honest_updates_at_the_measured_worst_case_are_not_duplicates() -> None:
    """The closest honest pair measured: cosine 0.99993, as long as each other (two sites
    of one class each). Neither its cosine nor its codes' reaches ``scaled_cosine``."""
    a = _update(3)
    gen = torch.Generator().manual_seed(3)
    flat = _toward(_flat(a), HONEST_MAX, gen)
    b, at = {}, 0
    for name in sorted(a):
        n = a[name].numel()
        b[name] = flat[at : at + n].reshape(a[name].shape).to(torch.float32)
        at += n
    assert abs(_cos(a, b) - HONEST_MAX) < 1e-6
    assert _marked(a, b) == []


def test_terms_without_scaled_cosine_keep_their_bytes_and_the_old_rule() -> None:
    """Terms written before ``scaled_cosine`` lack the key: they read as the old rule (a 1.01x
    copy is paid, as it was when the round was valued), and their bytes round-trip; terms
    written now carry it."""
    old = _terms(OLD)
    blob = old.to_bytes()
    assert b'"duplicates":{"cosine":0.9999,"relative_l2":0.001}' in blob
    parsed = RoundTerms.from_bytes(blob)
    assert parsed.duplicates == OLD and parsed.to_bytes() == blob
    d = _update(4)
    copy = {k: v * 1.01 for k, v in d.items()}
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, copy)]
    assert find_duplicates(entries, parsed.duplicates) == {}
    new = RoundTerms.from_bytes(_terms(DuplicateRule()).to_bytes())
    assert new.duplicates.scaled_cosine == RULE.scaled_cosine is not None
    assert find_duplicates(entries, new.duplicates) == {"sybil": "h0"}


def _sparse(d: Mapping[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """``d`` sent through ``topk8`` at ``fraction`` and decoded, as every reader sees it."""
    spec = ModelSpec()
    blob = encode_update(
        dict(d), spec=spec, round=1, compression=Compression(method="topk8", fraction=fraction)
    ).blob
    return decode_update(blob, spec=spec, expected_round=1)[0]


@pytest.mark.parametrize("fraction", [0.7, 0.5, 0.1, 0.01])
def test_a_copy_sent_sparser_is_a_duplicate_by_the_entries_it_carries(fraction: float) -> None:
    """a90: a Sybil sends its partner's dense update through ``topk8`` at a fraction of its
    own choosing. The dropped entries move both cosines the rule before ``support_cosine``
    compared below ``scaled_cosine`` (it paid the copy), but on the entries the copy carries
    its codes are its original's exactly."""
    d = _update(5)
    copy = _sparse(d, fraction)
    assert RULE.scaled_cosine is not None and _cos(d, copy) < RULE.scaled_cosine
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, copy)]
    assert find_duplicates(entries, NO_SUPPORT) == {}
    assert find_duplicates(entries, RULE) == {"sybil": "h0"}
    assert find_duplicates(entries, RULE) == _reference(entries, RULE)
    # a copy with entries zeroed by hand (no topk8) is one too
    zeroed = {
        k: torch.where(torch.arange(v.numel()).reshape(v.shape) % 3 == 0, 0.0, v)
        for k, v in d.items()
    }
    assert find_duplicates([entries[0], Entry("z", 2, "c" * 64, zeroed)], RULE) == {"z": "h0"}


def test_an_honest_sparse_update_is_no_copy_of_another_update() -> None:
    """Updates of other data sent sparse, beside dense ones and each other, in either commit
    order, are not copies; nor is an update that carries every entry of the earlier one (the
    support rule compares only when the later one leaves some out)."""
    a, b = _update(6), _update(7)
    for fraction in (1.0, 0.5, 0.05):
        for first, second in ((a, _sparse(b, fraction)), (_sparse(a, fraction), b)):
            entries = [Entry("h0", 1, "a" * 64, first), Entry("h1", 2, "b" * 64, second)]
            assert find_duplicates(entries, RULE) == {}
    flat = _flat(a)
    sizes = [a[n].numel() for n in sorted(a)]
    assert not support_copy(flat, flat * 1.5, sizes, 0.5)  # nothing left out: not this rule
    sparse = _flat(_sparse(a, 0.5))
    assert support_copy(flat, sparse, sizes, 0.999995)
    assert not support_copy(flat, sparse, sizes, 1.0)  # the threshold is strict
    # the original sent sparse first, the dense one second: the dense one leaves nothing out
    assert not support_copy(sparse, flat, sizes, 0.999995)


def test_the_support_screen_skips_only_pairs_the_support_rule_rejects() -> None:
    """Rounds of sparse and dense updates, copies sent sparser with and without noise near the
    threshold, a copy that drops each tensor's largest entry before recoding (so its codes are
    not the original's restricted) and honest ones: the screened search marks exactly what the
    pair-by-pair rule marks."""
    gen = torch.Generator().manual_seed(11)
    a, b, c = _update(20), _update(21), _update(22)

    def drop_max(d: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in d.items():
            flat = v.reshape(-1).clone()
            flat[flat.abs().argmax()] = 0.0
            out[k] = flat.reshape(v.shape)
        return out

    def noisy_on_support(d: Mapping[str, torch.Tensor], level: float) -> dict[str, torch.Tensor]:
        return {
            k: torch.where(v != 0, v + level * v.std() * torch.randn(v.shape, generator=gen), 0.0)
            for k, v in d.items()
        }

    half = _sparse(a, 0.5)
    updates = [
        a,
        _sparse(b, 0.05),
        half,  # a's copy at 0.5
        _sparse(drop_max(a), 1.0),  # a without its maxima, recoded: codes recomputed match
        noisy_on_support(half, 1e-4),  # near the threshold from above
        noisy_on_support(half, 0.03),  # below it: noisy copies escape, as a1's
        c,
        _sparse(c, 0.05),
        _sparse(b, 0.3),
    ]
    entries = [Entry(f"s{i:02d}", i + 1, f"{i:064x}", d) for i, d in enumerate(updates)]
    for rule in (
        RULE,
        DuplicateRule(support_cosine=0.999, white_noise_z=None, shared_tensor=None),
        DuplicateRule(support_cosine=0.99, white_noise_z=None, shared_tensor=None),
    ):
        assert find_duplicates(entries, rule) == _reference(entries, rule)
    got = find_duplicates(entries, RULE)
    assert got["s02"] == "s00" and got["s03"] == "s00" and got["s07"] == "s06"
    assert got["s04"] == "s00" and "s05" not in got
    assert (
        find_duplicates(
            entries,
            DuplicateRule(support_cosine=0.999, white_noise_z=None, white_noise_dp_cosine=None),
        )["s05"]
        == "s00"
    )


def test_terms_without_support_cosine_keep_their_bytes_and_pay_a_sparse_copy() -> None:
    """Terms written before ``support_cosine`` lack the key and replay the rule of their day
    (a copy at fraction 0.5 paid); terms written now carry it."""
    blob = _terms(NO_SUPPORT).to_bytes()
    assert b'"duplicates":{"cosine":0.9999,"relative_l2":0.001,"scaled_cosine":0.999995}' in blob
    parsed = RoundTerms.from_bytes(blob)
    assert parsed.duplicates == NO_SUPPORT and parsed.to_bytes() == blob
    d = _update(8)
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, _sparse(d, 0.5))]
    assert find_duplicates(entries, parsed.duplicates) == {}
    now = _terms(DuplicateRule()).to_bytes()
    assert b'"scaled_cosine":0.999995,"shared_tensor":1,"support_cosine":0.999995,' in now
    assert find_duplicates(entries, RoundTerms.from_bytes(now).duplicates) == {"sybil": "h0"}


def _terms(rule: DuplicateRule) -> RoundTerms:
    return RoundTerms(
        round=1,
        aggregation_rule={"name": "weighted"},
        valuation={"method": "loo", "metric": "auc"},
        model_spec={},
        spec_hash="0" * 64,
        seed=0,
        validation_sha256="1" * 64,
        validation_images=10,
        commit_seconds=60,
        reveal_seconds=60,
        duplicates=rule,
    )


def _noisy_kept(
    d: Mapping[str, torch.Tensor], level: float, fraction: float, seed: int = 0
) -> dict[str, torch.Tensor]:
    """a93's copy: ``d`` through ``topk8`` at ``fraction``, Gaussian noise of ``level`` times
    the copy's norm added to the entries it keeps, sent through ``topk8`` at ``fraction``
    again (the same entries)."""
    gen = torch.Generator().manual_seed(seed)
    copy = _sparse(d, fraction)
    flat = _flat(copy)
    sd = level * float(flat.norm()) / int((flat != 0).sum()) ** 0.5
    noisy = {
        k: torch.where(v != 0, v + (sd * torch.randn(v.shape, generator=gen)).to(v.dtype), v)
        for k, v in copy.items()
    }
    return _sparse(noisy, fraction)


@pytest.mark.parametrize(("level", "fraction"), [(0.05, 0.05), (0.2, 0.05), (0.05, 0.2)])
def test_a_sparse_copy_with_noise_on_its_kept_entries_is_a_duplicate(
    level: float, fraction: float
) -> None:
    """a93: noise on the entries a sparse copy keeps takes its cosine there below
    ``support_cosine`` (the rule before ``support_overlap`` pays it), but the entries it keeps
    are still its original's largest of each tensor."""
    d = _update(30)
    copy = _noisy_kept(d, level, fraction)
    assert sparse(copy) and support_overlap(d, copy) == 1.0
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, copy)]
    assert find_duplicates(entries, NO_OVERLAP) == {}
    assert find_duplicates(entries, RULE) == {"sybil": "h0"}
    assert find_duplicates(entries, RULE) == _reference(entries, RULE)


def test_a_noisy_copy_of_a_sparse_update_on_its_own_entries_is_a_duplicate() -> None:
    """The partner sends ``topk8`` at 0.05 and the copy keeps the same entries (it leaves none
    of them out, so ``support_cosine`` does not apply) with 5% noise on their values."""
    original = _sparse(_update(31), 0.05)
    copy = _noisy_kept(original, 0.05, 0.05, seed=1)
    assert torch.equal(_flat(copy) != 0, _flat(original) != 0)
    entries = [Entry("h0", 1, "a" * 64, original), Entry("sybil", 2, "b" * 64, copy)]
    assert find_duplicates(entries, NO_OVERLAP) == {}
    assert find_duplicates(entries, RULE) == {"sybil": "h0"}


def test_support_overlap_counts_the_kept_entries_among_the_largest_ties_shared() -> None:
    """A hand-worked tensor: ``|a|`` = 3, 2, 2, 1, 0, 0; ``b`` keeping positions 1 and 2
    (``k`` 2, the 2nd largest 2 with one above and two equal: each counts (2 - 1) / 2, share
    1/2), 0 and 4 (``a`` is 0 at 4: half), 1, 2 and 3 (``k`` 3: both 2s fit the two places
    left, each 1; position 3's 1 does not count)."""
    a = {"w": torch.tensor([3.0, -2.0, 2.0, 1.0, 0.0, 0.0])}

    def kept(*at: int) -> dict[str, torch.Tensor]:
        t = torch.zeros(6)
        t[list(at)] = 1.0
        return {"w": t}

    assert support_overlap(a, kept(1, 2)) == 0.5
    assert support_overlap(a, kept(0, 1)) == 0.75
    assert support_overlap(a, kept(0, 4)) == 0.5
    assert support_overlap(a, kept(1, 2, 3)) == 2 / 3
    assert support_overlap(a, kept(0, 1, 2, 3, 4)) == 4 / 5  # fewer than k nonzero: each 1
    assert support_overlap(a, {"w": torch.zeros(6)}) == 0.0


def _frame(d: Mapping[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """An update of ``levels`` magnitudes per tensor (0.01 and, for two, 0.02 on every 50th
    entry: fewer than ``topk8``'s 5%, so the k-th largest is still 0.01) with the signs of
    ``d``: no training, committed before anyone (attack a98)."""
    out = {}
    for k, v in d.items():
        mag = torch.full_like(v, 0.01)
        if levels == 2:
            mag.reshape(-1)[::50] = 0.02
        out[k] = mag * torch.sign(v)
    return out


@pytest.mark.parametrize("levels", [1, 2])
def test_an_update_of_equal_magnitudes_claims_no_honest_sparse_update(levels: int) -> None:
    """a98: with ties counted whole (the rule before), an update whose magnitudes are all equal
    has every entry at its k-th largest, so every honest ``topk8`` update committed after it
    scored 1 and was its DUPLICATE (and, sent in an earlier round, its stale copy). Ties share
    the places left: such a frame scores about k/n against an honest sparse update, while a
    noisy ``topk8`` copy of a real update still scores 1."""
    frame = _frame(_update(50), levels)
    honest = [_sparse(_update(51 + i), 0.05) for i in range(3)]
    for h in honest:
        assert sparse(h) and support_overlap(frame, h) < 0.2
    entries = [Entry("frame", 1, "f" * 64, frame)] + [
        Entry(f"h{i}", i + 2, f"{i:064x}", h) for i, h in enumerate(honest)
    ]
    assert find_duplicates(entries, RULE) == {}
    assert find_duplicates(entries, RULE) == _reference(entries, RULE)
    assert kept_largest_of([frame], honest, 0.99) == {}
    real = _update(60)
    copy = _noisy_kept(real, 0.05, 0.05, seed=5)
    assert support_overlap(real, copy) == 1.0
    assert kept_largest_of([frame, real], [*honest, copy], 0.99) == {3: 1}


def test_a_topk_copy_of_an_update_with_ties_at_the_boundary_is_still_caught() -> None:
    """An original whose k-th largest magnitude is tied (a few entries equal at the boundary
    of one tensor): ``topk8`` picks k - A of the T tied entries, so the copy scores A + (k -
    A)^2 / T in that tensor, still above 0.99 over the update while T is small next to k."""
    real = _update(61)
    name = max(real, key=lambda n: real[n].numel())
    flat = real[name].reshape(-1)
    k = int((_sparse(real, 0.05)[name] != 0).sum())  # the codec's k there
    order = flat.abs().argsort(descending=True)
    m = flat.abs()[order[k - 1]]
    tied = order[k - 2 : k + 2]  # four equal at the boundary: A = k - 2, T = 4
    flat[tied] = m * torch.sign(flat[tied])
    copy = _sparse(real, 0.05)
    share = support_overlap(real, copy)
    total = sum(int((v != 0).sum()) for v in copy.values())
    assert share == float(Fraction(total - 2 + 1, total))  # two tied kept, each 2/4
    assert share > 0.99
    assert kept_largest_of([real], [copy], 0.99) == {0: 0}


def test_honest_sparse_updates_and_dense_ones_with_dead_units_are_not_copies() -> None:
    """Two correlated updates of other data (the second the first plus as much independent
    signal) sent through ``topk8`` keep many of the same entries but not 99% of them; a dense
    update whose dead units zero the same rows as its original's keeps exactly the original's
    nonzero entries (share 1) and is not sparse, so the rule does not apply."""
    a = _update(32)
    other = _update(33)
    b = {k: v + 0.5 * other[k] for k, v in a.items()}
    sa, sb = _sparse(a, 0.05), _sparse(b, 0.05)
    assert 0.5 < support_overlap(sa, sb) < 0.99 and 0.5 < support_overlap(a, sb) < 0.99
    for first, second in ((sa, sb), (a, sb), (sb, sa)):
        entries = [Entry("h0", 1, "a" * 64, first), Entry("h1", 2, "b" * 64, second)]
        assert find_duplicates(entries, RULE) == {}
    dead = {k: v.clone() for k, v in a.items()}
    alive = {k: v.clone() for k, v in b.items()}
    for k, v in dead.items():
        if v.dim() >= 2:
            v[: (2 * v.shape[0]) // 3] = 0.0  # two thirds of the units dead in both
            alive[k][: (2 * v.shape[0]) // 3] = 0.0
    assert support_overlap(dead, alive) == 1.0 and zero_share(alive) == 0.0
    assert not sparse(alive)
    entries = [Entry("h0", 1, "a" * 64, dead), Entry("h1", 2, "b" * 64, alive)]
    assert find_duplicates(entries, RULE) == {}


def test_terms_without_support_overlap_keep_their_bytes_and_pay_a_noisy_sparse_copy() -> None:
    """Terms written before ``support_overlap`` lack the key and replay the rule of their day
    (a93's copy paid); terms written now carry it."""
    blob = _terms(NO_OVERLAP).to_bytes()
    assert b'"scaled_cosine":0.999995,"support_cosine":0.999995}' in blob
    parsed = RoundTerms.from_bytes(blob)
    assert parsed.duplicates == NO_OVERLAP and parsed.to_bytes() == blob
    d = _update(34)
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, _noisy_kept(d, 0.05, 0.1))]
    assert find_duplicates(entries, parsed.duplicates) == {}
    now = _terms(DuplicateRule()).to_bytes()
    assert b'"support_overlap":0.99,"white_noise_z":1000.0}' in now
    assert find_duplicates(entries, RoundTerms.from_bytes(now).duplicates) == {"sybil": "h0"}


def test_the_batched_kept_entries_search_decides_as_the_pair_by_pair_rule() -> None:
    """A round of dense and sparse updates, noisy sparse copies of a dense and of a sparse
    original, a copy of a copy and honest sparse updates near their originals: find_duplicates
    (each original read once against every sparse update's entries) marks what the rule
    written out pair by pair marks."""
    a, b, c = _update(40), _update(41), _update(42)
    sc = _sparse(c, 0.05)
    updates = [
        a,
        _sparse(b, 0.05),
        _noisy_kept(a, 0.05, 0.1, seed=2),  # a's copy
        sc,
        _noisy_kept(sc, 0.2, 0.05, seed=3),  # sc's copy, its own entries
        _sparse({k: v + 0.5 * b[k] for k, v in a.items()}, 0.05),  # along a, other data
        _noisy_kept(_noisy_kept(a, 0.05, 0.1, seed=2), 0.05, 0.1, seed=4),  # a copy's copy
        b,
    ]
    entries = [Entry(f"s{i:02d}", i + 1, f"{i:064x}", d) for i, d in enumerate(updates)]
    got = find_duplicates(entries, RULE)
    assert got == _reference(entries, RULE)
    assert got["s02"] == "s00" and got["s04"] == "s03" and got["s06"] == "s00"
    assert "s05" not in got and "s07" not in got
    assert find_duplicates(entries, NO_OVERLAP) == _reference(entries, NO_OVERLAP)


def test_sparse_counts_zeros_outside_all_zero_rows_and_columns_at_the_edges() -> None:
    """The one sparse test (the duplicate rule's kept-entries test and the free-rider screen's
    shaped test): exactly half zeros is not sparse, one more zero is; 1-D and 0-D tensors count
    whole (their zeros included); an all-zero matrix and an empty one count nothing, so an
    update of nothing but those is not sparse."""
    half = {"w": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}  # 2 zeros of 4 in the kept block
    assert not sparse(half) and zero_share(half) == 0.5
    more = {"w": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])}
    assert sparse(more)
    assert sparse({"b": torch.tensor([0.0, 0.0, 1.0])})
    assert not sparse({"b": torch.tensor([0.0, 1.0])})
    assert sparse({"s": torch.tensor(0.0), "b": torch.tensor([0.0, 1.0])})  # 2 zeros of 3
    dead = {"w": torch.zeros(4, 3), "e": torch.zeros(0, 5), "f": torch.zeros(5, 0)}
    assert not sparse(dead) and zero_share(dead) == 0.0
    # dead rows and columns around a block leave the block's own share
    block = torch.zeros(6, 6)
    block[1:4, 2:5] = torch.eye(3)
    assert sparse({"w": block, "e": torch.zeros(0, 5)}) and zero_share({"w": block}) == 6 / 9


def _structured(seed: int, cosine: float = 1.0) -> tuple[dict[str, torch.Tensor], ...]:
    """Two model-shaped updates sharing each unit's scale (every row and column of a tensor of
    two or more dimensions its own log-normal factor, as trained updates' units differ), at
    ``cosine`` to each other: two honest sites of one round differ by such structured
    values, not by white noise. With ``cosine`` 1 the second is the first."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in initial_model(ModelSpec(), 0).state_dict().items()}
    a, b = {}, {}
    for name, shape in shapes.items():
        if len(shape) >= 2:
            rows = torch.randn(shape[0], 1, generator=gen).exp()
            cols = torch.randn(1, math.prod(shape[1:]), generator=gen).exp()
            scale = (rows * cols).reshape(shape)
        else:
            scale = torch.randn(shape, generator=gen).exp()
        g1, g2 = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        a[name] = (scale * g1).to(torch.float32)
        sine = math.sqrt(1.0 - cosine * cosine)
        b[name] = (scale * (cosine * g1 + sine * g2)).to(torch.float32)
    return a, b


def _a1_noise(d: Mapping[str, torch.Tensor], level: float, seed: int) -> dict[str, torch.Tensor]:
    """``a1_sybil_scaled_copy.py noise``: Gaussian noise of ``level`` times each tensor's std."""
    gen = torch.Generator().manual_seed(seed)
    return {k: v + level * v.std() * torch.randn(v.shape, generator=gen) for k, v in d.items()}


@pytest.mark.parametrize("level", [0.005, 0.01, 0.05, 0.2])
def test_a_copy_plus_noise_of_each_tensors_std_is_a_duplicate_by_its_white_residual(
    level: float,
) -> None:
    """a1 ``noise 3 0.01`` and ``0.05``: past ``scaled_cosine`` at 1% and more (the rule
    before ``white_noise_z`` pays them), but the copy minus its original is white noise
    within each tensor."""
    d, _ = _structured(40)
    copy = _a1_noise(d, level, 41)
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, copy)]
    assert duplicate_residual_z(copy, d) < 10
    assert find_duplicates(entries, WHITE) == {"sybil": "h0"}
    if level >= 0.01:
        assert find_duplicates(entries, RULE) == {}


def test_honest_pairs_closer_than_a_noisy_copy_are_not_white_noise() -> None:
    """Two updates at the closest honest cosine measured (0.99993, closer than a 1% copy),
    differing by values shaped like their units, are no copies: their residual has structure
    far above ``white_noise_z``; nor is an update a copy of an unrelated one."""
    a, b = _structured(42, HONEST_MAX)
    assert abs(_cos(a, b) - HONEST_MAX) < 1e-5
    assert duplicate_residual_z(b, a) > 10 * (WHITE.white_noise_z or 0)
    entries = [Entry("h0", 1, "a" * 64, a), Entry("h1", 2, "b" * 64, b)]
    assert find_duplicates(entries, WHITE) == {}
    c, _ = _structured(43)
    assert find_duplicates([entries[0], Entry("h2", 2, "c" * 64, c)], WHITE) == {}


def test_the_white_noise_test_is_ordered_and_terms_before_h202_spare_declared_dp_noise() -> None:
    """The later committed update is the copy; under terms without ``white_noise_dp_cosine``
    one that declares DP-SGD is not tested (its Gaussian noise is declared)."""
    d, _ = _structured(44)
    copy = _a1_noise(d, 0.05, 45)
    first = [Entry("sybil", 1, "b" * 64, copy), Entry("h0", 2, "a" * 64, d)]
    assert find_duplicates(first, WHITE) == {"h0": "sybil"}
    declared = [Entry("h0", 1, "a" * 64, d), Entry("dp", 2, "b" * 64, copy, noise_declared=True)]
    assert find_duplicates(declared, NO_DP) == {}
    off = DuplicateRule(white_noise_z=0.0)
    assert find_duplicates([first[1], Entry("s", 2, "b" * 64, copy)], off) == {}


def test_the_white_noise_rule_needs_its_statistic() -> None:
    """Without the statistic (a layer above), a rule that names ``white_noise_z`` is refused
    rather than applied without it; terms without it search as before."""
    d, _ = _structured(46)
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, _a1_noise(d, 0.05, 1))]
    with pytest.raises(ConfigError, match="white_noise_z"):
        duplicates.find_duplicates(entries, WHITE)
    assert duplicates.find_duplicates(entries, RULE) == {}


def test_terms_without_white_noise_z_keep_their_bytes_and_pay_a_noisy_copy() -> None:
    """Terms written before ``white_noise_z`` lack the key and replay the rule of their day
    (a1's 1% copy paid); terms written now carry it and catch the copy."""
    blob = _terms(RULE).to_bytes()
    assert b'"support_overlap":0.99}' in blob and b"white_noise_z" not in blob
    parsed = RoundTerms.from_bytes(blob)
    assert parsed.duplicates == RULE and parsed.to_bytes() == blob
    d, _ = _structured(47)
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, _a1_noise(d, 0.01, 2))]
    assert find_duplicates(entries, parsed.duplicates) == {}
    now = RoundTerms.from_bytes(_terms(WHITE).to_bytes())
    assert now.duplicates.white_noise_z == 1000.0
    assert find_duplicates(entries, now.duplicates) == {"sybil": "h0"}


def test_the_white_noise_test_looks_only_at_an_original_that_explains_the_update() -> None:
    """An update of pure noise (a test fixture's random update) is white, and so is its
    residual from an unrelated original: not a copy, as the closest original's cosine is
    not above 0.5; a copy with noise of its own norm (cosine 0.71) is still one."""
    d, _ = _structured(48)
    gen = torch.Generator().manual_seed(49)
    size = math.sqrt(sum(float((v.double() ** 2).sum()) for v in d.values()) / _flat(d).numel())
    # noise as long as d, plus a fifth of d (cosine about 0.2): its residual from d is white
    noise = {k: size * torch.randn(v.shape, generator=gen) + 0.2 * v for k, v in d.items()}
    assert 0.1 < _cos(d, noise) < 0.3
    assert duplicate_residual_z(noise, d) < 10  # white: only the cosine floor spares it
    entries = [Entry("h0", 1, "a" * 64, d), Entry("h1", 2, "b" * 64, noise)]
    assert find_duplicates(entries, WHITE) == {}
    loud = _a1_noise(d, 1.0, 50)
    assert 0.6 < _cos(d, loud) < 0.8
    assert find_duplicates([entries[0], Entry("s", 2, "c" * 64, loud)], WHITE) == {"s": "h0"}


def _all_but(
    d: Mapping[str, torch.Tensor], kept: str, level: float, seed: int
) -> dict[str, torch.Tensor]:
    """a101 ``noise``: a1's noise on every tensor of ``d`` but ``kept``, left as it is."""
    noisy = _a1_noise(d, level, seed)
    return {k: d[k] if k == kept else v for k, v in noisy.items()}


@pytest.mark.parametrize("level", [0.01, 0.05])
def test_a_copy_that_leaves_one_tensor_without_noise_is_a_duplicate_by_that_tensor(
    level: float,
) -> None:
    """a101 ``noise``: the tensor left alone keeps its structure in the residual, so the
    white-noise test passes the copy (the rule before ``shared_tensor`` pays it); it repeats
    the original's tensor exactly, which no honest update does."""
    d, _ = _structured(60)
    copy = _all_but(d, "conv2.weight", level, 61)
    assert duplicate_residual_z(copy, d) > 1000
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, copy)]
    assert find_duplicates(entries, NO_SHARED) == {}
    assert find_duplicates(entries, WHITE) == {"sybil": "h0"}
    assert duplicates.shared_tensor(d, copy) == "conv2.weight"
    # the first committed is the original, whichever holds the noise
    swapped = [Entry("sybil", 1, "b" * 64, copy), Entry("h0", 2, "a" * 64, d)]
    assert find_duplicates(swapped, WHITE) == {"h0": "sybil"}
    assert find_duplicates(entries, DuplicateRule(shared_tensor=0)) == {}


def test_a_copy_of_some_tensors_beside_its_own_training_is_a_duplicate() -> None:
    """a101 ``mix``: one tensor of h0's update, the others another update's (the Sybil's own
    training): far from h0 by every other test, named h0's copy by the tensor it repeats."""
    a, _ = _structured(62)
    b, _ = _structured(63)
    c, _ = _structured(64)
    mix = {k: a[k] if k == "conv2.weight" else c[k] for k in a}
    entries = [
        Entry("h0", 1, "a" * 64, a),
        Entry("h1", 2, "b" * 64, b),
        Entry("sybil", 3, "c" * 64, mix),
    ]
    assert find_duplicates(entries, NO_SHARED) == {}
    assert find_duplicates(entries, WHITE) == {"sybil": "h0"}


def test_zero_small_and_other_layout_tensors_are_not_shared() -> None:
    """A frozen layer's all-zero delta, a tensor below the floor (16 nonzero entries, in both
    updates) and a tensor of another shape never make a copy; equal values count whatever their
    dtype or zero's sign."""
    rule = DuplicateRule(white_noise_z=None)
    gen = torch.Generator().manual_seed(65)

    def update(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"w": torch.randn(40, generator=gen), **tensors}

    def marked(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
        entries = [Entry("h0", 1, "a" * 64, first), Entry("h1", 2, "b" * 64, second)]
        return find_duplicates(entries, rule) == {"h1": "h0"}

    zero = torch.zeros(32)
    assert not marked(update(z=zero), update(z=zero.clone()))
    small = torch.randn(15, generator=gen)
    assert not marked(update(z=small), update(z=small.clone()))
    floor = torch.randn(16, generator=gen)
    assert marked(update(z=floor), update(z=floor.clone()))
    assert duplicates.shared_tensor(update(z=floor), update(z=floor.clone())) == "z"
    # 15 nonzero entries of 32 (a sparse tensor): below the floor, however equal
    sparse = torch.zeros(32)
    sparse[:15] = torch.randn(15, generator=gen)
    assert not marked(update(z=sparse), update(z=sparse.clone()))
    # ... in either update: 16 nonzero in the earlier, 15 in the later
    fuller = floor.clone()
    thinner = floor.clone()
    thinner[5] = 0.0
    assert not marked(update(z=fuller), update(z=thinner))
    assert not marked(update(z=thinner), update(z=fuller))
    # the same 16 values as a 4 x 4 tensor: another shape (same number of entries)
    assert not marked(update(z=floor), update(z=floor.reshape(4, 4).clone()))
    # float16 values widen exactly; -0.0 equals 0.0
    half = torch.randn(16, generator=gen).to(torch.float16)
    assert marked(update(z=half), update(z=half.to(torch.float32)))
    signed = torch.randn(17, generator=gen)
    signed[3] = 0.0
    minus = signed.clone()
    minus[3] = -0.0
    assert marked(update(z=signed), update(z=minus))


def test_a_kept_tensor_moved_a_little_is_still_shared() -> None:
    """The test is a distance, not equality: one float32 step on every value, or noise of 1e-4
    or 5e-4 of the tensor's std, leaves the kept tensor within relative L2 1e-3 of the
    original's (a copy); noise of 2e-3 of its std does not."""
    rule = DuplicateRule(white_noise_z=None)
    gen = torch.Generator().manual_seed(66)
    t = torch.randn(400, generator=gen)

    def marked(second: torch.Tensor) -> bool:
        first = {"w": torch.randn(40, generator=gen), "z": t}
        other = {"w": torch.randn(40, generator=gen), "z": second}
        entries = [Entry("h0", 1, "a" * 64, first), Entry("h1", 2, "b" * 64, other)]
        return find_duplicates(entries, rule) == {"h1": "h0"}

    assert marked(torch.nextafter(t, torch.full_like(t, math.inf)))
    for level in (1e-4, 5e-4):
        assert marked(t + level * t.std() * torch.randn(t.shape, generator=gen))
    assert not marked(t + 2e-3 * t.std() * torch.randn(t.shape, generator=gen))


def test_the_shared_tensor_threshold_is_strict_and_exact() -> None:
    """``d2 < 1e-6 * n2``, both *Flattening and sums* float64 sums: 16 entries of 125/512
    (``n2`` = 15625/16384, and 1e-6 times it rounds to 2**-20) and one entry 2**-10 away
    (``d2`` = 2**-20 exactly) sit at the threshold: not a copy; one float32 step closer is."""
    a = torch.full((16,), 125 / 512)
    at = a.clone()
    at[0] = 125 / 512 + 2**-10
    assert float(at[0]) - float(a[0]) == 2**-10
    assert math.fsum([(125 / 512) ** 2] * 16) * 1e-6 == 2**-20
    closer = at.clone()
    closer[0] = torch.nextafter(at[0], torch.tensor(0.0))
    farther = at.clone()
    farther[0] = torch.nextafter(at[0], torch.tensor(1.0))
    assert duplicates.shared_tensor({"z": a}, {"z": at}) is None
    assert duplicates.shared_tensor({"z": a}, {"z": farther}) is None
    assert duplicates.shared_tensor({"z": a}, {"z": closer}) == "z"
    # relative to the EARLIER update's norm: the other way round at is within it
    assert duplicates.shared_tensor({"z": at}, {"z": a}) == "z"


def test_find_duplicates_keeps_the_shared_tensor_threshold_strict_and_exact() -> None:
    """The same threshold through ``find_duplicates``, which reads the tensors from its exact
    flats and counts their nonzero entries once, and whose screen sums the squares in any
    order: at ``d2 = 1e-6 * n2`` not a copy, one float32 step closer a copy, one farther not
    (beside a tensor of other random values, so no whole-update test marks the pair)."""
    rule = DuplicateRule(white_noise_z=None)
    gen = torch.Generator().manual_seed(67)
    a = torch.full((16,), 125 / 512)
    at = a.clone()
    at[0] = 125 / 512 + 2**-10
    closer = at.clone()
    closer[0] = torch.nextafter(at[0], torch.tensor(0.0))
    farther = at.clone()
    farther[0] = torch.nextafter(at[0], torch.tensor(1.0))

    def marks(first: torch.Tensor, second: torch.Tensor) -> dict[str, str]:
        entries = [
            Entry("h0", 1, "a" * 64, {"w": torch.randn(40, generator=gen), "z": first}),
            Entry("h1", 2, "b" * 64, {"w": torch.randn(40, generator=gen), "z": second}),
        ]
        return find_duplicates(entries, rule)

    assert marks(a, at) == {}
    assert marks(a, farther) == {}
    assert marks(a, closer) == {"h1": "h0"}
    assert marks(at, a) == {"h1": "h0"}


def test_terms_without_shared_tensor_keep_their_bytes_and_pay_a_partial_copy() -> None:
    """Terms written before ``shared_tensor`` lack the key and replay the rule of their day
    (a101's copy paid); terms written now carry ``"shared_tensor":1`` and catch it."""
    blob = _terms(NO_SHARED).to_bytes()
    assert b'"white_noise_z":1000.0}' in blob and b"shared_tensor" not in blob
    parsed = RoundTerms.from_bytes(blob)
    assert parsed.duplicates == NO_SHARED and parsed.to_bytes() == blob
    d, _ = _structured(70)
    copy = _all_but(d, "conv2.weight", 0.05, 71)
    assert duplicate_residual_z(copy, d) > 1000
    entries = [Entry("h0", 1, "a" * 64, d), Entry("sybil", 2, "b" * 64, copy)]
    assert find_duplicates(entries, parsed.duplicates) == {}
    now = _terms(DuplicateRule()).to_bytes()
    assert b'"scaled_cosine":0.999995,"shared_tensor":1,"support_cosine"' in now
    back = RoundTerms.from_bytes(now)
    assert back.duplicates.shared_tensor == 1 and back.to_bytes() == now
    assert find_duplicates(entries, back.duplicates) == {"sybil": "h0"}
    for bad in (2, -1, True):
        with pytest.raises(InvalidTerms):
            DuplicateRule(shared_tensor=bad)
    wrong = now.replace(b'"shared_tensor":1', b'"shared_tensor":1.0')
    with pytest.raises(InvalidTerms, match="shared_tensor"):
        RoundTerms.from_bytes(wrong)


def _zeroed(d: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``d`` with every third entry of each tensor set to 0 by hand (no ``topk8``)."""
    return {
        k: torch.where(torch.arange(v.numel()).reshape(v.shape) % 3 == 0, 0.0, v)
        for k, v in d.items()
    }


@pytest.mark.parametrize("kind", ["topk0.5", "zeroed", "noisy0.1"])
def test_a_sparse_copy_committed_before_its_original_is_the_copy(kind: str) -> None:
    """a99: the Sybil commits its partner's update sent sparser (a90's ``topk8`` copy, entries
    zeroed by hand, or a93's noisy copy) *before* the partner commits it. The one-way rule read
    a later sparse update against an earlier one only, so both were paid; under
    ``either_order`` the earlier sparse one is the copy of the later dense one, which keeps its
    score."""
    d, other = _update(50), _update(51)
    copy = {
        "topk0.5": _sparse(d, 0.5),
        "zeroed": _zeroed(d),
        "noisy0.1": _noisy_kept(d, 0.05, 0.1),
    }[kind]
    entries = [
        Entry("sybil", 1, "a" * 64, copy),
        Entry("h0", 2, "b" * 64, d),
        Entry("h1", 3, "c" * 64, other),
    ]
    assert find_duplicates(entries, ONE_WAY) == {}
    assert find_duplicates(entries, RULE) == {"sybil": "h0"}
    assert find_duplicates(entries, RULE) == _reference(entries, RULE)
    # with the white-noise test (terms written now): these random updates' residuals are white,
    # so the one-way rule called the dense original the copy of its own sparse copy (the
    # entries it dropped); the sparse one is found first and left out of h0's white test
    assert find_duplicates(entries, DuplicateRule(either_order=None)) == {"h0": "sybil"}
    assert find_duplicates(entries, WHITE) == {"sybil": "h0"}
    # committed after its original, as before: the same mark
    later = [Entry("h0", 1, "b" * 64, d), Entry("sybil", 2, "a" * 64, copy)]
    assert find_duplicates(later, RULE) == find_duplicates(later, ONE_WAY) == {"sybil": "h0"}


def test_a_sparse_update_committed_first_never_marks_the_dense_one_after_it() -> None:
    """The attacker flipping it: a sparse update committed first (of other data, or a sparse
    copy of an honest site's update of the round before, which is public) marks no later
    dense honest update by the sparse tests; the sparse one is the judged side of the reversed
    pair and the dense one, leaving out nothing and not sparse, never is. (White-noise test
    off: on these random updates every residual is white; on trained ones a99 ``frame``.)"""
    h0_now, h1_now = _update(52), _update(53)
    h0_before = {k: v + 0.5 * _update(54)[k] for k, v in h0_now.items()}  # h0's last round
    for first in (
        _sparse(_update(55), 0.5),
        _sparse(h0_before, 0.5),
        _noisy_kept(h0_before, 0.05, 0.1),
    ):
        entries = [
            Entry("att", 1, "a" * 64, first),
            Entry("h0", 2, "b" * 64, h0_now),
            Entry("h1", 3, "c" * 64, h1_now),
        ]
        assert find_duplicates(entries, RULE) == {}


def test_either_order_keeps_every_mark_of_the_one_way_rule() -> None:
    """A sparse copy committed first is marked by the later original and stays an original for
    the updates after it: a second copy of the sparse copy (byte-identical, or its noisy copy
    on its own entries) is still marked, as the one-way rule marks it; a dense copy of the
    original scaled by 1.01 after it is the original's copy; the dense original is never
    marked. Pair by pair as the written-out rule."""
    d, other = _update(56), _update(57)
    s = _sparse(d, 0.1)
    ups = [
        ("s", "1", s),
        ("d", "2", d),
        ("s2", "1", s),  # byte-identical to s (same sha256)
        ("s3", "3", _noisy_kept(s, 0.05, 0.1, seed=5)),
        ("d2", "4", {k: v * 1.01 for k, v in d.items()}),
        ("o", "5", other),
    ]
    entries = [Entry(site, i + 1, sha * 64, u) for i, (site, sha, u) in enumerate(ups)]
    one_way = find_duplicates(entries, ONE_WAY)
    both = find_duplicates(entries, RULE)
    assert one_way == {"s2": "s", "s3": "s", "d2": "d"}
    assert both == {**one_way, "s": "d"}
    assert both == _reference(entries, RULE)
    assert "d" not in both and "o" not in both


def test_terms_without_either_order_keep_their_bytes_and_pay_a_sparse_copy_committed_first() -> (
    None
):
    """Terms written before ``either_order`` lack the key and replay the one-way rule (a99's
    copy paid); terms written now carry ``"either_order":true``; a value that is not a JSON
    boolean is refused."""
    blob = _terms(ONE_WAY).to_bytes()
    assert b'"duplicates":{"cosine":0.9999,"relative_l2":0.001,' in blob
    parsed = RoundTerms.from_bytes(blob)
    assert parsed.duplicates == ONE_WAY and parsed.to_bytes() == blob
    d = _update(58)
    entries = [Entry("sybil", 1, "a" * 64, _sparse(d, 0.5)), Entry("h0", 2, "b" * 64, d)]
    assert find_duplicates(entries, parsed.duplicates) == {}
    now = _terms(DuplicateRule()).to_bytes()
    assert b'"duplicates":{"cosine":0.9999,"either_order":true,"relative_l2":0.001,' in now
    assert find_duplicates(entries, RoundTerms.from_bytes(now).duplicates) == {"sybil": "h0"}
    for bad in (b'"either_order":1', b'"either_order":"true"'):
        with pytest.raises(InvalidTerms, match="either_order"):
            RoundTerms.from_bytes(now.replace(b'"either_order":true', bad))
    with pytest.raises(InvalidTerms, match="either_order"):
        DuplicateRule(either_order=2)  # type: ignore[arg-type]


def _white_copy(d: Mapping[str, torch.Tensor], k: float, seed: int) -> dict[str, torch.Tensor]:
    """a100's copy: ``d`` plus Gaussian noise of one standard deviation in every coordinate
    (as the noise check wants), its norm ``k`` times ``d``'s: cosine about
    ``1 / sqrt(1 + k**2)``."""
    gen = torch.Generator().manual_seed(seed)
    flat = _flat(d)
    sd = k * float(flat.norm()) / math.sqrt(flat.numel())
    return {n: v + sd * torch.randn(v.shape, generator=gen) for n, v in d.items()}


@pytest.mark.parametrize("k", [0.05, 1.0, 1.5])
def test_a_noisy_copy_that_declares_dp_sgd_is_a_duplicate(k: float) -> None:
    """a100: the same copy declaring DP-SGD was exempt (terms before ``white_noise_dp_cosine``
    pay it, and terms written now); under terms that name 0.5 it is a DUPLICATE while its
    original is above 0.5."""
    d, _ = _structured(51)
    copy = _white_copy(d, k, 52)
    assert _cos(d, copy) > 0.5
    entries = [Entry("h0", 1, "a" * 64, d), Entry("dp", 2, "b" * 64, copy, noise_declared=True)]
    assert find_duplicates(entries, DP_ON) == {"dp": "h0"}
    assert find_duplicates(entries, NO_DP) == {}


def test_white_noise_dp_cosine_sets_the_floor_for_dp_declared_updates_only() -> None:
    """A DP-declared update is tested only when its closest original is above both 0.5 and
    ``white_noise_dp_cosine``; one that declares nothing only above 0.5; noise of twice the
    copy's norm (cosine 0.45) is below both, so not tested (an honest DP-SGD update, mostly
    its own noise, lies there)."""
    d, _ = _structured(53)
    mid = _white_copy(d, 1.0, 54)  # cosine about 0.71
    assert 0.65 < _cos(d, mid) < 0.75
    high = DuplicateRule(white_noise_dp_cosine=0.8)
    low = DuplicateRule(white_noise_dp_cosine=0.1)
    dp = [Entry("h0", 1, "a" * 64, d), Entry("dp", 2, "b" * 64, mid, noise_declared=True)]
    plain = [Entry("h0", 1, "a" * 64, d), Entry("s", 2, "b" * 64, mid)]
    assert find_duplicates(dp, high) == {}
    assert find_duplicates(plain, high) == {"s": "h0"}
    assert find_duplicates(dp, low) == {"dp": "h0"}
    far = _white_copy(d, 2.0, 55)
    assert _cos(d, far) < 0.5
    assert duplicate_residual_z(far, d) < 10  # white: only the cosine floor spares it
    far_dp = [Entry("h0", 1, "a" * 64, d), Entry("dp", 2, "b" * 64, far, noise_declared=True)]
    assert find_duplicates(far_dp, low) == {}


def test_terms_without_white_noise_dp_cosine_keep_their_bytes_and_pay_a_dp_declared_copy() -> None:
    """Terms without ``white_noise_dp_cosine`` (the default, and every earlier one) lack the key
    and pay the DP-declared copy; terms that name it (0.5) carry it and catch the copy; the
    value must be a cosine in (0, 1]."""
    blob = _terms(NO_DP).to_bytes()
    assert b'"white_noise_z":1000.0}' in blob and b"white_noise_dp_cosine" not in blob
    parsed = RoundTerms.from_bytes(blob)
    assert parsed.duplicates == NO_DP and parsed.to_bytes() == blob
    d, _ = _structured(56)
    copy = _white_copy(d, 1.0, 57)
    entries = [Entry("h0", 1, "a" * 64, d), Entry("dp", 2, "b" * 64, copy, noise_declared=True)]
    assert find_duplicates(entries, parsed.duplicates) == {}
    now_blob = _terms(DP_ON).to_bytes()
    assert b'"white_noise_dp_cosine":0.5,"white_noise_z":1000.0}' in now_blob
    now = RoundTerms.from_bytes(now_blob)
    assert now.duplicates.white_noise_dp_cosine == 0.5 and now.to_bytes() == now_blob
    assert find_duplicates(entries, now.duplicates) == {"dp": "h0"}
    for bad in (0.0, -0.5, 1.5, math.inf):
        with pytest.raises(InvalidTerms, match="white_noise_dp_cosine"):
            DuplicateRule(white_noise_dp_cosine=bad)


def test_the_shared_tensor_screen_never_skips_a_copy_of_tiny_float64_values() -> None:
    """``shared_tensor``'s dot-product screen skips a pair only where the exact rule
    (:func:`duplicates.tensor_distance`) says it is not a copy: with float64 values near
    1e-161 the products are subnormal and the rounding bound does not hold, so such tensors are
    decided exactly (before, the screen alone called some of these exact copies no copy)."""
    gen = torch.Generator().manual_seed(0)
    disagreements = []
    for case in range(2000):
        n = int(torch.randint(16, 3000, (1,), generator=gen))
        scale = 10.0 ** float(torch.empty(1).uniform_(-165, -150, generator=gen))
        a = torch.randn(n, dtype=torch.float64, generator=gen) * scale
        noise = 10.0 ** float(torch.empty(1).uniform_(-6, -2, generator=gen))
        b = a * (1 + torch.randn(n, dtype=torch.float64, generator=gen) * noise)
        d2, n2 = duplicates.tensor_distance(
            duplicates._tensor_parts({"w": a}, 16)["w"], duplicates._tensor_parts({"w": b}, 16)["w"]
        )
        exact = d2 < duplicates.SHARED_TENSOR_SQUARED * n2
        if (duplicates.shared_tensor({"w": a}, {"w": b}) == "w") != exact:
            disagreements.append((case, n, scale))
    assert disagreements == []


def test_a_copys_flat_is_written_over_by_the_next_and_the_originals_stay_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 18: once an update is judged a copy its float64 flat is let go and its buffer
    takes the next update's flat (a 100-site round of copies wrote ~84 MB of fresh pages, ~20k
    page faults an audit); the originals' flats are never written over, so copies of each
    original, interleaved, are still found, and honest updates after them stay originals."""
    a, _ = _structured(60)
    b, _ = _structured(61)
    c, _ = _structured(62)
    order = [
        ("a", a),
        ("a1", _a1_noise(a, 0.05, 63)),
        ("b", b),
        ("b1", _a1_noise(b, 0.05, 64)),
        ("a2", _a1_noise(a, 0.02, 65)),
        ("b2", _a1_noise(b, 0.05, 66)),
        ("c", c),
        ("a3", _a1_noise(a, 0.05, 67)),
        ("c1", _a1_noise(c, 0.01, 68)),
    ]
    entries = [Entry(s, k, f"{k:064x}", d) for k, (s, d) in enumerate(order)]
    buffers: list[int] = []
    built = duplicates._flat

    def flat(delta: Mapping[str, torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        got = built(delta, out) if out is not None else built(delta)
        buffers.append(got.data_ptr())
        return got

    monkeypatch.setattr(duplicates, "_flat", flat)
    marks = find_duplicates(entries, WHITE)
    assert marks == {"a1": "a", "b1": "b", "a2": "a", "b2": "b", "a3": "a", "c1": "c"}
    assert len(buffers) == len(order)  # each update's flat built once
    # three originals' buffers, and one the copies hand on (the fresh ones, not nine)
    assert len(set(buffers)) <= 4


def test_the_screens_hold_rows_for_the_originals_and_one_group_not_every_update() -> None:
    """Issue 18: a round of copies of one update keeps one original's row and one group's in
    each screen (a 100-site round's two screens of a row per update were 84 MB, mapped fresh
    on every audit: ~7-14k page faults); a round of originals grows its buffers as originals
    are kept, with the same marks as the unscreened rule."""
    gen = torch.Generator().manual_seed(12)
    n, width = 2 * SCREEN_GROUP + 5, 3 * SCREEN_CHUNK + 11
    base = torch.randn(width, generator=gen, dtype=torch.float64)
    made: list[_Screens] = []
    init = _Screens.__init__

    def keep(self: _Screens, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    for copies in (True, False):
        if copies:  # each a copy of s000 by the exact rule (cosine 1)
            vectors = [base * (1 + 1e-9 * k) for k in range(n)]
        else:
            vectors = [torch.randn(width, generator=gen, dtype=torch.float64) for _ in range(n)]
            vectors[-1] = vectors[1] * (1 + 1e-9)  # a copy of an original of the first group
        entries = [
            Entry(f"s{i:03d}", i + 1, f"{i:064x}", {"w": v.to(torch.float32)})
            for i, v in enumerate(vectors)
        ]
        made.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_Screens, "__init__", keep)
            marks = find_duplicates(entries, WHITE)
        rows = max(r.shape[0] for screens in made for r in screens._rows)
        if copies:
            assert marks == {f"s{j:03d}": "s000" for j in range(1, n)}
            assert rows <= 1 + SCREEN_GROUP
        else:
            assert marks == {f"s{n - 1:03d}": "s001"} == _reference(entries, RULE)
            assert rows == n  # every update an original but the last: all screened
