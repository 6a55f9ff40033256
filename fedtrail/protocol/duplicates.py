"""Which updates of a round repeat an earlier one: decided by commit order, never by address.

Commit order is the chain order of the round's ``UpdateCommitted`` events: nobody can see an
update before the commit window closes, so the earliest commitment is the original and every
later byte-identical or numerically near-identical update is the copy. The aggregator marks the
copies DUPLICATE before valuing the round and an auditor re-derives the same marks from the
same public data, with the thresholds the round's terms name
(:class:`~fedtrail.protocol.terms.DuplicateRule`). One exception to "the earlier is the
original": under ``either_order`` the sparse tests also run the other way round, so a sparse
copy committed before its dense original is the copy (attack a99).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, Protocol

import numpy as np
import torch

from fedtrail.errors import ConfigError
from fedtrail.protocol.sums import deterministic_sum
from fedtrail.protocol.terms import (
    DUPLICATE_WHITE_MIN_COSINE,
    SHARED_TENSOR_MIN_SIZE,
    SHARED_TENSOR_SQUARED,
    DuplicateRule,
)

__all__ = [
    "CODE_LEVELS",
    "Entry",
    "codes",
    "find_duplicates",
    "kept_largest_of",
    "near_identical",
    "shared_tensor",
    "sparse",
    "support_copy",
    "support_copy_of",
    "support_overlap",
]

CODE_LEVELS: Final = 127.0
"""``topk8``'s int8 levels: :func:`codes` maps each tensor's largest magnitude to this."""


@dataclass(frozen=True)
class Entry:
    """One revealed update: its site, commit order (1-based), content sha256 and decoded
    delta (None when it could not be used; such an update is nobody's original);
    ``noise_declared``: its header declares DP-SGD (its Gaussian noise is declared: as the later
    update the white-noise test applies to it only under the rule's
    ``white_noise_dp_cosine``)."""

    site: str
    commit_order: int
    sha256: str
    delta: Mapping[str, torch.Tensor] | None
    noise_declared: bool = False


def _flat(delta: Mapping[str, torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """``delta``'s tensors widened to float64 and flattened, in sorted name order, written
    into one fresh tensor (the values of concatenating each widened tensor, without them), or
    into ``out`` (float64, of as many values: every one of them written)."""
    names = sorted(delta)
    if not names:
        return torch.cat([])  # raises, as concatenating no tensors does
    width = sum(delta[n].numel() for n in names)
    if out is None or out.shape != (width,) or out.dtype != torch.float64:
        out = torch.empty(width, dtype=torch.float64)
    at = 0
    for n in names:
        t = delta[n].detach().reshape(-1)
        out[at : at + t.numel()].copy_(t)  # widened exactly, as .to(float64)
        at += t.numel()
    return out


def _nonzero_flat(delta: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Where :func:`_flat` of ``delta`` is nonzero, without widening it (widening keeps every 0
    and every nonzero value)."""
    return torch.cat([(delta[n].detach().to("cpu") != 0).reshape(-1) for n in sorted(delta)])


def _numel(delta: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in delta.values())


SCREEN_CHUNK = 512
"""Columns per float32 block of the screen's Gram products (:func:`_gram`). A dot product of
``c`` float32 products errs by at most gamma_c = c * 2**-24 / (1 - c * 2**-24) of the sum of
their magnitudes, in any summation order (Higham), so a block's error stays below 3.1e-5 of
``||a|| ||b||`` whatever the model's size; the blocks' sums are added in float64. ``codes`` are
integers of magnitude <= 127, so a block of their products sums to below 512 * 127**2 < 2**24:
exact in float32, in any order."""

_SCREEN_RANGE = (1e-10, 1e15)
"""A row joins the float32 screen only when its largest magnitude lies in this range: no
product or block sum overflows float32 (512 * 1e30), and values and products lost to underflow
(at most ``2**-150`` each, so ``n * 2**-150`` in a dot product of ``n`` terms) move a cosine by
at most ``n * 2**-150 / 1e-20``, below 1e-16 for any model that fits in memory; rows outside it
are left to the exact rule."""


def _screen_margin(chunk: int) -> float:
    """How far below the rule's threshold a screened cosine must lie for its pair to be skipped:
    a float32 block's error in ``a.b`` and in each squared norm (2 gamma in cosine), float64
    values rounded to float32 (at most 2**-24 relative per value: 4 * 2**-24 in cosine),
    underflow (1e-9), and the exact rule's own float64 rounding (:data:`SCREEN_MARGIN`)."""
    gamma = chunk * 2.0**-24 / (1 - chunk * 2.0**-24)
    return 2 * gamma / (1 - gamma) + 4 * 2.0**-24 + 1e-9 + SCREEN_MARGIN


def _gram(matrix: torch.Tensor, chunk: int = SCREEN_CHUNK) -> torch.Tensor:
    """``matrix @ matrix.T`` (float32 rows), in float64: one float32 product per block of
    ``chunk`` columns, the blocks added in float64 (see :data:`SCREEN_CHUNK`)."""
    k, width = matrix.shape
    gram = torch.zeros((k, k), dtype=torch.float64)
    for at in range(0, width, chunk):
        block = matrix[:, at : at + chunk]
        gram += (block @ block.T).to(torch.float64)
    return gram


def _fill_plain(delta: Mapping[str, torch.Tensor], row: torch.Tensor) -> bool:
    """``delta`` flat in name order written into float32 ``row`` (float16 and float32 values
    exactly, float64 ones rounded); whether the row may be screened (:data:`_SCREEN_RANGE`)."""
    at = 0
    for name in sorted(delta):
        t = delta[name].detach().reshape(-1)
        row[at : at + t.numel()].copy_(t)
        at += t.numel()
    if not row.numel():
        return False
    low, high = torch.aminmax(row)
    amax = max(-float(low), float(high))
    return _SCREEN_RANGE[0] <= amax <= _SCREEN_RANGE[1]


def _fill_codes(
    delta: Mapping[str, torch.Tensor], row: torch.Tensor, scratch: torch.Tensor | None = None
) -> bool:
    """:func:`codes` of ``delta`` written into float32 ``row`` (integers of magnitude <= 127:
    exact), computed in float64 ``scratch`` (of the row's length) with the same operations in
    the same order, so the same values; whether the row may be screened (not all zeros)."""
    if scratch is None:
        scratch = torch.empty(row.numel(), dtype=torch.float64)
    at, nonzero = 0, False
    for name in sorted(delta):
        t = delta[name].detach().reshape(-1)
        part = scratch[at : at + t.numel()]
        part.copy_(t)  # widened exactly, as codes' .to(float64)
        amax = 0.0
        if t.numel():
            low, high = torch.aminmax(part)  # the largest magnitude, exactly (no arithmetic)
            amax = max(-float(low), float(high))
        if amax > 0.0:
            part.mul_(CODE_LEVELS / amax).round_()
            nonzero = True
        else:
            part.zero_()
        at += t.numel()
    row.copy_(scratch)
    return nonzero


def _screen(
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    width: int,
    fill: Callable[[Mapping[str, torch.Tensor], torch.Tensor], bool],
    floor: float,
    buffer: torch.Tensor | None = None,
) -> tuple[set[tuple[int, int]], torch.Tensor | None]:
    """Pairs ``(i, j)``, ``i < j``, certainly not near-identical: both of length ``width``,
    both screenable rows (``fill``), and a screening cosine of their float32 rows below
    ``floor`` less :func:`_screen_margin`, so below ``floor`` exactly as well (not equal
    either: equal updates have cosine 1). Returns the pairs and the float32 buffer the rows were
    written into (``buffer`` when given and large enough), for the next screen to reuse."""
    candidates = [i for i, d in enumerate(deltas) if d is not None and _numel(d) == width]
    if len(candidates) < 2 or width == 0:
        return set(), buffer
    if buffer is None or buffer.shape[0] < len(candidates) or buffer.shape[1] != width:
        buffer = torch.empty((len(candidates), width), dtype=torch.float32)
    idx: list[int] = []
    for i in candidates:
        delta = deltas[i]
        if delta is not None and fill(delta, buffer[len(idx)]):
            idx.append(i)
    if len(idx) < 2:
        return set(), buffer
    gram = _gram(buffer[: len(idx)])
    scale = gram.diagonal().sqrt()
    if not bool((scale > 0).all()) or not bool(torch.isfinite(gram).all()):
        return set(), buffer
    cosines = gram / torch.outer(scale, scale)
    below = (cosines < floor - _screen_margin(SCREEN_CHUNK)).tolist()
    pairs = {
        (idx[a], idx[b]) for a in range(len(idx)) for b in range(a + 1, len(idx)) if below[a][b]
    }
    return pairs, buffer


SCREEN_GROUP: Final = 32
"""At most this many later updates are screened together by :class:`_Screens` (one blocked
product of their rows against the originals' and their own)."""


def _blocked(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``left @ right.T`` (float32 rows of one width), in float64: each entry the sum, in
    float64, of one float32 dot product per block of :data:`SCREEN_CHUNK` columns, as
    :func:`_gram` takes it (any summation order within a block: the same error bound), the
    blocks' products in one batched call."""
    width = left.shape[1]
    whole = width - width % SCREEN_CHUNK
    out = torch.zeros((left.shape[0], right.shape[0]), dtype=torch.float64)
    if whole:
        a = left[:, :whole].reshape(left.shape[0], -1, SCREEN_CHUNK).transpose(0, 1)
        b = right[:, :whole].reshape(right.shape[0], -1, SCREEN_CHUNK).transpose(0, 1)
        out += torch.bmm(a, b.transpose(1, 2)).to(torch.float64).sum(0)
    if whole < width:
        out += (left[:, whole:] @ right[:, whole:].T).to(torch.float64)
    return out


def _blocked_squares(row: torch.Tensor) -> float:
    """A float32 row's sum of squares as :func:`_blocked` takes the row with itself: one
    float32 dot product per block of :data:`SCREEN_CHUNK` columns (batched, no copy of the
    row), the blocks added in float64."""
    width = row.numel()
    whole = width - width % SCREEN_CHUNK
    total = 0.0
    if whole:
        blocks = row[:whole].reshape(-1, 1, SCREEN_CHUNK)
        products = torch.bmm(blocks, blocks.transpose(1, 2)).reshape(-1)
        total += float(products.to(torch.float64).sum())
    if whole < width:
        total += float(torch.dot(row[whole:], row[whole:]))
    return total


class _Screens:
    """The screen of :func:`_screen`, taken only for the pairs :func:`find_duplicates` asks
    about: each later update against the originals before it (not every pair of the round).

    A pair ``(i, j)`` is *apart* when both updates have ``width`` values and screenable rows
    under every ``fill`` (the plain rows, and the codes' for a rule with ``scaled_cosine``),
    and in every screen the cosine of their float32 rows (:func:`_blocked`, the same blocks and
    bound as :func:`_gram`) lies below ``floor`` less :func:`_screen_margin`: then it is below
    ``floor`` exactly, so the exact rule would reject the pair. Any pair the screen did not
    compute is not apart (the exact rule decides it), so which pairs are computed changes no
    verdict. The first time a later update ``j`` is asked about, it and up to as many later
    updates of that width as there are originals (at most :data:`SCREEN_GROUP`) are filled and
    compared at once with the originals' rows and with each other: a round of 99 copies of one
    update compares 99 pairs, not 4,950; a round of originals about half the pairs of the
    whole Gram product. The originals' rows are kept (one buffer per screen, filled as needed:
    its pages are touched only for the rows written)."""

    def __init__(
        self,
        deltas: Sequence[Mapping[str, torch.Tensor] | None],
        width: int,
        fills: Sequence[Callable[[Mapping[str, torch.Tensor], torch.Tensor], bool]],
        floor: float,
    ) -> None:
        self._deltas = deltas
        self._width = width
        self._fills = fills
        self._limit = floor - _screen_margin(SCREEN_CHUNK)
        self._candidates = [i for i, d in enumerate(deltas) if d is not None and _numel(d) == width]
        self._is_candidate = set(self._candidates)
        self._room = len(self._candidates)
        # the originals' rows first (in the order of ``originals``), then the group's; as many
        # rows as the originals so far and one group need (:meth:`_grow`), not one per update:
        # a 100-site round's two screens of 100 rows were 84 MB, mapped fresh on every call
        self._rows = [torch.empty((0, width), dtype=torch.float32) for _ in fills]
        self._kept: list[int] = []  # originals whose rows are ``_rows[:len(_kept)]``, in order
        self._group: dict[int, int] = {}  # screened group member -> its row in ``_rows``
        self._inner = False  # whether the group was compared with itself
        self._squares: dict[int, list[float]] = {}  # screenable update -> each screen's
        self._unscreenable: set[int] = set()
        self._apart: dict[int, set[int]] = {}  # later update -> the earlier ones apart from it

    def _fill(self, i: int, rows: Sequence[torch.Tensor], at: int) -> bool:
        """Update ``i``'s row in every screen written at row ``at`` of ``rows``, with its sums
        of squares (:func:`_blocked_squares`, taken while the row is in cache); whether it is
        screenable in all of them."""
        delta = self._deltas[i]
        assert delta is not None
        squares = []
        for fill, buffer in zip(self._fills, rows, strict=True):
            if not fill(delta, buffer[at]):
                self._unscreenable.add(i)
                return False
            squares.append(_blocked_squares(buffer[at]))
        self._squares[i] = squares
        return True

    def apart(self, i: int, j: int, originals: Sequence[int]) -> bool:
        """Whether earlier update ``i`` (one of ``originals``, the originals before ``j`` in
        order) is certainly not near-identical to ``j``."""
        if j not in self._apart:
            if j not in self._is_candidate or not self._width:
                return False
            self._screen_from(j, originals)
        if not self._inner and i in self._group and j in self._group:
            self._inner = True  # an original of j's group: the group against itself, once
            m, g = len(self._kept), len(self._group)
            rows = [buffer[m : m + g] for buffer in self._rows]
            self._compare(list(self._group), rows, list(self._group), rows)
        return i in self._apart[j]

    def _compare(
        self,
        earlier: Sequence[int],
        earlier_rows: Sequence[torch.Tensor],
        later: Sequence[int],
        later_rows: Sequence[torch.Tensor],
    ) -> None:
        """Every pair of ``earlier`` (by row of ``earlier_rows``, one per screen) and
        ``later`` (by row of ``later_rows``), earlier index first, that the screens show apart,
        added to :attr:`_apart`."""
        below: torch.Tensor | None = None
        for s, (left, right) in enumerate(zip(earlier_rows, later_rows, strict=True)):
            sq_left = torch.tensor([self._squares[i][s] for i in earlier], dtype=torch.float64)
            sq_right = torch.tensor([self._squares[k][s] for k in later], dtype=torch.float64)
            dots = _blocked(left, right)
            scale = torch.outer(sq_left.sqrt(), sq_right.sqrt())
            ok = (scale > 0) & torch.isfinite(dots) & torch.isfinite(scale)
            cosine = torch.where(ok, dots / torch.where(ok, scale, 1.0), math.inf)
            screen = cosine < self._limit
            below = screen if below is None else below & screen
        if below is None:
            return
        for c, row in enumerate(below.T.tolist()):
            k = later[c]
            self._apart[k].update(i for i, b in zip(earlier, row, strict=True) if b and i < k)

    def _grow(self, need: int) -> None:
        """Room for ``need`` rows (at most one per candidate) in every screen's buffer, the rows
        in use (the kept originals' and the last group's) copied over when it grows: first
        as many as asked, then one per candidate (held beside the first while it is copied:
        at most ``1 + SCREEN_GROUP`` rows more than the whole round's buffer at once)."""
        need = min(need, self._room)
        have = self._rows[0].shape[0]
        if need <= have:
            return
        size = need if not have else self._room
        used = len(self._kept) + len(self._group)
        grown = []
        for rows in self._rows:
            wider = torch.empty((size, self._width), dtype=torch.float32)
            wider[:used].copy_(rows[:used])
            grown.append(wider)
        self._rows = grown

    def _screen_from(self, j: int, originals: Sequence[int]) -> None:
        # room for every original's row and a group's after them
        self._grow(len(originals) + SCREEN_GROUP)
        # the originals' rows first, in order: the last group's new originals moved down to
        # follow them (in place when no copy came between), any other filled now (each row
        # moved or written lies at or below where it was, over a copy's or an unused row)
        kept = set(self._kept)
        for i in originals:
            if i in kept or i not in self._is_candidate or i in self._unscreenable:
                continue
            at = len(self._kept)
            was = self._group.get(i)
            if was is None:
                if not self._fill(i, self._rows, at):
                    continue
            elif was != at:
                for rows in self._rows:
                    rows[at].copy_(rows[was])
            self._kept.append(i)
            kept.add(i)
        # the group: ``j`` and the next later updates of this width, in the rows after them
        m = len(self._kept)
        start = bisect.bisect_left(self._candidates, j)
        self._group, self._inner = {}, False
        for k in self._candidates[start : start + SCREEN_GROUP]:
            self._apart[k] = set()
            if self._fill(k, self._rows, m + len(self._group)):
                self._group[k] = m + len(self._group)
        g = len(self._group)
        if g and m:
            left = [rows[:m] for rows in self._rows]
            self._compare(self._kept, left, list(self._group), [r[m : m + g] for r in self._rows])


def codes(delta: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The update's int8 codes, flat in name order: each tensor divided by its largest
    magnitude, times :data:`CODE_LEVELS`, rounded (zeros for a zero tensor), as ``topk8`` at
    fraction 1 quantises it, in float64. Scaling a tensor leaves its codes unchanged and a
    recoded copy has exactly its original's codes, so :attr:`DuplicateRule.scaled_cosine`
    compares them too: the int8 rounding moved a recoded copy's plain cosine as far as 2.4e-4
    from 1, further than two honest updates of skewed sites came (7e-5). Their dot products
    are sums of integers below 2**53, exact in any order."""
    out = []
    for name in sorted(delta):
        t = delta[name].detach().to("cpu", torch.float64).reshape(-1)
        amax = float(t.abs().max()) if t.numel() else 0.0
        out.append(torch.round(t * (CODE_LEVELS / amax)) if amax > 0.0 else torch.zeros_like(t))
    return torch.cat(out)


def near_identical(
    a: torch.Tensor,
    b: torch.Tensor,
    rule: DuplicateRule,
    codes_a: torch.Tensor | None = None,
    codes_b: torch.Tensor | None = None,
) -> bool:
    """Whether flat updates ``a`` (the earlier) and ``b`` are the same update under ``rule``:
    equal, or cosine > rule.cosine and ||b - a|| / ||a|| < rule.relative_l2, or (when the rule
    has a ``scaled_cosine``) cosine, or cosine of their :func:`codes` ``codes_a`` and
    ``codes_b``, > rule.scaled_cosine."""
    if a.shape != b.shape:
        return False
    coded = None
    if rule.scaled_cosine is not None and codes_a is not None and codes_b is not None:
        coded = (codes_a, codes_b, float(codes_a.norm()), float(codes_b.norm()))
    return _near(a, b, float(a.norm()), float(b.norm()), rule, coded)


def _near(
    a: torch.Tensor,
    b: torch.Tensor,
    na: float,
    nb: float,
    rule: DuplicateRule,
    coded: tuple[torch.Tensor, torch.Tensor, float, float] | None = None,
) -> bool:
    """:func:`near_identical` of same-shape ``a`` and ``b`` given their norms (and, for a rule
    with ``scaled_cosine``, their codes and the codes' norms)."""
    if torch.equal(a, b):
        return True
    if na == 0.0 or nb == 0.0:
        return False
    cosine = float(torch.dot(a, b)) / (na * nb)
    scaled = rule.scaled_cosine
    if scaled is not None:
        if cosine > scaled:
            return True
        if coded is not None:
            ca, cb, nca, ncb = coded
            if nca > 0.0 and ncb > 0.0 and float(torch.dot(ca, cb)) / (nca * ncb) > scaled:
                return True
    return cosine > rule.cosine and float((b - a).norm()) / na < rule.relative_l2


def _flat_codes(flat: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """:func:`codes` of a float64 flat update whose tensors (in sorted name order) have
    ``sizes`` entries: the same operations, tensor by tensor."""
    out = torch.zeros_like(flat)
    at = 0
    for size in sizes:
        t = flat[at : at + size]
        amax = float(t.abs().max()) if size else 0.0
        if amax > 0.0:
            out[at : at + size] = torch.round(t * (CODE_LEVELS / amax))
        at += size
    return out


def support_copy(
    a: torch.Tensor,
    b: torch.Tensor,
    sizes: Sequence[int],
    threshold: float,
    codes_b: torch.Tensor | None = None,
) -> bool:
    """Whether the later flat update ``b`` repeats the earlier ``a`` on the entries it carries
    (:attr:`DuplicateRule.support_cosine` ``threshold``): ``a`` with every entry where ``b`` is
    0 set to 0 (``a'``) differs from ``a`` (``b`` leaves some of its nonzero entries out), is
    nonzero, and has cosine to ``b``, or codes' cosine (:func:`codes`, tensor by tensor of
    ``sizes`` entries, of ``a'`` itself) to ``b``'s, above ``threshold``. A copy sent through
    ``topk8`` at a fraction below 1 keeps the largest entries of each tensor, so its codes are
    its original's there exactly (a90)."""
    if a.shape != b.shape:
        return False
    kept = torch.where(b != 0, a, torch.zeros((), dtype=a.dtype))
    if torch.equal(kept, a):
        return False  # nothing left out: the other tests already compared a and b
    na, nb = float(kept.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return False
    if float(torch.dot(kept, b)) / (na * nb) > threshold:
        return True
    ca = _flat_codes(kept, sizes)
    cb = _flat_codes(b, sizes) if codes_b is None else codes_b
    nca, ncb = float(ca.norm()), float(cb.norm())
    return nca > 0.0 and ncb > 0.0 and float(torch.dot(ca, cb)) / (nca * ncb) > threshold


SPARSE_SHARE: Final = 0.5
"""An update is *sparse* (:func:`sparse`) when more than this share of its values outside its
all-zero rows and columns are 0 (honest dense updates: at most 0.097; honest ``topk8`` at
fraction 0.5 and 1: at most 0.36; at 0.05: 0.53 and more; ``scripts/bench/support_overlap.py``).
The one definition for both its uses: a later update's kept-entries rule (:func:`support_overlap`)
and the free-rider screen's shaped-noise test, which leaves sparse updates out
(``fedtrail.valuation.freeride``; there honest sparse updates scored 8.8 to 776 on the test,
inside the copies' range: ``scripts/bench/noisy_copy.py --compression topk8``)."""


def _zeros(
    delta: Mapping[str, torch.Tensor], nonzero: Sequence[int] | None = None
) -> tuple[int, int]:
    """``(zeros, values)`` of :func:`zero_share`: the values outside ``delta``'s all-zero rows
    and columns and how many of them are 0. ``nonzero``: :func:`_nonzero_counts` of ``delta``
    when the caller holds them (a tensor with no 0, or no nonzero value, is then not read)."""
    total = zeros = 0
    for k, name in enumerate(sorted(delta)):
        t = delta[name].detach()
        mask = None
        if nonzero is None:
            mask = t != 0
            count = int(mask.sum())
        else:
            count = nonzero[k]
        if t.dim() < 2 or count == 0:
            # a tensor of no nonzero value is all-zero rows (or none): nothing of it is counted
            size = t.numel() if t.dim() < 2 else 0
        elif count == t.numel():
            # no 0 at all: no row or column is all zero, so the kept block is the whole tensor
            size = count
        else:
            # every nonzero value lies in a row and a column that are not all zero, so the kept
            # block (those rows by those columns) holds them all: its size minus them is its
            # zeros (the same integers as counting the block's zeros; no copy of it)
            m = (t != 0 if mask is None else mask).reshape(t.shape[0], -1)
            size = int(m.any(dim=1).sum()) * int(m.any(dim=0).sum())
        total += size
        zeros += size - count
    return zeros, total


def zero_share(delta: Mapping[str, torch.Tensor]) -> float:
    """The share of ``delta``'s values outside its all-zero rows and columns that are exactly
    0: each tensor of two or more dimensions seen as a matrix (first index by the rest) cut to
    its rows and columns that hold a nonzero value, the others whole, the counts added over the
    tensors (0 for an update of no values). A ``topk8`` update keeps 5% of each tensor by
    default, scattered (share 0.53-0.95 measured); a dense update's dead units zero whole rows
    and columns, which are not counted."""
    zeros, total = _zeros(delta)
    return zeros / total if total else 0.0


def sparse(delta: Mapping[str, torch.Tensor], nonzero: Sequence[int] | None = None) -> bool:
    """Whether more than :data:`SPARSE_SHARE` (a half) of ``delta``'s values outside its
    all-zero rows and columns are 0 (:func:`zero_share`; compared in integers). ``nonzero``:
    :func:`_nonzero_counts` of ``delta`` when the caller holds them."""
    zeros, total = _zeros(delta, nonzero)
    return total > 0 and 2 * zeros > total


@dataclass(frozen=True)
class _Kept:
    """A flat update's nonzero entries for :func:`support_overlap`: their positions, the
    tensors (by position in ``sizes``) that hold ``k > 0`` of them, and each one's ``k``."""

    index: torch.Tensor
    tensors: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def of(cls, b: torch.Tensor, sizes: Sequence[int]) -> _Kept:
        index = torch.nonzero(b).reshape(-1)
        bounds = torch.tensor([0, *sizes], dtype=torch.int64).cumsum(0)
        counts = torch.searchsorted(index, bounds).diff()  # k per tensor
        has = counts > 0
        return cls(index, torch.nonzero(has).reshape(-1), counts[has])


@dataclass(frozen=True)
class _Ranked:
    """An earlier flat update ``a`` for :func:`support_overlap`: ``a`` itself, and each
    tensor's nonzero magnitudes sorted in descending order (``sorted``, tensor after tensor,
    then a sentinel 0: ``offsets`` where each starts, ``nonzero`` how many; ``first`` and
    ``last``: for each place of ``sorted``, the first and last place of its run of equal
    magnitudes within its tensor)."""

    a: torch.Tensor
    sorted: torch.Tensor
    offsets: torch.Tensor
    nonzero: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor

    @classmethod
    def of(cls, a: torch.Tensor, sizes: Sequence[int]) -> _Ranked:
        parts, counts, at = [], [], 0
        for n in sizes:
            part = a[at : at + n]
            part = part[part != 0].abs()
            parts.append(torch.sort(part, descending=True).values)
            counts.append(part.numel())
            at += n
        nonzero = torch.tensor(counts, dtype=torch.int64)
        offsets = nonzero.cumsum(0) - nonzero
        flat = torch.cat([*parts, a.new_zeros(1)])
        # the sentinel is a tensor of its own: a run never crosses tensors
        tensor = torch.repeat_interleave(
            torch.arange(len(sizes) + 1), torch.cat([nonzero, torch.ones(1, dtype=torch.int64)])
        )
        n = flat.numel()
        place = torch.arange(n)
        new = torch.ones(n, dtype=torch.bool)
        new[1:] = (flat[1:] != flat[:-1]) | (tensor[1:] != tensor[:-1])
        ends = torch.ones(n, dtype=torch.bool)
        ends[:-1] = new[1:]
        first = torch.where(new, place, 0).cummax(0).values
        last = torch.where(ends, place, n).flip(0).cummin(0).values.flip(0)
        return cls(a, flat, offsets, nonzero, first, last)

    def tally(
        self, index: torch.Tensor, tensors: torch.Tensor, counts: torch.Tensor
    ) -> list[int | Fraction]:
        """For each group of later entries (positions ``index``, grouped tensor by tensor:
        group ``g`` holds ``counts[g]`` of them, all in tensor ``tensors[g]``) their hits: 1
        for each at which ``|a|`` is above the tensor's ``k``-th largest nonzero magnitude
        ``m`` (``k`` the group's count; when the tensor has fewer than ``k``, ``m`` is 0 and
        every nonzero counts 1), ``(k - A) / T`` for each at which ``|a| == m != 0``, ``A``
        and ``T`` the tensor's magnitudes above and equal to ``m`` (ties share the places
        left: they cannot widen the ``k`` largest). Exact: an integer, or a fraction where
        some ties share."""
        mine = self.a.index_select(0, index).abs()
        nonzero = self.nonzero.index_select(0, tensors)
        offset = self.offsets.index_select(0, tensors)
        at = offset + counts - 1
        # past a tensor's nonzero magnitudes the k-th largest is 0: the sentinel at the end
        at = torch.where(counts <= nonzero, at, self.sorted.numel() - 1)
        first, last = self.first.index_select(0, at), self.last.index_select(0, at)
        places = counts - (first - offset)  # k - A (the sentinel's ties never count)
        ties = last - first + 1  # T
        kth = self.sorted.index_select(0, at).repeat_interleave(counts)
        group = torch.arange(counts.numel()).repeat_interleave(counts)
        above = torch.zeros(counts.numel(), dtype=torch.int64).index_add_(
            0, group, (mine > kth).to(torch.int64)
        )
        equal = torch.zeros(counts.numel(), dtype=torch.int64).index_add_(
            0, group, ((mine == kth) & (mine != 0)).to(torch.int64)
        )
        whole = (places == ties) | (equal == 0)  # every tie fits: each counts 1
        shared = torch.nonzero(~whole).reshape(-1).tolist()
        out: list[int | Fraction] = (above + torch.where(whole, equal, 0)).tolist()
        for g in shared:
            out[g] += Fraction(int(equal[g]) * int(places[g]), int(ties[g]))
        return out

    def hits(self, kept: _Kept) -> Fraction:
        """How many of ``kept``'s entries lie among this update's ``k`` largest nonzero
        magnitudes of their tensor (``k`` their count there), ties at the ``k``-th largest
        ``m`` shared: an entry counts 1 where ``|a| > m``, ``(k - A) / T`` where ``|a| == m
        != 0`` (:meth:`tally`), 0 elsewhere; every nonzero counts 1 when the tensor has fewer
        than ``k`` nonzero magnitudes. Exact."""
        return Fraction(sum(self.tally(kept.index, kept.tensors, kept.counts)))


@dataclass(frozen=True)
class _Batch:
    """Several later updates' :class:`_Kept` entries at once (one layout): their positions in
    order, and per (update, tensor) holding some the tensor, the count and whose (``groups``,
    by index)."""

    index: torch.Tensor
    tensors: torch.Tensor
    counts: torch.Tensor
    groups: torch.Tensor
    totals: list[int]

    @classmethod
    def of(cls, kept: Sequence[_Kept]) -> _Batch:
        return cls(
            torch.cat([k.index for k in kept]),
            torch.cat([k.tensors for k in kept]),
            torch.cat([k.counts for k in kept]),
            torch.cat(
                [torch.full((k.counts.numel(),), n, dtype=torch.int64) for n, k in enumerate(kept)]
            ),
            [k.index.numel() for k in kept],
        )

    def hits(self, r: _Ranked) -> list[Fraction]:
        """:meth:`_Ranked.hits` of every member, in one pass over ``r``."""
        got = r.tally(self.index, self.tensors, self.counts)
        exact = [h if isinstance(h, int) else 0 for h in got]
        out: list[int | Fraction] = (
            torch.zeros(len(self.totals), dtype=torch.int64)
            .index_add_(0, self.groups, torch.tensor(exact, dtype=torch.int64))
            .tolist()
        )
        for g, h in enumerate(got):
            if not isinstance(h, int):
                out[int(self.groups[g])] += h
        return [Fraction(h) for h in out]


def support_overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """The share of ``b``'s nonzero entries at which ``a`` is nonzero and among the ``k``
    largest magnitudes of its tensor, ``k`` the number of ``b``'s nonzero entries in that
    tensor, with ``m`` the ``k``-th largest nonzero ``|a|`` there: an entry counts 1 where
    ``|a_i| > m``, and ``(k - A) / T`` where ``|a_i| == m`` (``A``, ``T`` the tensor's nonzero
    magnitudes above and equal to ``m``: ties share the places left, so an ``a`` of equal
    magnitudes, whose ``m`` is every entry, cannot claim every sparse update, attack a98); every
    nonzero ``a_i`` counts 1 when the tensor has fewer than ``k``; 0 when ``b`` is zero
    (:attr:`DuplicateRule.support_overlap`). A copy of ``a`` sent through ``topk8`` keeps
    exactly those entries: 1 (without ties at ``m``), whatever it adds to their values
    afterwards (attack a93). Tensors in sorted name order, ``b``'s sizes. The rules compare
    the exact share (:func:`_share_above`); this float is its nearest."""
    sizes = [b[n].numel() for n in sorted(b)]
    kept = _Kept.of(_flat(b), sizes)
    total = kept.index.numel()
    return float(_Ranked.of(_flat(a), sizes).hits(kept) / total) if total else 0.0


def _share_above(hits: Fraction, total: int, threshold: float) -> bool:
    """Whether ``hits / total`` is above ``threshold``, exactly (the float's own value)."""
    return hits > Fraction(threshold) * total


def kept_largest_of(
    earlier: Sequence[Mapping[str, torch.Tensor]],
    later: Sequence[Mapping[str, torch.Tensor]],
    threshold: float,
    later_sparse: Sequence[bool] | None = None,
) -> dict[int, int]:
    """For each :func:`sparse` update of ``later`` (by index) whose :func:`support_overlap`
    with one of ``earlier`` is above ``threshold``, the index of the first such earlier one
    (the free-rider screen's stale references, ``fedtrail.valuation.freeride``; a93's
    ``stale`` mode). Updates of another layout (tensor names and shapes) are not compared. Each
    earlier update is read once, against every later one's entries at once.
    ``later_sparse``: :func:`sparse` of each of ``later``, when the caller has it (the same
    answers, not computed again). An entry counts at most 1 and 0 where the earlier update is
    0 (:meth:`_Ranked.tally`), so an earlier update nonzero at no more than ``threshold`` of a
    later one's entries cannot be its reference: when that holds for every later update not
    yet matched, the earlier one is not ranked at all (honest ``topk8`` updates of 10 sites:
    at most 0.943 of a later update's entries against the threshold 0.99)."""
    if not earlier:
        return {}
    names = sorted(earlier[0])
    shapes = [earlier[0][n].shape for n in names]

    def same_layout(d: Mapping[str, torch.Tensor]) -> bool:
        pairs = zip(names, shapes, strict=True)
        return sorted(d) == names and all(d[n].shape == s for n, s in pairs)

    def is_sparse(j: int) -> bool:
        return sparse(later[j]) if later_sparse is None else later_sparse[j]

    sizes = [earlier[0][n].numel() for n in names]
    refs = [i for i, d in enumerate(earlier) if same_layout(d)]
    kept = [
        (j, _Kept.of(_nonzero_flat(d), sizes))  # (its positions only)
        for j, d in enumerate(later)
        if same_layout(d) and is_sparse(j)
    ]
    kept = [(j, k) for j, k in kept if k.index.numel()]
    if not refs or not kept:
        return {}
    batch = _Batch.of([k for _, k in kept])
    member = torch.repeat_interleave(
        torch.arange(len(kept)), torch.tensor(batch.totals, dtype=torch.int64)
    )
    out: dict[int, int] = {}
    for i in refs:
        # how many of each later update's entries this one is nonzero at: its hits at most
        at = _nonzero_flat(earlier[i]).index_select(0, batch.index).to(torch.int64)
        present = torch.zeros(len(kept), dtype=torch.int64).index_add_(0, member, at).tolist()
        if not any(
            j not in out and _share_above(Fraction(present[n]), batch.totals[n], threshold)
            for n, (j, _) in enumerate(kept)
        ):
            continue
        hits = batch.hits(_Ranked.of(_flat(earlier[i]), sizes))
        for n, (j, _) in enumerate(kept):
            if j not in out and _share_above(hits[n], batch.totals[n], threshold):
                out[j] = i
        if len(out) == len(kept):
            break
    return out


SUPPORT_STRIDE = 16
"""The support bound's sample (:func:`_support_bound`): every ``SUPPORT_STRIDE``-th entry of
each tensor, from its first (about 1/16 of an update's entries and of its energy)."""

SUPPORT_GATHER = 4
"""A later update with at most ``1 / SUPPORT_GATHER`` of its entries nonzero (``topk8`` keeps
5% by default) is compared on all of them (:func:`_support_bound`), not on the sample."""

_EXACT_WIDENING: Final = (torch.float32, torch.float16, torch.bfloat16)


def _subset_bound(
    dot: torch.Tensor, sq_x: torch.Tensor, sq_y: torch.Tensor, total_y: torch.Tensor
) -> torch.Tensor:
    """An upper bound on ``cos(x, y)`` from a subset ``T`` of their entries: ``dot`` is
    ``x_T . y_T``, ``sq_x`` and ``sq_y`` their squares there, ``total_y`` at least ``|y|^2``.
    With ``X = x / |x|`` and ``Y = y / |y|``: ``2 - 2 cos(x, y) = |X - Y|^2 >= |X_T - Y_T|^2
    >= min over s >= 0 of |s x_T - Y_T|^2 = |Y_T|^2 (1 - max(cos_T, 0)^2)`` (``|Y_T|^2``
    when ``x_T = 0``), so ``cos(x, y) <= 1 - |Y_T|^2 (1 - max(cos_T, 0)^2) / 2``, for any
    nonzero ``x`` and ``y``; ``|Y_T|^2 >= sq_y / total_y``. 1 (no bound) where ``y_T`` is 0."""
    both = (sq_x > 0) & (sq_y > 0)
    cos = torch.where(both, dot / torch.sqrt(torch.where(both, sq_x * sq_y, 1.0)), 0.0)
    cos = cos.clamp(0.0, 1.0)
    share = torch.where(total_y > 0, sq_y / torch.where(total_y > 0, total_y, 1.0), 0.0)
    return 1.0 - share * (1.0 - cos * cos) / 2


def _support_bound(
    earlier: Sequence[Mapping[str, torch.Tensor]],
    later: Sequence[Mapping[str, torch.Tensor]],
    threshold: float,
) -> torch.Tensor:
    """``[i, j]``: whether :func:`support_copy` certainly rejects ``earlier[i]`` against
    ``later[j]`` (all of one layout), read without any pair's pass over a whole update.

    Why it is exact. Let ``a'`` be ``a`` set to 0 where ``b`` is 0. The rule calls ``b`` a
    copy only when ``a'`` and ``b`` are nonzero and ``cos(a', b)`` or the cosine of
    ``codes(a')`` (:func:`codes`, tensor by tensor) and ``codes(b)`` is above ``threshold``;
    so a pair whose two cosines are certainly below it is rejected, and so is one with ``a' =
    0``. Every value is read exactly: float32, float16 and bfloat16 values widen to float64
    exactly, and their products and sums of squares neither overflow nor underflow there.

    A ``b`` with few nonzero entries (:data:`SUPPORT_GATHER`) is compared on all of them:
    ``a' . b``, ``|a'|^2`` and ``|b|^2`` are sums over them; ``codes(a')`` there are ``a``'s
    values times 127 over their largest magnitude in each tensor, rounded, the operations of
    :func:`codes` on the same float64 values, so the same integers. The cosines are computed,
    within ``(m + 8) 2**-53`` relative of their value for ``m`` terms.

    Any other ``b`` is bounded from a sample ``T`` of the entries (:data:`SUPPORT_STRIDE`)
    by :func:`_subset_bound`: the plain cosine from ``a'_T . b_T = a_T . b_T`` (``b`` is 0
    where ``a'`` was cut), ``|a'_T|^2`` (``a_T``'s squares where ``b_T`` is nonzero), ``|b_T|^2``
    and ``|b|^2``; the codes' cosine from the sample in the tensors where ``b`` keeps an entry
    of ``a``'s largest magnitude (or ``a`` is zero): there ``a'`` has ``a``'s largest
    magnitude, so ``codes(a')`` is ``codes(a)`` where ``b`` is nonzero, 0 elsewhere; the other
    tensors are left out of ``T``, which any subset allows. ``|codes(b)|^2`` is bounded above
    tensor by tensor: a code is at most half a unit above its scaled value, so with ``Y`` the
    scaled squares and ``k`` the nonzero entries, ``Y + sqrt(k Y) + k / 4`` (Cauchy-Schwarz),
    raised by 1e-6 for rounding; a larger total only raises the bound.

    A pair is rejected when both cosines (or bounds) lie below ``threshold`` by more than
    :data:`SCREEN_MARGIN` plus ``16 (n + 8) 2**-53`` (``n`` the update's size: float64 sums of
    at most ``n`` terms, in any order, are within ``n 2**-53`` relative of their value, Higham):
    then the exact cosines are below ``threshold - SCREEN_MARGIN``, and the rule's own float64
    rounding cannot take its cosine above ``threshold``. Integers (codes, counts) are exact.

    Updates of other dtypes or of a non-finite value are not bounded: their pairs are left to
    the rule, except that an earlier update of a non-finite value is rejected where the later
    one keeps all of its nonzero entries (as the screen before this one did; the rule's
    ``torch.equal`` would not tell such an update from itself)."""
    n_e, n_l = len(earlier), len(later)
    out = torch.zeros((n_e, n_l), dtype=torch.bool)
    if not n_e or not n_l:
        return out
    names = sorted(earlier[0])
    sizes = [earlier[0][n].numel() for n in names]
    width, n_t = sum(sizes), len(sizes)
    updates = [*earlier, *later]
    exact = [all(d[n].dtype in _EXACT_WIDENING for n in names) for d in updates]
    rows = torch.empty((len(updates), width), dtype=torch.float32)
    bounds = [0, *torch.tensor(sizes, dtype=torch.int64).cumsum(0).tolist()]
    # (in lists while the rows are read, then tensors: no tensor write per entry)
    amax_of = [[0.0] * n_t for _ in updates]
    finite = [False] * len(updates)
    signs_of = [[False] * n_t for _ in range(n_e)]  # a's largest magnitude is a maximum
    squares_of = [[0.0] * n_t for _ in range(n_l)]  # b's, tensor by tensor
    for r, d in enumerate(updates):
        if not exact[r]:
            rows[r].zero_()
            continue
        finite[r] = True
        for k, name in enumerate(names):
            lo, hi = bounds[k], bounds[k + 1]
            if hi == lo:
                continue
            t = rows[r, lo:hi]
            t.copy_(d[name].detach().reshape(-1))
            low, high = (float(v) for v in torch.aminmax(t))
            if not (math.isfinite(low) and math.isfinite(high)):
                finite[r] = False
                continue
            amax_of[r][k] = max(-low, high)
            if r < n_e:
                signs_of[r][k] = high >= -low
            else:
                wide = t.to(torch.float64)
                squares_of[r - n_e][k] = float(torch.dot(wide, wide))
    amax = torch.tensor(amax_of, dtype=torch.float64).reshape(len(updates), n_t)
    squares = torch.tensor(squares_of, dtype=torch.float64).reshape(n_l, n_t)
    per = torch.where(amax > 0, CODE_LEVELS / torch.where(amax > 0, amax, 1.0), 0.0)
    ok_a = torch.tensor([i for i in range(n_e) if finite[i]], dtype=torch.int64)
    for i in [i for i in range(n_e) if exact[i] and not finite[i]]:
        # the earlier screen's rule for an update of a non-finite value
        out[i] = ~((rows[i] != 0) & (rows[n_e:] == 0)).any(dim=1)
    if not ok_a.numel():
        return out
    below = threshold - (SCREEN_MARGIN + 16 * (width + 8) * 2.0**-53)
    a_rows = rows.index_select(0, ok_a)
    starts = torch.tensor(bounds[1:-1], dtype=torch.int64)
    place = torch.cat(
        [torch.arange(lo, hi, SUPPORT_STRIDE) for lo, hi in itertools.pairwise(bounds)]
    )
    # which way each b is compared: by its sample's nonzero share (either way is exact)
    sampled = rows[n_e:].index_select(1, place)  # every b's sample, [b, place]
    nonzero = torch.count_nonzero(sampled, dim=1).tolist()
    gather: list[int] = []
    sample: list[int] = []
    for j in range(n_l):
        if finite[n_e + j]:
            dense = nonzero[j] * SUPPORT_GATHER > max(len(place), 1)
            (sample if dense else gather).append(j)
    a_cols = a_rows.T.contiguous() if gather else a_rows  # an entry's values: one row
    for j in gather:
        where = torch.nonzero(rows[n_e + j]).reshape(-1)
        tensor = torch.bucketize(where, starts, right=True)  # each entry's tensor
        a = a_cols.index_select(0, where).to(torch.float64).T
        b = rows[n_e + j].index_select(0, where).to(torch.float64)
        sq_a, sq_b = (a * a).sum(dim=1), float(b @ b)
        cos_p = (a @ b) / torch.sqrt(torch.where(sq_a > 0, sq_a, 1.0) * max(sq_b, 1e-300))
        kept_max = torch.zeros((len(ok_a), n_t), dtype=torch.float64).scatter_reduce_(
            1, tensor.expand(len(ok_a), -1), a.abs(), "amax"
        )
        scale = torch.where(
            kept_max > 0, CODE_LEVELS / torch.where(kept_max > 0, kept_max, 1.0), 0.0
        )
        ca = torch.round(a * scale.index_select(1, tensor))
        cb = torch.round(b * per[n_e + j].index_select(0, tensor))
        sq_ca, sq_cb = (ca * ca).sum(dim=1), float(cb @ cb)
        cos_c = (ca @ cb) / torch.sqrt(torch.where(sq_ca > 0, sq_ca, 1.0) * max(sq_cb, 1.0))
        no_codes = (sq_ca == 0) | (sq_cb == 0)
        out[ok_a, j] = (sq_a == 0) | ((cos_p < below) & (no_codes | (cos_c < below)))
    if not sample:
        return out
    tensor = torch.bucketize(place, starts, right=True)
    b_at = torch.tensor(sample, dtype=torch.int64)
    a_vals = a_rows.index_select(1, place).to(torch.float64)
    b_vals = sampled.index_select(0, b_at).to(torch.float64)
    mask = (b_vals != 0).to(torch.float64)
    b_sq = (b_vals * b_vals).sum(dim=1)
    bound_p = _subset_bound(
        a_vals @ b_vals.T, (a_vals * a_vals) @ mask.T, b_sq, squares[b_at].sum(dim=1)
    )
    a_codes = torch.round(a_vals * per[ok_a].index_select(1, tensor))
    b_codes = torch.round(b_vals * per[n_e + b_at].index_select(1, tensor))
    a_csq, b_csq = a_codes * a_codes, b_codes * b_codes
    dot_t = torch.zeros((len(ok_a), len(sample), n_t), dtype=torch.float64)
    sq_a_t = torch.zeros_like(dot_t)
    sq_b_t = torch.zeros((len(sample), n_t), dtype=torch.float64)
    cuts = [0, *torch.bincount(tensor, minlength=n_t).cumsum(0).tolist()]
    for k in range(n_t):
        lo, hi = cuts[k], cuts[k + 1]
        dot_t[:, :, k] = a_codes[:, lo:hi] @ b_codes[:, lo:hi].T
        sq_a_t[:, :, k] = a_csq[:, lo:hi] @ mask[:, lo:hi].T
        sq_b_t[:, k] = b_csq[:, lo:hi].sum(dim=1)
    # [a, tensor]: an entry of a's largest magnitude in the tensor (-1: the tensor is zero)
    top_of: list[list[int]] = []
    for i in ok_a.tolist():
        top_of.append([-1] * n_t)
        for k in range(n_t):
            if amax_of[i][k] > 0:
                t = rows[i, bounds[k] : bounds[k + 1]]
                top_of[-1][k] = bounds[k] + int(t.argmax() if signs_of[i][k] else t.argmin())
    tops = torch.tensor(top_of, dtype=torch.int64).reshape(len(ok_a), n_t)
    b_top = rows[n_e:].index_select(1, tops.clamp_min(0).reshape(-1)).index_select(0, b_at)
    keeps = ((b_top != 0).reshape(len(sample), len(ok_a), n_t) | (tops < 0)).transpose(0, 1)
    kept = keeps.to(torch.float64)  # [a, b, tensor]
    scaled = squares[b_at] * per[n_e + b_at] ** 2
    n_b = torch.tensor(sizes, dtype=torch.float64)  # at least b's nonzero entries
    code_total = (scaled + torch.sqrt(n_b * scaled) + n_b / 4).sum(dim=1) * (1 + 1e-6)
    bound_c = _subset_bound(
        (dot_t * kept).sum(-1),
        (sq_a_t * kept).sum(-1),
        (sq_b_t.unsqueeze(0) * kept).sum(-1),
        code_total,
    )
    out[ok_a.unsqueeze(1), b_at.unsqueeze(0)] = (bound_p < below) & (bound_c < below)
    return out


def support_copy_of(
    earlier: Sequence[Mapping[str, torch.Tensor]],
    later: Sequence[Mapping[str, torch.Tensor]],
    threshold: float,
) -> dict[int, int]:
    """For each update of ``later`` (by index) that :func:`support_copy` calls a repeat of one
    of ``earlier`` under ``threshold``, the index of the first such earlier one (the free-rider
    screen's stale references, ``fedtrail.valuation.freeride``; a91). Only a later update with
    an exact zero can leave entries out, so the others are never compared; the pairs left are
    screened with :func:`_support_bound` (float64 products only: torch's float32 matmul
    precision does not matter) and decided by :func:`support_copy`, so the result is that of
    the pair-by-pair rule, bit for bit (``tests/fedtrail/protocol/test_support_bound.py``
    checks it against the rule and against the screen before it). Updates of another layout
    are not compared."""
    if not earlier:
        return {}
    names = sorted(earlier[0])
    sparse = [
        j
        for j, d in enumerate(later)
        if sorted(d) == names
        and all(d[n].shape == earlier[0][n].shape for n in names)
        and any(bool((d[n] == 0).any()) for n in names)
    ]
    refs = [
        i
        for i, d in enumerate(earlier)
        if sorted(d) == names and all(d[n].shape == earlier[0][n].shape for n in names)
    ]
    if not sparse or not refs:
        return {}
    rows: list[Mapping[str, torch.Tensor] | None] = [earlier[i] for i in refs]
    rows += [later[j] for j in sparse]
    bound = _support_bound([earlier[i] for i in refs], [later[j] for j in sparse], threshold)
    apart = {(a, len(refs) + b) for a, b in torch.nonzero(bound).tolist()}
    sizes = [earlier[0][n].numel() for n in names]
    flats: dict[int, torch.Tensor] = {}

    def flat(r: int) -> torch.Tensor:
        if r not in flats:
            row = rows[r]
            assert row is not None
            flats[r] = _flat(row)
        return flats[r]

    out: dict[int, int] = {}
    for b, j in enumerate(sparse, start=len(refs)):
        left = [a for a in range(len(refs)) if (a, b) not in apart]
        if not left:
            continue
        coded = _flat_codes(flat(b), sizes)
        for a in left:
            if support_copy(flat(a), flat(b), sizes, threshold, coded):
                out[j] = refs[a]
                break
    return out


SCREEN_MARGIN = 1e-6
"""How far below ``rule.cosine`` a pair's cosine from the screening matrix product must lie for
the pair to be skipped. Any summation order of a dot product of n float64 products errs by at
most about n * 2**-53 of ||a|| ||b|| (Higham's gamma_n): 1e-11 in cosine for the 100k
parameters of the bundled SmallCNN, 1e-9 for 10M; the margin is 1,000x that, so every pair
the exact rule could call near-identical is still decided by it, bit for bit."""


@dataclass(frozen=True)
class _Part:
    """One tensor the shared-tensor test looks at: its shape and values widened to float64 (C
    order). Its *Flattening and sums* sum of squares (:attr:`squares`, the threshold's ``n2``)
    is taken when first asked: only an original's is (a later update's enters the test's screen
    alone, through :attr:`screen_squares`)."""

    shape: tuple[int, ...]
    values: np.ndarray

    @functools.cached_property
    def squares(self) -> float:
        """The *Flattening and sums* sum of squares of the values."""
        return deterministic_sum(self.values * self.values)

    @functools.cached_property
    def screen_squares(self) -> float:
        """The sum of squares in any summation order (one float64 dot product): within
        ``n 2**-53`` of :attr:`squares`' exact value, relative (Higham's gamma_n), as
        :func:`_copied`'s screen allows for each of its sums."""
        return float(np.dot(self.values, self.values))


def _tensor_parts(
    delta: Mapping[str, torch.Tensor],
    min_nonzero: int,
    *,
    flat: torch.Tensor | None = None,
    nonzero: Sequence[int] | None = None,
) -> dict[str, _Part]:
    """Each tensor of ``delta`` with at least ``min_nonzero`` (and at least 1) nonzero entries,
    by name (an all-zero tensor, a frozen layer's delta, never counts). ``flat``: :func:`_flat`
    of ``delta`` when the caller holds it (its slices are the tensors widened, the same values:
    not widened again); ``nonzero``: each tensor's count of nonzero entries, sorted name order
    (:func:`_nonzero_counts`), when held."""
    out: dict[str, _Part] = {}
    wide_all = None if flat is None else flat.numpy()
    at = 0
    for k, name in enumerate(sorted(delta)):
        t = delta[name].detach()
        size = t.numel()
        start, at = at, at + size
        if size < max(min_nonzero, 1):
            continue
        count = int((t != 0).sum()) if nonzero is None else nonzero[k]
        if count < max(min_nonzero, 1):
            continue
        if wide_all is None:
            wide = t.to("cpu", torch.float64).reshape(-1).numpy()
        else:
            wide = wide_all[start:at]
        out[name] = _Part(tuple(t.shape), wide)
    return out


def _nonzero_counts(delta: Mapping[str, torch.Tensor]) -> list[int]:
    """How many entries of each tensor of ``delta`` (sorted name order) are not 0 (a NaN is
    not 0)."""
    return [int(torch.count_nonzero(delta[name].detach())) for name in sorted(delta)]


def tensor_distance(earlier: _Part, later: _Part) -> tuple[float, float]:
    """``(d2, n2)`` of the shared-tensor test: ``d2`` the *Flattening and sums* sum of
    ``(b - a) * (b - a)`` (each difference and square rounded to float64, element by element),
    ``n2`` that of ``a * a``; ``a`` the earlier update's tensor, ``b`` the later one's."""
    diff = later.values - earlier.values
    return deterministic_sum(diff * diff), earlier.squares


_SCREEN_SAFE: Final = (1e-250, 1e250)
"""Sums of squares inside which :func:`_copied`'s dot-product screen may skip a pair."""


def _copied(earlier: _Part, later: _Part) -> bool:
    """Whether ``later`` is within the shared-tensor distance of ``earlier``: same shape and
    ``d2 < 1e-6 * n2`` (:data:`~fedtrail.protocol.terms.SHARED_TENSOR_SQUARED`; equality, or a
    NaN, is not a copy).

    Screened first with one float64 dot product: ``|b - a|^2 = |a|^2 + |b|^2 - 2 a.b`` (the
    squares' sums too as dot products, :attr:`_Part.screen_squares`), whose rounding (any
    summation order of ``n`` products and squares) is within ``(n + 4) 2**-53`` of ``|a|^2 +
    |b|^2`` per sum (Higham's gamma_n); a pair whose estimate exceeds twice the
    threshold plus 8x that bound cannot have ``d2`` below the threshold (``d2``'s own rounding
    is relative, below ``(n + 2) 2**-53``), so it is skipped; the rest are decided exactly.
    Honest pairs sit 400x and more above the threshold in ``d2``: a dot product instead of a
    subtraction, squares and a sum. A non-finite estimate is never skipped."""
    if earlier.shape != later.shape:
        return False
    both = earlier.screen_squares + later.screen_squares
    # Higham's bounds hold for normal numbers only: tiny (subnormal products) or huge sums are
    # decided exactly, never skipped (a float64 update of values near 1e-161 was a copy the
    # screen skipped, review of session 57).
    if _SCREEN_SAFE[0] < both < _SCREEN_SAFE[1]:
        estimate = both - 2.0 * float(np.dot(earlier.values, later.values))
        slack = 8.0 * (earlier.values.size + 4) * 2.0**-53 * both
        if estimate > 2.0 * SHARED_TENSOR_SQUARED * earlier.squares + slack:
            return False
    d2, n2 = tensor_distance(earlier, later)
    return d2 < SHARED_TENSOR_SQUARED * n2


def shared_tensor(
    earlier: Mapping[str, torch.Tensor],
    later: Mapping[str, torch.Tensor],
    min_nonzero: int = SHARED_TENSOR_MIN_SIZE,
) -> str | None:
    """The first tensor name (sorted) of ``later`` with at least ``min_nonzero`` nonzero
    entries, the same shape as ``earlier``'s tensor of that name, which has at least as many,
    and within relative L2 distance 1e-3 of it (``d2 < 1e-6 * n2``, :func:`tensor_distance`);
    None when there is none (:attr:`~fedtrail.protocol.terms.DuplicateRule.shared_tensor`)."""
    mine = _tensor_parts(earlier, min_nonzero)
    theirs = _tensor_parts(later, min_nonzero)
    return next((n for n in sorted(theirs) if n in mine and _copied(mine[n], theirs[n])), None)


class Whiteness(Protocol):
    """The duplicate rule's white-noise statistic of a later update's residual from an earlier
    one (``later, earlier, stop``; ``flats``: the two updates' exact float64 flats, sorted name
    order, which the rule already holds; ``exact=False``: a value below ``stop`` may be a bound
    of the statistic, below ``stop`` too, as the rule reads the verdict alone;
    ``earlier_squares``: the *Flattening and sums* sum of the earlier flat's squares, which the
    rule takes once an original):
    :func:`fedtrail.valuation.freeride.duplicate_residual_z`, the free-rider screen's statistic
    (a layer above this one, so passed in)."""

    def __call__(
        self,
        later: Mapping[str, torch.Tensor],
        earlier: Mapping[str, torch.Tensor],
        stop: float = ...,
        *,
        flats: tuple[torch.Tensor, torch.Tensor] | None = ...,
        exact: bool = ...,
        earlier_squares: float | None = ...,
    ) -> float: ...


def find_duplicates(
    entries: Sequence[Entry], rule: DuplicateRule, *, whiteness: Whiteness | None = None
) -> dict[str, str]:
    """Site -> the site whose update it repeats, for every copy. Entries are taken in commit
    order; a copy is compared with the originals before it (not with other copies), so the
    result does not depend on addresses or on the order ``entries`` come in.

    The pairs are first screened with float32 products of the updates (and of their
    :func:`codes` for a rule with ``scaled_cosine``), in blocks whose rounding error is bounded
    (:data:`SCREEN_CHUNK`, :func:`_screen_margin`): at 100 sites the 4,950 pairs took two norms
    and a dot product each (0.6 s of a round's audit), and float64 copies of every update for
    the screen 0.2 s. Only the pairs the search asks about are screened, each later update
    against the originals before it (:class:`_Screens`): a round of 99 copies of one update
    screens 99 pairs, not the whole round's 4,950 (its Gram products were ~0.06 s of a
    100-site audit). The pairs left are decided exactly as :func:`near_identical` decides them,
    on float64 flats and norms computed for those updates only. A rule with ``support_cosine``
    adds :func:`support_copy` for the pairs :func:`_support_bound` leaves: one bound of every
    update of the first update's layout, as the original, against every one with an exact 0,
    as the judged update (one without leaves nothing out), read for a pair in either order
    (updates of another layout go to the rule unscreened). A rule with ``white_noise_z`` adds
    the white-noise test after the others (``whiteness`` of the later update and the original
    closest to it by cosine, when above 0.5, and, for a later update that declares DP-SGD,
    above ``white_noise_dp_cosine``, which terms without it lack: then such an update is not
    tested; below ``white_noise_z`` is a copy); without ``whiteness`` it raises ConfigError.
    A rule with ``shared_tensor`` on tests, before the white-noise test, whether the later
    update repeats some tensor of an original within relative L2 distance 1e-3 (at least 16
    nonzero entries in both; :func:`shared_tensor`; the first such original in commit order).

    A rule with ``either_order`` also runs the two sparse tests (``support_cosine``,
    ``support_overlap``) the other way round: for every update that no test before the
    shared-tensor and white-noise tests marks, every earlier original not yet marked that
    repeats it on the entries it carries, it as the original, is the copy (attack a99: the
    sparse copy committed first). They are found before its shared-tensor and white-noise
    tests, which leave them out of the originals they look at (a dense original's residual from
    its own sparse copy is the entries the copy dropped, white for random updates: the one-way
    rule marked the dense one; a copy that keeps a tensor whole repeats it exactly). The marked
    earlier update stays an original for the tests of later updates; the later one, the
    original of the pair, is never marked by it. Those pairs are screened by the same bound
    (its entry of the later update as the original), so the reversed pass screens nothing
    again (``scripts/bench/support_cost.py``; ``tests/fedtrail/protocol/test_support_bound.py``
    checks the marks against the rule pair by pair, unscreened)."""
    white_z = rule.white_noise_z or None  # 0: off, as absent
    white_dp = rule.white_noise_dp_cosine  # None: DP-declared later updates exempt
    if white_z is not None and whiteness is None:
        raise ConfigError("the duplicate rule's white_noise_z needs its statistic")
    ordered = sorted(entries, key=lambda e: (e.commit_order, e.site))
    deltas = [e.delta for e in ordered]
    sizes = [None if d is None else _numel(d) for d in deltas]
    width = next((n for n in sizes if n is not None), None)
    screens: _Screens | None = None
    use_screen = width is not None and torch.get_float32_matmul_precision() == "highest"
    if use_screen and width is not None:
        floor = rule.cosine if rule.scaled_cosine is None else min(rule.cosine, rule.scaled_cosine)
        fills: list[Callable[[Mapping[str, torch.Tensor], torch.Tensor], bool]] = [_fill_plain]
        if rule.scaled_cosine is not None:
            scratch = torch.empty(width, dtype=torch.float64)
            fills.append(functools.partial(_fill_codes, scratch=scratch))
        screens = _Screens(deltas, width, fills, floor)

    def apart(i: int, j: int) -> bool:
        """Whether the screen shows original ``i`` certainly not near-identical to ``j``."""
        return screens is not None and screens.apart(i, j, originals)

    # what is built once an update, by update: dropped for a later update once it is judged
    # a copy (:func:`drop`), as no later test reads a copy's; its float64 flat's buffer is then
    # written over by the next flat built (``spare``) instead of fresh pages
    caches: list[dict[int, Any]] = []
    spare: list[torch.Tensor] = []

    def built_once(
        make: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    ) -> Callable[[int], tuple[torch.Tensor, float]]:
        """Update ``i``'s ``make`` vector and its norm, built for the first pair that needs it."""
        cache: dict[int, tuple[torch.Tensor, float]] = {}
        caches.append(cache)

        def get(i: int) -> tuple[torch.Tensor, float]:
            if i not in cache:
                delta = deltas[i]
                assert delta is not None
                v = make(delta)
                cache[i] = (v, float(v.norm()))
            return cache[i]

        return get

    def drop(j: int) -> None:
        """Update ``j``'s built values let go, once it is judged a copy: a copy is never an
        original, and only originals' are read again (rebuilt, the same values, should one be
        asked for). Its flat's buffer is kept for the next flat: held by nothing else once its
        tensor parts (views of it) are let go too (:func:`entries_of`, :func:`near` and the
        white-noise test read it only while they run; :class:`_Kept` and :class:`_Batch` hold
        no view of it; an original's ``_Ranked`` is an original's). At 100 sites the flats are
        ~84 MB; written into fresh pages each, they cost ~20,000 page faults an audit."""
        wide = flats.get(j)
        for cache in caches:
            cache.pop(j, None)
        if wide is not None:
            spare.append(wide[0])

    def reuse(delta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """:func:`_flat` of ``delta``, written into a dropped copy's buffer when one is kept."""
        return _flat(delta, spare.pop() if spare else None)

    flat = built_once(reuse)  # exact float64 flats
    flats = caches[-1]
    code = built_once(codes)  # int8 codes
    counted: dict[int, list[int]] = {}

    def nonzero(i: int) -> list[int]:
        """Update ``i``'s :func:`_nonzero_counts`, counted once for the support screen's holes,
        :func:`sparse` and the shared-tensor test."""
        if i not in counted:
            delta = deltas[i]
            assert delta is not None
            counted[i] = _nonzero_counts(delta)
        return counted[i]

    def has_zero(i: int) -> bool:
        """Whether some entry of update ``i`` is exactly 0."""
        delta = deltas[i]
        assert delta is not None
        sizes = [delta[n].numel() for n in sorted(delta)]
        return any(c < n for c, n in zip(nonzero(i), sizes, strict=True))

    support = rule.support_cosine
    first = next((d for d in deltas if d is not None), None)
    layout = None if first is None else [(n, first[n].shape) for n in sorted(first)]
    # the support test's screen, both ways round at once: [original, judged] over the updates of
    # the first one's layout; only a judged update with an exact 0 can leave entries out
    bound_row: dict[int, int] = {}  # update -> its row (as an original)
    bound_col: dict[int, int] = {}  # update with an exact 0 -> its column (judged)
    bound: list[list[bool]] = []
    if support is not None and layout is not None:
        same = {
            k: d
            for k, d in enumerate(deltas)
            if d is not None and [(n, d[n].shape) for n in sorted(d)] == layout
        }
        holed = {k: d for k, d in same.items() if has_zero(k)}
        if len(same) > 1:
            bound_row = {k: r for r, k in enumerate(same)}
            bound_col = {k: c for c, k in enumerate(holed)}
            if holed:
                picked, judged = list(same.values()), list(holed.values())
                bound = _support_bound(picked, judged, support).tolist()

    def rejects(i: int, j: int) -> bool:
        """Whether the support screen shows that update ``j`` repeats no entries of ``i``."""
        if i not in bound_row or j not in bound_row:
            return False
        c = bound_col.get(j)
        return c is None or bound[bound_row[i]][c]

    def left_out(i: int, j: int) -> bool:
        """Whether update ``j`` repeats original ``i`` on the entries it carries."""
        if support is None or rejects(i, j):
            return False
        delta = deltas[j]
        assert delta is not None
        sizes = [delta[n].numel() for n in sorted(delta)]
        return support_copy(flat(i)[0], flat(j)[0], sizes, support, code(j)[0])

    overlap = rule.support_overlap
    # the sparse updates of the first update's layout (names, shapes): each original is read
    # once against all of their entries (:class:`_Batch`); others pair by pair
    kept_of: dict[int, _Kept | None] = {}  # a later update's entries; None: not sparse
    batched: list[int] = []  # (few: membership in a list is cheap next to the products)
    batch: list[_Batch] = []
    built: list[bool] = []
    shares: dict[int, dict[int, bool]] = {}  # original -> batched update -> above

    def entries_of(j: int) -> _Kept | None:
        if j not in kept_of:
            delta = deltas[j]
            assert delta is not None
            sizes = [delta[n].numel() for n in sorted(delta)]
            kept = _Kept.of(flat(j)[0], sizes) if sparse(delta, nonzero(j)) else None
            kept_of[j] = kept if kept is not None and kept.index.numel() else None
        return kept_of[j]

    def kept_largest(i: int, j: int) -> bool:
        """Whether sparse update ``j`` keeps mostly original ``i``'s largest entries."""
        if overlap is None or entries_of(j) is None:
            return False
        delta = deltas[j]
        assert delta is not None
        sizes = [delta[n].numel() for n in sorted(delta)]
        if not built and layout is not None:  # once: every sparse update of the layout
            built.append(True)
            batched.extend(
                k
                for k, d in enumerate(deltas)
                if d is not None
                and [(n, d[n].shape) for n in sorted(d)] == layout
                and entries_of(k) is not None
            )
            if batched:
                batch.append(_Batch.of([e for e in map(entries_of, batched) if e is not None]))
        if j in shares.get(i, {}) or (i not in shares and j in batched):
            if i not in shares:
                hits = batch[0].hits(_Ranked.of(flat(i)[0], sizes))
                totals = batch[0].totals
                shares[i] = {
                    k: _share_above(h, n, overlap)
                    for k, h, n in zip(batched, hits, totals, strict=True)
                }
            return shares[i][j]
        kept = entries_of(j)
        assert kept is not None
        hit = _Ranked.of(flat(i)[0], sizes).hits(kept)
        return _share_above(hit, kept.index.numel(), overlap)

    def near(i: int, j: int) -> bool:
        (a, na), (b, nb) = flat(i), flat(j)
        pair = None
        if rule.scaled_cosine is not None:
            (ca, nca), (cb, ncb) = code(i), code(j)
            pair = (ca, cb, nca, ncb)
        return _near(a, b, na, nb, rule, pair)

    def white(j: int, skip: Sequence[int] = ()) -> int | None:
        """The original closest to update ``j`` (largest positive cosine of the exact float64
        flats, the first in commit order on a tie), when that cosine is above
        :data:`~fedtrail.protocol.terms.DUPLICATE_WHITE_MIN_COSINE` and ``j`` is it plus noise
        white within each tensor; else None. ``skip``: originals left out (``j``'s own copies
        under ``either_order``). One statistic an update, not one a pair: 100 updates' 4,950
        pairs cost 46 s (``scripts/bench/dup_white_cost.py``), against 1 s."""
        if white_z is None or whiteness is None:
            return None
        least = DUPLICATE_WHITE_MIN_COSINE
        if ordered[j].noise_declared:
            if white_dp is None:  # terms before it: a DP-declared update is never tested
                return None
            least = max(least, white_dp)
        b, nb = flat(j)
        best, closest = 0.0, None
        for i in originals:
            if sizes[i] != sizes[j] or i in skip:
                continue
            a, na = flat(i)
            if na > 0 and nb > 0:
                c = float(a @ b) / (na * nb)
                if c > best:
                    best, closest = c, i
        if closest is None or not best > least:
            return None
        original, later = deltas[closest], deltas[j]
        assert original is not None and later is not None
        a = flat(closest)[0]
        if closest not in squares:  # once an original, however many copies it has
            r = a.numpy()
            squares[closest] = deterministic_sum(np.multiply(r, r))
        # the verdict alone: a value below white_z may be a bound of the statistic
        z = whiteness(
            later, original, white_z, flats=(b, a), exact=False, earlier_squares=squares[closest]
        )
        return closest if z < white_z else None

    squares: dict[int, float] = {}  # an original's flat's sum of squares, for ``whiteness``
    tensor_parts: dict[int, dict[str, _Part]] = {}
    caches.append(tensor_parts)  # views of the flat

    def shares_tensor(j: int, skip: Sequence[int] = ()) -> str | None:
        """The first original (commit order) of update ``j``'s number of entries that has a
        tensor with at least :data:`SHARED_TENSOR_MIN_SIZE` nonzero entries within relative L2
        distance 1e-3 of ``j``'s of that name and shape, itself with as many
        (:func:`shared_tensor`), when the rule's ``shared_tensor`` is on; else None. ``skip``:
        originals left out (``j``'s own copies under ``either_order``). Each update's tensors
        are widened and their sums of squares taken once."""
        if not rule.shared_tensor:
            return None

        def parts(i: int) -> dict[str, _Part]:
            if i not in tensor_parts:
                delta = deltas[i]
                assert delta is not None
                tensor_parts[i] = _tensor_parts(
                    delta, SHARED_TENSOR_MIN_SIZE, flat=flat(i)[0], nonzero=nonzero(i)
                )
            return tensor_parts[i]

        later = parts(j)
        for i in originals:
            if sizes[i] == sizes[j] and later and i not in skip:
                mine = parts(i)
                if any(n in mine and _copied(mine[n], v) for n, v in later.items()):
                    return ordered[i].site
        return None

    either = bool(rule.either_order) and (support is not None or overlap is not None)

    def copied_back(i: int, j: int) -> bool:
        """Whether earlier original ``i`` repeats later original ``j`` by a sparse test, ``j``
        as the original (``rule.either_order``)."""
        return left_out(j, i) or kept_largest(j, i)

    originals: list[int] = []
    out: dict[str, str] = {}
    for j, e in enumerate(ordered):
        source = next(
            (
                ordered[i].site
                for i in originals
                if ordered[i].sha256 == e.sha256
                or (
                    e.delta is not None
                    and sizes[i] == sizes[j]
                    and ((not apart(i, j) and near(i, j)) or left_out(i, j) or kept_largest(i, j))
                )
            ),
            None,
        )
        mine: list[int] = []
        if source is None and e.delta is not None and either:
            # the other way round: an earlier original (not yet marked) that repeats this one
            # on the entries it carries is its copy, found before this one's white-noise test,
            # which leaves them out (an update is no copy of its own copy); it stays an original
            # for the tests of later updates
            mine = [
                i
                for i in originals
                if ordered[i].site not in out and sizes[i] == sizes[j] and copied_back(i, j)
            ]
        if source is None and e.delta is not None:
            source = shares_tensor(j, mine)
        if source is None and e.delta is not None:
            closest = white(j, mine)
            source = None if closest is None else ordered[closest].site
        for i in mine:
            out[ordered[i].site] = e.site
        if source is not None:
            out[e.site] = source
            drop(j)
        elif e.delta is not None:
            originals.append(j)
    return out
