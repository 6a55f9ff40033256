"""Which updates of a round repeat an earlier one: decided by commit order, never by address.

Commit order is the chain order of the round's ``UpdateCommitted`` events: nobody can see an
update before the commit window closes, so the earliest commitment is the original and every
later byte-identical or numerically near-identical update is the copy. The aggregator marks the
copies DUPLICATE before valuing the round and an auditor re-derives the same marks from the
same public data, with the thresholds the round's terms name
(:class:`~fedtrail.protocol.terms.DuplicateRule`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from fedtrail.protocol.terms import DuplicateRule

__all__ = ["Entry", "find_duplicates", "near_identical"]


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


def near_identical(a: torch.Tensor, b: torch.Tensor, rule: DuplicateRule) -> bool:
    """Whether flat updates ``a`` (the earlier) and ``b`` are the same update under ``rule``:
    equal, or cosine > rule.cosine and ||b - a|| / ||a|| < rule.relative_l2."""
    if a.shape != b.shape:
        return False
    if torch.equal(a, b):
        return True
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return False
    cosine = float(torch.dot(a, b)) / (na * nb)
    return cosine > rule.cosine and float((b - a).norm()) / na < rule.relative_l2


def find_duplicates(entries: Sequence[Entry], rule: DuplicateRule) -> dict[str, str]:
    """Site -> the earlier site whose update it repeats, for every copy. Entries are taken in
    commit order; a copy is compared with the originals before it (not with other copies), so
    the result does not depend on addresses or on the order ``entries`` come in."""
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
