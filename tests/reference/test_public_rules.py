"""The README's *The public rules, exactly*, implemented from its text alone (numpy and the
standard library, none of fedtrail's rule code), against what the product computes: weights and
their log fractions, the reputation EMA, the robust statistics, the global model and the
duplicate rule. An auditor who follows the README must get the same bits; each rule also has a
near miss (a plausible misreading) that must disagree, so the comparison can fail."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch

from fedtrail.ml.aggregation import AggregationRule, aggregate, apply_delta
from fedtrail.protocol.weights import as_floats, next_reputation, onchain_weights
from fedtrail.valuation.robust import robust_statistics
from fedtrail.valuation.standing import demoted_score, demotion_reference, relieved_reference

# ---------------------------------------------------------------- the README's rules


def ref_weights(n: Sequence[int], s: Sequence[int]) -> list[int]:
    p = [a * b for a, b in zip(n, s, strict=True)]
    total = sum(p)
    w = [x * 10**18 // total for x in p]
    left = 10**18 - sum(w)
    for i, x in enumerate(p):  # ascending address order
        if left == 0:
            break
        if x * 10**18 % total:
            w[i] += 1
            left -= 1
    return w


def ref_reputation(rep: int | None, score: int, alpha: int = 300_000) -> int:
    return score if rep is None else (alpha * score + (10**6 - alpha) * rep) // 10**6


def ref_standing_score(
    after: float,
    passed: Sequence[float],
    demote_scale: float = 0.5,
    cosine: float | None = None,
    relief_cosine: float = -0.7,
) -> int:
    """A passed site's score from its accumulated value (*Standing*): against ``min(0, median
    of the passed sites' after)``, or 0 when its ``cosine`` (None: not judged) is below
    ``relief_cosine``; full when not below, else rounded half to even, clamped, and 0 below
    10,000."""
    reference = min(0.0, statistics.median(passed))
    if cosine is not None and cosine < relief_cosine:
        reference = 0.0
    if after - reference >= 0:
        return 10**6
    score = min(10**6, max(0, round(10**6 * (1 + (after - reference) / demote_scale))))
    return 0 if score < 10_000 else score


def ref_sum(v: np.ndarray) -> float:
    a = np.asarray(v, dtype=np.float64).ravel()
    blocks = -(-a.size // 1024) if a.size else 1
    padded = np.zeros(blocks * 1024)
    padded[: a.size] = a
    acc = np.zeros(1024)
    for b in range(blocks):
        acc = acc + padded[b * 1024 : (b + 1) * 1024]
    return math.fsum(acc.tolist())


def ref_median_rows(m: np.ndarray) -> np.ndarray:
    s = np.sort(m + 0.0, axis=0)
    n = m.shape[0]
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) * 0.5


def ref_flat(delta: dict[str, torch.Tensor]) -> np.ndarray:
    return np.concatenate([t.numpy().astype(np.float64).ravel() for t in delta.values()])


def ref_robust(
    rows: list[np.ndarray], floor: float = 0.25, *, total: Callable[[np.ndarray], float] = ref_sum
) -> list[tuple[float, float, float, float]]:
    m = ref_median_rows(np.stack(rows))
    norms = [math.sqrt(total(r * r)) for r in rows]
    med = _median(norms)
    mad = _median([abs(x - med) for x in norms])
    scale = max(1.4826 * mad, floor * med)
    mnorm = math.sqrt(total(m * m))
    out = []
    for r, nr in zip(rows, norms, strict=True):
        d = nr * mnorm
        c = max(-1.0, min(1.0, total(r * m) / d)) if d > 0 else 0.0
        out.append((c, nr, (nr - med) / scale if scale > 0 else 0.0, med))
    return out


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def ref_global(
    start: np.ndarray,
    rows: list[np.ndarray],
    weights: list[int],
    stats: np.ndarray | None = None,
) -> np.ndarray:
    acc = np.zeros_like(start, dtype=np.float64)
    for r, w in zip(rows, weights, strict=True):
        if w > 0:
            acc = acc + (w / 10**18) * r
    if stats is not None:
        kept = np.stack([r for r, w in zip(rows, weights, strict=True) if w > 0])
        acc[stats] = ref_median_rows(kept)[stats]
    delta = acc.astype(np.float32).astype(np.float64)
    return (start.astype(np.float64) + delta).astype(np.float32)


# ---------------------------------------------------------------- inputs


def _deltas(seed: int, n: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        scale = 10.0 ** (i % 3 - 1)
        out.append(
            {
                "conv.weight": torch.randn(8, 1, 3, 3, generator=gen) * scale,
                "bn.running_mean": torch.randn(8, generator=gen) * scale + (1e3 if i == 0 else 0),
                "fc.weight": torch.randn(3000, generator=gen) * scale,
                "fc.bias": -torch.randn(2, generator=gen) * scale,
            }
        )
    return out


# ---------------------------------------------------------------- tests


def test_weights_and_their_log_fractions_follow_the_readme() -> None:
    rng = random.Random(5)
    differs = 0
    for _ in range(300):
        k = rng.randint(1, 12)
        n = [rng.randint(1, 2**20) for _ in range(k)]
        s = [rng.choice([0, 1, rng.randint(1, 10**6), 10**6]) for _ in range(k)]
        if not any(a * b for a, b in zip(n, s, strict=True)):
            continue
        w = onchain_weights(n, s)
        assert w == ref_weights(n, s)
        assert as_floats(w) == [wi / 10**18 for wi in w]
        differs += sum(float(wi) / 1e18 != wi / 10**18 for wi in w)
    # the misreading the README warns about is not the same number
    assert differs > 0


def test_the_reputation_ema_follows_the_readme() -> None:
    rng = random.Random(2)
    rep: int | None = None
    ours = 0
    for valued in range(50):
        score = rng.randint(0, 10**6)
        ours = next_reputation(ours, score, valued_rounds=valued, alpha=300_000)
        rep = ref_reputation(rep, score)
        assert ours == rep
    # rounding to nearest instead of down disagrees somewhere
    assert any(
        (300_000 * s + 700_000 * r) // 10**6 != round((300_000 * s + 700_000 * r) / 10**6)
        for s, r in ((rng.randint(0, 10**6), rng.randint(0, 10**6)) for _ in range(100))
    )


def test_the_reputation_ema_near_its_rounding_boundary() -> None:
    """Just under and exactly on a whole unit: alpha 0.3 of a score of 3 over a reputation of
    0 is 0.9 units, floored to 0 (rounding would give 1); of 5, 1.5 units, floored to 1
    (rounding half to even: 2); of 10 over 10, exactly 10. The first valued score sets the
    reputation instead (the EMA from 0 would give 0)."""
    cases = [((0, 3), 0), ((0, 5), 1), ((10, 10), 10), ((999_999, 1_000_000), 999_999)]
    for (rep, score), want in cases:
        assert next_reputation(rep, score, valued_rounds=1, alpha=300_000) == want
        assert ref_reputation(rep, score) == want
    assert [round((300_000 * s + 700_000 * r) / 10**6) for (r, s), _ in cases[:2]] == [1, 2]
    assert next_reputation(0, 3, valued_rounds=0, alpha=300_000) == 3 == ref_reputation(None, 3)


# (after, the passed sites' after values, the score): demote_scale 0.5
STANDING_NEAR_MISSES = [
    (0.0, [0.0, 0.2, 0.4], 1_000_000),  # exactly not below: full
    (-1e-7, [0.0, 0.2, 0.4], 1_000_000),  # below, but 999,999.8 rounds to full
    (-5e-7, [0.0, 0.2, 0.4], 999_999),  # the first score under full
    (-0.495, [-0.495, 0.2, 0.4], 10_000),  # 10,000.00000000001: at the 1% floor, kept
    (-0.4950001, [-0.4950001, 0.2, 0.4], 10_000),  # 9,999.8 rounds up to the floor: kept
    (-0.4950009, [-0.4950009, 0.2, 0.4], 0),  # 9,998.2: below the floor, LOW_QUALITY
    (-0.2, [-0.3, -0.2, 0.4], 1_000_000),  # exactly the negative median -0.2: full
    (-0.4, [-0.4, -0.1, -0.05], 400_000),  # 0.3 below the negative median -0.1
]


@pytest.mark.parametrize(("after", "passed", "want"), STANDING_NEAR_MISSES)
def test_the_standing_score_near_its_thresholds(
    after: float, passed: list[float], want: int
) -> None:
    """The standing's score just at, under and over its thresholds (full score at 0 below
    the reference, the 1% floor) is the README's, and the value written here."""
    ours = demoted_score(after - demotion_reference(passed), demote_scale=0.5)
    assert ours == ref_standing_score(after, passed) == want


# (after, the passed sites' after values, the site's cosine, the score): relief_cosine -0.7
RELIEF_NEAR_MISSES = [
    (-0.4, [-0.4, -0.1, -0.05], -0.7, 400_000),  # at relief_cosine, not below: the median's
    (-0.4, [-0.4, -0.1, -0.05], -0.7000001, 200_000),  # just below: against 0
    (-0.4, [-0.4, -0.1, -0.05], None, 400_000),  # not judged (too few updates): the median's
    (0.1, [0.1, -0.1, -0.05], -0.95, 1_000_000),  # a record not negative keeps full score
]


@pytest.mark.parametrize(("after", "passed", "cosine", "want"), RELIEF_NEAR_MISSES)
def test_the_median_relief_near_its_threshold(
    after: float, passed: list[float], cosine: float | None, want: int
) -> None:
    """No relief from a negative median for an update whose cosine is below ``relief_cosine``
    (*Standing*), at and just past the threshold, is the README's and the value written here."""
    reference = relieved_reference(demotion_reference(passed), cosine, relief_cosine=-0.7)
    ours = demoted_score(after - reference, demote_scale=0.5)
    assert ours == ref_standing_score(after, passed, cosine=cosine) == want


def ref_warm_up_shares(values: dict[str, float]) -> dict[str, float]:
    """The warm-up's shares under ``warm_up_floor`` below 1 (*Standing*): each passed update's
    value as a share of the round's total absolute value (no ``credit_cosine`` case here)."""
    total = math.fsum(abs(v) for v in values.values())
    return {k: v / total for k, v in values.items()}


def ref_warm_up_scores(values: dict[str, float], floor: float) -> dict[str, int]:
    """The warm-up's scores (*Standing*, ``warm_up_floor``): the shares, accumulated, scored
    against the median of the shares, then raised to at least ``floor`` of the full score."""
    shares = ref_warm_up_shares(values)
    out = {}
    for k, share in shares.items():
        score = ref_standing_score(share, list(shares.values()))
        out[k] = score if score >= 10**6 else max(score, round(10**6 * floor))
    return out


# (the passed updates' values in the warm-up, the floor, whether the floor binds for a site)
WARM_UP_CASES = [
    ({"a": 0.3, "b": 0.2, "c": 0.1, "d": -0.05, "e": -2.0}, 0.5, True),
    ({"a": 0.01, "b": 0.02, "c": -0.004, "d": -0.008, "e": 0.001}, 0.5, False),
    ({"a": -0.3, "b": -0.2, "c": -0.1, "d": 0.05, "e": -2.0}, 0.25, True),  # negative median
]


@pytest.mark.parametrize(("values", "floor", "binds"), WARM_UP_CASES)
def test_the_warm_up_scores_follow_the_readme(
    values: dict[str, float], floor: float, binds: bool
) -> None:
    """The product's warm-up scores (``Combiner.settle(..., warm_up=True)`` under
    ``warm_up_floor``) are the README's, demoting someone in each case; ignoring the floor
    changes a score exactly where it binds."""
    from dataclasses import replace as _replace

    from fedtrail.valuation import HISTORY_COMBINER, Candidate, RobustStats

    cands = [Candidate(site=s, num_samples=100, delta={"w": torch.ones(1)}) for s in values]
    robust = {s: RobustStats(cosine=0.5, norm=1.0, norm_z=0.0, median_norm=1.0) for s in values}
    combiner = _replace(HISTORY_COMBINER, warm_up_floor=floor, warm_up_scope=0)
    got = {
        v.site: v.score
        for v in combiner.settle(
            cands, robust, values, ref_warm_up_shares(values), method="s", warm_up=True
        )
    }
    want = ref_warm_up_scores(values, floor)
    assert got == want and any(v < 10**6 for v in want.values())
    assert (want != ref_warm_up_scores(values, 0.0)) is binds


def test_the_standing_scores_misreadings_disagree_near_the_thresholds() -> None:
    """Flooring instead of rounding, keeping scores under the 1% floor, or measuring against
    0 instead of a negative median each change one of the near misses above."""

    def floored(after: float, passed: list[float]) -> int:
        d = after - min(0.0, statistics.median(passed))
        score = 10**6 if d >= 0 else max(0, math.floor(10**6 * (1 + d / 0.5)))
        return 0 if score < 10_000 else score

    def no_floor(after: float, passed: list[float]) -> int:
        d = after - min(0.0, statistics.median(passed))
        return 10**6 if d >= 0 else max(0, round(10**6 * (1 + d / 0.5)))

    def against_zero(after: float, passed: list[float]) -> int:
        return ref_standing_score(after, [0.0])

    for misreading in (floored, no_floor, against_zero):
        assert any(misreading(a, p) != want for a, p, want in STANDING_NEAR_MISSES), misreading


@pytest.mark.parametrize("n", [3, 4, 5])
def test_the_robust_statistics_follow_the_readme_bit_for_bit(n: int) -> None:
    deltas = _deltas(n, n)
    stats = ("bn.running_mean",)
    ours = robust_statistics({f"0x{i:040x}": d for i, d in enumerate(deltas)}, statistics=stats)
    rows = [ref_flat({k: v for k, v in d.items() if k not in stats}) for d in deltas]
    ref = ref_robust(rows)
    for (c, nr, z, med), r in zip(ref, ours.values(), strict=True):
        assert (r.cosine, r.norm, r.norm_z, r.median_norm) == (c, nr, z, med)
    # numpy's own pairwise sum is a plausible misreading: it moves some last bits
    naive = ref_robust(rows, total=lambda v: float(np.sum(v)))
    assert naive != ref


def test_the_global_model_follows_the_readme_bit_for_bit() -> None:
    deltas = _deltas(7, 5)
    start = {
        k: torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
        for k, v in deltas[0].items()
    }
    weights = onchain_weights([120, 80, 1, 300, 57], [10**6, 0, 700_000, 345_678, 10**6])
    names = list(deltas[0])
    stats_mask = np.concatenate(
        [np.full(v.numel(), k == "bn.running_mean") for k, v in deltas[0].items()]
    )
    rows = [ref_flat(d) for d in deltas]
    ours = apply_delta(
        start,
        aggregate(AggregationRule(), deltas, weights, statistics=("bn.running_mean",)),
    )
    assert list(ours) == names
    ref = ref_global(ref_flat(start).astype(np.float32), rows, weights, stats_mask)
    assert np.array_equal(ref_flat(ours).astype(np.float32), ref)
    # terms without the statistics setting: averaged like the rest
    old = apply_delta(
        start,
        aggregate(
            AggregationRule.from_terms({"name": "weighted"}),
            deltas,
            weights,
            statistics=("bn.running_mean",),
        ),
    )
    assert np.array_equal(
        ref_flat(old).astype(np.float32),
        ref_global(ref_flat(start).astype(np.float32), rows, weights),
    )


def ref_codes(delta: dict[str, np.ndarray]) -> np.ndarray:
    """The README's codes: per tensor, in sorted name order, round(t * (127 / max|t|))."""
    out = []
    for name in sorted(delta):
        t = delta[name].astype(np.float64).reshape(-1)
        amax = float(np.abs(t).max()) if t.size else 0.0
        out.append(np.round(t * (127 / amax)) if amax > 0 else np.zeros_like(t))
    return np.concatenate(out)


def ref_copies(
    ups: list[tuple[str, str, dict[str, np.ndarray]]],
    cosine: float,
    relative_l2: float,
    scaled: float | None,
    support: float | None = None,
    overlap: float | None = None,
    either: bool = False,
) -> dict[str, str]:
    """The README's duplicate rule over (site, sha256, tensors) in commit order (``either``:
    ``duplicates.either_order``; no white-noise test)."""

    def is_sparse(d: dict[str, np.ndarray]) -> bool:
        # each matrix cut to its rows and columns holding a nonzero value; > half of all 0
        total = zeros = 0
        for k in sorted(d):
            t = d[k]
            m = t.reshape(t.shape[0], -1) != 0 if t.ndim >= 2 else None
            size = t.size if m is None else int(m.any(1).sum()) * int(m.any(0).sum())
            total, zeros = total + size, zeros + size - int(np.count_nonzero(t))
        return 2 * zeros > total

    def kept_largest(od: dict[str, np.ndarray], d: dict[str, np.ndarray]) -> bool:
        a_all = flat(od)
        hits = kept = at = 0
        for k in sorted(d):
            on = d[k].reshape(-1) != 0
            a = np.abs(a_all[at : at + on.size])
            at += on.size
            n = int(on.sum())
            if n:
                m = np.sort(a)[-n]  # the n-th largest |a| of the tensor
                hits += int(np.sum(on & (a != 0) & (a >= m)))
                kept += n
        return kept > 0 and hits / kept > overlap

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b) / (float(np.linalg.norm(a)) * float(np.linalg.norm(b)))

    def flat(d: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([d[k].astype(np.float64).reshape(-1) for k in sorted(d)])

    def sparse_tests(od: dict[str, np.ndarray], d: dict[str, np.ndarray]) -> bool:
        """``d`` repeats the original ``od`` by support_cosine or support_overlap."""
        a, b = flat(od), flat(d)
        if support is not None:
            # a' = the original with every entry where b is 0 set to 0, when that changes it
            kept = {k: np.where(d[k] != 0, od[k].astype(np.float64), 0.0) for k in od}
            ak = flat(kept)
            applies = not np.array_equal(ak, a) and np.linalg.norm(ak) > 0
            if (
                applies
                and np.linalg.norm(b) > 0
                and max(cos(ak, b), cos(ref_codes(kept), ref_codes(d))) > support
            ):
                return True
        return overlap is not None and len(a) == len(b) and is_sparse(d) and kept_largest(od, d)

    originals: list[tuple[str, str, dict[str, np.ndarray]]] = []
    out: dict[str, str] = {}
    for site, sha, d in ups:
        b = flat(d)
        for osite, osha, od in originals:
            a = flat(od)
            same = osha == sha or np.array_equal(a, b)
            if not same and np.linalg.norm(a) > 0 and np.linalg.norm(b) > 0:
                c = cos(a, b)
                same = c > cosine and np.linalg.norm(b - a) / np.linalg.norm(a) < relative_l2
                if scaled is not None:
                    same = same or c > scaled or cos(ref_codes(od), ref_codes(d)) > scaled
            if not same and len(a) == len(b):
                same = sparse_tests(od, d)
            if same:
                out[site] = osite
                break
        else:
            if either:  # the sparse tests the other way round: d the original
                for osite, _, od in originals:
                    if osite not in out and flat(od).size == b.size and sparse_tests(d, od):
                        out[osite] = site
            originals.append((site, sha, d))
    return out


def test_the_duplicate_rule_follows_the_readme() -> None:
    """Scaled, recoded and noisy copies and near-honest pairs, decided by the README's text and
    by find_duplicates alike (copies sent sparser, a90, and those with noise on the entries
    they keep, a93, too); under the rules of terms without ``support_overlap``, without
    ``support_cosine`` and without ``scaled_cosine`` as well."""
    from fedtrail.ml.models import ModelSpec
    from fedtrail.protocol.duplicates import Entry, codes, find_duplicates
    from fedtrail.protocol.terms import DuplicateRule
    from fedtrail.storage.codec import Compression, decode_update, encode_update

    spec = ModelSpec()
    gen = torch.Generator().manual_seed(5)
    shapes: dict[str, tuple[int, ...]] = {
        "conv1.weight": (16, 1, 3, 3),
        "conv1.bias": (16,),
        "conv2.weight": (32, 16, 3, 3),
        "conv2.bias": (32,),
        "fc1.weight": (64, 1568),
        "fc1.bias": (64,),
        "fc2.weight": (2, 64),
        "fc2.bias": (2,),
    }

    def noisy(d: dict[str, torch.Tensor], level: float) -> dict[str, torch.Tensor]:
        return {k: v + level * v.std() * torch.randn(v.shape, generator=gen) for k, v in d.items()}

    base = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        base[name] = t * t.abs() * 1e-3  # heavy-tailed, as trained updates are
    blob = encode_update(
        base, spec=spec, round=1, compression=Compression(method="topk8", fraction=1.0)
    ).blob
    recoded = decode_update(blob, spec=spec, expected_round=1)[0]
    other = noisy(base, 0.02)  # 2% apart: not a copy under any rule here
    half = encode_update(
        base, spec=spec, round=1, compression=Compression(method="topk8", fraction=0.5)
    ).blob
    sparse = decode_update(half, spec=spec, expected_round=1)[0]  # a90's copy

    def topk(d: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
        comp = Compression(method="topk8", fraction=fraction)
        blob = encode_update(d, spec=spec, round=1, compression=comp).blob
        return decode_update(blob, spec=spec, expected_round=1)[0]

    tenth = topk(other, 0.1)
    # a93's copy: e's copy at 0.1 with noise of 5% of its norm on the entries it keeps
    level = 0.05 * float(torch.cat([v.reshape(-1) for v in tenth.values()]).norm())
    kept = sum(int((v != 0).sum()) for v in tenth.values())
    noisy_tenth = topk(
        {
            k: torch.where(v != 0, v + level / kept**0.5 * torch.randn(v.shape, generator=gen), v)
            for k, v in tenth.items()
        },
        0.1,
    )
    fresh = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        fresh[name] = t * t.abs() * 1e-3
    ups = {
        "a": base,
        "b": {k: v * 1.01 for k, v in base.items()},
        "c": recoded,
        "d": noisy(base, 0.002),
        "e": other,
        "f": {k: v * 3 for k, v in other.items()},
        "g": sparse,
        "h": {k: torch.where(v.abs() > v.abs().median(), v, 0.0) for k, v in other.items()},
        "i": noisy_tenth,
        "j": topk({k: v + 0.5 * base[k] for k, v in fresh.items()}, 0.05),  # other data
    }
    assert np.array_equal(
        ref_codes({k: v.numpy() for k, v in recoded.items()}), codes(recoded).numpy()
    )
    entries = []
    ref_in = []
    for i, (site, d) in enumerate(ups.items()):
        entries.append(Entry(site, i + 1, f"{i:064x}", d))
        ref_in.append((site, f"{i:064x}", {k: v.numpy() for k, v in d.items()}))
    # the white-noise test (white_noise_z) is the reader's (test_freeride_noise_reference):
    # here the rules before it, on these random updates (whose pairs' residuals are white)
    # (and before shared_tensor, also the reader's, after them)
    no_white = DuplicateRule(white_noise_z=None, shared_tensor=None)
    old = DuplicateRule(
        scaled_cosine=None,
        support_cosine=None,
        support_overlap=None,
        white_noise_z=None,
        shared_tensor=None,
        either_order=None,
    )
    no_support = DuplicateRule(
        support_cosine=None,
        support_overlap=None,
        white_noise_z=None,
        shared_tensor=None,
        either_order=None,
    )
    no_overlap = DuplicateRule(
        support_overlap=None, white_noise_z=None, shared_tensor=None, either_order=None
    )
    for rule in (no_white, no_overlap, no_support, old):
        ours = find_duplicates(entries, rule)
        assert ours == ref_copies(
            ref_in,
            rule.cosine,
            rule.relative_l2,
            rule.scaled_cosine,
            rule.support_cosine,
            rule.support_overlap,
            bool(rule.either_order),
        )
    assert find_duplicates(entries, no_white) == {
        **{"b": "a", "c": "a", "d": "a", "f": "e"},
        # i keeps e's largest entries, which are a's too (e is a plus 2% noise)
        **{"g": "a", "h": "e", "i": "a"},
    }
    # the near misses: without support_overlap the noisy sparse copy is paid; without
    # support_cosine the sparser copies too; without scaled_cosine as well (terms before all
    # three) every copy
    assert find_duplicates(entries, no_overlap) == {
        **{"b": "a", "c": "a", "d": "a", "f": "e"},
        **{"g": "a", "h": "e"},
    }
    assert find_duplicates(entries, no_support) == {"b": "a", "c": "a", "d": "a", "f": "e"}
    assert find_duplicates(entries, old) == {}


def _independent_reader() -> object:
    """``scripts/independent/reader.py``, loaded as a module (it imports no fedtrail)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"
    spec = importlib.util.spec_from_file_location("independent_reader_eo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", range(12))
def test_either_order_follows_the_readme_in_the_product_and_the_reader(seed: int) -> None:
    """Random rounds of dense updates, their sparse copies (top entries kept, entries zeroed,
    noise on the kept entries), scaled copies and sparse updates of other data, in a random
    commit order: the README's rule written out here, the independent reader and
    find_duplicates mark the same copies under ``either_order`` and under the one-way rule;
    a sparse copy committed before its original is marked only under ``either_order`` and no
    dense update is ever marked by the reversed test."""
    from fedtrail.protocol.duplicates import Entry, find_duplicates
    from fedtrail.protocol.terms import DuplicateRule

    reader = _independent_reader()
    rng = np.random.default_rng(seed)
    shapes = {"c.weight": (8, 1, 3, 3), "c.bias": (8,), "f.weight": (16, 40), "f.bias": (16,)}

    def update() -> dict[str, np.ndarray]:
        out = {}
        for k, s in shapes.items():
            t = rng.standard_normal(s)
            out[k] = (t * np.abs(t) * 1e-3).astype(np.float32)
        return out

    def top(d: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
        out = {}
        for k, v in d.items():
            flat = v.reshape(-1)
            n = max(1, round(fraction * flat.size))
            keep = np.argsort(-np.abs(flat), kind="stable")[:n]
            z = np.zeros_like(flat)
            z[keep] = flat[keep]
            out[k] = z.reshape(v.shape)
        return out

    def noisy_kept(d: dict[str, np.ndarray], level: float) -> dict[str, np.ndarray]:
        return {
            k: np.where(
                v != 0, v + level * np.abs(v).max() * rng.standard_normal(v.shape), 0.0
            ).astype(np.float32)
            for k, v in d.items()
        }

    bases = [update() for _ in range(3)]
    pool: list[dict[str, np.ndarray]] = [*bases]
    for b in bases[:2]:
        kind = int(rng.integers(4))
        if kind == 0:
            pool.append(top(b, float(rng.choice([0.05, 0.1, 0.3, 0.5]))))
        elif kind == 1:
            pool.append(
                {
                    k: np.where(rng.random(v.shape) < 0.4, 0.0, v).astype(np.float32)
                    for k, v in b.items()
                }
            )
        elif kind == 2:
            pool.append(noisy_kept(top(b, 0.1), 0.05))
        else:
            pool.append({k: (v * 1.01).astype(np.float32) for k, v in b.items()})
    pool.append(top(update(), 0.1))  # other data, sent sparse
    pool.append(top({k: v + 0.5 * bases[2][k] for k, v in update().items()}, 0.1))
    order = rng.permutation(len(pool)).tolist()
    ups = [(f"s{i}", f"{i:064x}", pool[i]) for i in order]
    entries = [
        Entry(site, n + 1, sha, {k: torch.from_numpy(v) for k, v in d.items()})
        for n, (site, sha, d) in enumerate(ups)
    ]
    dense = {f"s{i}" for i in range(3)}
    for either in (True, None):
        rule = DuplicateRule(white_noise_z=None, either_order=either)
        ours = find_duplicates(entries, rule)
        readme = ref_copies(
            ups,
            rule.cosine,
            rule.relative_l2,
            rule.scaled_cosine,
            rule.support_cosine,
            rule.support_overlap,
            bool(either),
        )
        theirs = reader.duplicate_copies(ups, rule.to_json())  # type: ignore[attr-defined]
        assert ours == readme == theirs, (either, order)
        if either:
            one_way = find_duplicates(entries, DuplicateRule(white_noise_z=None, either_order=None))
            # every one-way mark kept; the marks added are of earlier updates by later ones
            assert one_way.items() <= ours.items()
            position = {site: n for n, (site, _, _) in enumerate(ups)}
            for site, original in ours.items() - one_way.items():
                assert position[site] < position[original] and site not in dense
