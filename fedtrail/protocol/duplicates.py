"""Which updates of a round repeat an earlier one: decided by commit order, never by address.

Commit order is the chain order of the round's ``UpdateCommitted`` events: nobody can see an
update before the commit window closes, so the earliest commitment is the original and every
later byte-identical or numerically near-identical update is the copy. The aggregator marks the
copies DUPLICATE before valuing the round and an auditor re-derives the same marks from the
same public data, with the thresholds the round's terms name
(:class:`~fedtrail.protocol.terms.DuplicateRule`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import torch

from fedtrail.protocol.terms import DuplicateRule

__all__ = ["CODE_LEVELS", "Entry", "codes", "find_duplicates", "near_identical"]

CODE_LEVELS: Final = 127.0
"""``topk8``'s int8 levels: :func:`codes` maps each tensor's largest magnitude to this."""


@dataclass(frozen=True)
class Entry:
    """One revealed update: its site, commit order (1-based), content sha256 and decoded
    delta (None when it could not be used; such an update is nobody's original)."""

    site: str
    commit_order: int
    sha256: str
    delta: Mapping[str, torch.Tensor] | None


def _flat(delta: Mapping[str, torch.Tensor]) -> torch.Tensor:
    names = sorted(delta)
    return torch.cat([delta[n].detach().to("cpu", torch.float64).reshape(-1) for n in names])


def _numel(delta: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in delta.values())


def _fill_flat(delta: Mapping[str, torch.Tensor], row: torch.Tensor) -> None:
    """:func:`_flat` of ``delta`` written into ``row`` (float64, its length): the same values
    (float32 and float16 widen to float64 exactly)."""
    at = 0
    for name in sorted(delta):
        t = delta[name].detach().reshape(-1)
        row[at : at + t.numel()].copy_(t)
        at += t.numel()


def _fill_codes(delta: Mapping[str, torch.Tensor], row: torch.Tensor) -> None:
    """:func:`codes` of ``delta`` written into ``row`` (float64, its length), the same
    operations in the same order, so the same values."""
    at = 0
    for name in sorted(delta):
        t = delta[name].detach().reshape(-1)
        part = row[at : at + t.numel()]
        part.copy_(t)  # widened exactly, as codes' .to(float64)
        if t.numel():
            low, high = torch.aminmax(part)  # the largest magnitude, exactly (no arithmetic)
            amax = max(-float(low), float(high))
        else:
            amax = 0.0
        if amax > 0.0:
            part.mul_(CODE_LEVELS / amax).round_()
        else:
            part.zero_()
        at += t.numel()


@dataclass(frozen=True)
class _Rows:
    """Every usable update as one float64 row of one matrix (those of the first usable
    update's length; an update of another length stands alone): the screen's matrix product
    reads the matrix itself, with no stacked copy of the rows."""

    flats: list[torch.Tensor | None]
    """Entry i's row (a view into ``matrix``) or standalone tensor; None when unusable."""
    matrix: torch.Tensor | None
    row_of: dict[int, int]
    """Entry index -> its row in ``matrix``."""


def _rows(
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    fill: Callable[[Mapping[str, torch.Tensor], torch.Tensor], None],
) -> _Rows:
    sizes = [None if d is None else _numel(d) for d in deltas]
    width = next((n for n in sizes if n is not None), None)
    if width is None:
        return _Rows([None] * len(deltas), None, {})
    row_of = {i: k for k, i in enumerate(i for i, n in enumerate(sizes) if n == width)}
    matrix = torch.empty((len(row_of), width), dtype=torch.float64)
    flats: list[torch.Tensor | None] = []
    for i, d in enumerate(deltas):
        if d is None:
            flats.append(None)
            continue
        row = matrix[row_of[i]] if i in row_of else torch.empty(sizes[i] or 0, dtype=torch.float64)
        fill(d, row)
        flats.append(row)
    return _Rows(flats, matrix, row_of)


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


SCREEN_MARGIN = 1e-6
"""How far below ``rule.cosine`` a pair's cosine from the screening matrix product must lie for
the pair to be skipped. Any summation order of a dot product of n float64 products errs by at
most about n * 2**-53 of ||a|| ||b|| (Higham's gamma_n): 1e-11 in cosine for the 100k
parameters of the bundled SmallCNN, 1e-9 for 10M; the margin is 1,000x that, so every pair
the exact rule could call near-identical is still decided by it, bit for bit."""


def find_duplicates(entries: Sequence[Entry], rule: DuplicateRule) -> dict[str, str]:
    """Site -> the earlier site whose update it repeats, for every copy. Entries are taken in
    commit order; a copy is compared with the originals before it (not with other copies), so
    the result does not depend on addresses or on the order ``entries`` come in.

    Each norm is computed once, and the pairs are first screened with one matrix product of
    the flattened updates (:data:`SCREEN_MARGIN`): at 100 sites the 4,950 pairs took two norms
    and a dot product each (0.6 s of a round's audit); the pairs left are decided exactly as
    :func:`near_identical` decides them. A rule with ``scaled_cosine`` screens the codes
    (:func:`codes`) the same way: 100 SmallCNN updates took 0.42 s instead of 0.20 s."""
    ordered = sorted(entries, key=lambda e: (e.commit_order, e.site))
    rows = _rows([e.delta for e in ordered], _fill_flat)
    flats = rows.flats
    norms = [0.0 if f is None else float(f.norm()) for f in flats]
    apart = _screen(rows, norms, rule)
    coded: list[torch.Tensor | None] = [None] * len(ordered)
    code_norms = [0.0] * len(ordered)
    if rule.scaled_cosine is not None:
        code_rows = _rows([e.delta for e in ordered], _fill_codes)
        coded = code_rows.flats
        code_norms = [0.0 if c is None else float(c.norm()) for c in coded]
        apart &= _screen(code_rows, code_norms, rule)
    originals: list[int] = []
    out: dict[str, str] = {}
    for j, e in enumerate(ordered):
        flat = flats[j]
        source = next(
            (
                ordered[i].site
                for i in originals
                if ordered[i].sha256 == e.sha256
                or (
                    flat is not None
                    and (other := flats[i]) is not None
                    and other.shape == flat.shape
                    and (i, j) not in apart
                    and _near(other, flat, norms[i], norms[j], rule, _pair(coded, code_norms, i, j))
                )
            ),
            None,
        )
        if source is not None:
            out[e.site] = source
        elif flat is not None:
            originals.append(j)
    return out


def _pair(
    coded: Sequence[torch.Tensor | None], norms: Sequence[float], i: int, j: int
) -> tuple[torch.Tensor, torch.Tensor, float, float] | None:
    """The codes of entries ``i`` and ``j`` with their norms, for :func:`_near`."""
    ci, cj = coded[i], coded[j]
    return None if ci is None or cj is None else (ci, cj, norms[i], norms[j])


def _screen(rows: _Rows, norms: Sequence[float], rule: DuplicateRule) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, certainly not near-identical: both of the round's common
    shape, nonzero norms, and a screening cosine below the lower of ``rule.cosine`` and
    ``rule.scaled_cosine``, less :data:`SCREEN_MARGIN` (so not equal either: equal updates have
    cosine 1)."""
    flats = rows.flats
    idx = [i for i, f in enumerate(flats) if f is not None and norms[i] > 0.0]
    if len(idx) < 2:
        return set()
    shape = flats[idx[0]].shape  # type: ignore[union-attr]
    idx = [i for i in idx if flats[i].shape == shape]  # type: ignore[union-attr]
    if len(idx) < 2 or not all(1e-100 < norms[i] < 1e100 for i in idx):
        return set()
    scale = torch.tensor([norms[i] for i in idx], dtype=torch.float64)
    if rows.matrix is not None and all(i in rows.row_of for i in idx):
        # the product of every row of the matrix, then the screened rows' entries: any
        # summation order errs far less than SCREEN_MARGIN, and the exact rule decides the rest
        at = torch.tensor([rows.row_of[i] for i in idx])
        gram = (rows.matrix @ rows.matrix.T)[at][:, at]
    else:
        stacked = torch.stack([flats[i] for i in idx])  # type: ignore[misc]
        gram = stacked @ stacked.T
    cosines = gram / torch.outer(scale, scale)
    floor = rule.cosine if rule.scaled_cosine is None else min(rule.cosine, rule.scaled_cosine)
    below = (cosines < floor - SCREEN_MARGIN).tolist()
    return {
        (idx[a], idx[b]) for a in range(len(idx)) for b in range(a + 1, len(idx)) if below[a][b]
    }
