"""Honest false positives of the duplicate rule's ``either_order`` (attack a99): in a mixed
federation (some sites send ``topk8``, the others dense) the two sparse tests judge every sparse
update against every other update of its round, whichever committed first.

Runs the seeded FedAvg simulation (``_sim``, dense training) and, per round, sends every
``--every``-th site's update (sites 1, 1 + every, ...) through ``topk8`` at ``--fraction``
(with each site's error-feedback residual, as a node encodes, unless ``--no-error-feedback``;
a node's first round has none) and decodes it, as every reader sees it. For every
ordered pair (original ``a``, judged ``b``) of one round with ``b`` sparse
(:func:`fedtrail.protocol.duplicates.sparse`) it measures

* the kept-entries share :func:`~fedtrail.protocol.duplicates.support_overlap` (``a``, ``b``)
  against ``duplicates.support_overlap`` (0.99), split by whether ``a`` is dense (the pairs
  only ``either_order`` tests when the sparse one committed first) or sparse too;
* the support cosine ``support_cosine`` reads (``a`` restricted to ``b``'s nonzero entries
  against ``b``, plain and codes, the larger; only where ``b`` leaves out some of ``a``'s
  nonzero entries) against ``duplicates.support_cosine`` (0.999995);

for every ordered pair with ``a`` sparse, what a test of a copy that keeps all of its
original's entries and adds others would read (a93's ``HONEST_TOPK`` mode: the copy through
``topk8`` at twice the original's fraction): the share of ``a``'s nonzero entries where ``b`` is
nonzero (containment) and the cosine of ``b`` restricted to ``a``'s nonzero entries against ``a``
(restricted cosine), for ``b`` sparse, ``b`` dense, and ``b`` another site's update through
``topk8`` at twice the fraction; beside a93's such copies of the sparse site's own update
(noise :data:`NEAR_NOISE`, its containment and restricted cosine minima);

and runs the product's :func:`~fedtrail.protocol.duplicates.find_duplicates` under the terms'
rule written now (``DuplicateRule()``, the white-noise test with the aggregator's statistic) on
the round in the simulation's order and in reverse order (sparse sites first and last),
counting the honest updates it marks, and under the one-way rule (``either_order`` absent)
for comparison, each mark listed. Prints per configuration the maxima against the thresholds;
exit status 1 when any honest update is marked (either rule) or a share reaches a threshold.

    OMP_NUM_THREADS=1 python scripts/bench/either_order.py --sites 5,10,50 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.duplicates import Entry, codes, find_duplicates, sparse, support_overlap
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.storage.codec import Compression, decode_update, encode_update
from fedtrail.valuation.freeride import duplicate_residual_z
from scripts.bench import _sim
from scripts.bench._sim import SimConfig, parse_seeds

Delta = Mapping[str, torch.Tensor]


def _flat(d: Delta) -> torch.Tensor:
    return torch.cat([d[k].to(torch.float64).reshape(-1) for k in sorted(d)])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0


def support_cos(a: Delta, b: Delta) -> float | None:
    """The larger of the plain and codes' cosine ``support_cosine`` compares (``a``
    restricted to ``b``'s nonzero entries against ``b``); None where ``b`` leaves out none of
    ``a``'s nonzero entries (the test does not apply)."""
    kept = {k: torch.where(b[k] != 0, a[k].to(torch.float64), 0.0) for k in a}
    if all(torch.equal(kept[k], a[k].to(torch.float64)) for k in a):
        return None
    return max(_cos(_flat(kept), _flat(b)), _cos(codes(kept), codes(b)))


NEAR = 0.98
"""Kept-entries shares above this are printed with their support cosine and white-noise
statistic (``near:`` lines), beside a93's copies of the same original at these noise levels."""

NEAR_NOISE = (0.05, 0.2)


def inside_stats(a: Delta, b: Delta) -> tuple[float, float]:
    """For a sparse original ``a`` and a later ``b``: the share of ``a``'s nonzero entries
    at which ``b`` is nonzero (containment), and the cosine of ``b`` restricted to ``a``'s
    nonzero entries against ``a`` (the restricted cosine): what a test of a copy that keeps
    all of its original's entries and adds others (a93's ``HONEST_TOPK`` mode) would read."""
    fa, fb = _flat(a), _flat(b)
    nz = fa != 0
    total = int(nz.sum())
    contained = int((nz & (fb != 0)).sum()) / total if total else 0.0
    return contained, _cos(fa, torch.where(nz, fb, 0.0))


def a93_superset_copy(dense: Delta, r: int, i: int, level: float, fraction: float) -> Delta:
    """a93's copy in its ``HONEST_TOPK`` mode: the site's dense delta through ``topk8`` at
    ``fraction`` (twice the original's), Gaussian noise of ``level`` times its norm on the
    entries it keeps, recoded at that fraction."""
    spec = ModelSpec()
    comp = Compression(method="topk8", fraction=fraction)

    def via(d: Delta) -> Delta:
        blob = encode_update(dict(d), spec=spec, round=r, compression=comp).blob
        return decode_update(blob, spec=spec, expected_round=r)[0]

    copy = via(dense)
    nz = sum(int((t != 0).sum()) for t in copy.values())
    sd = float(_flat(copy).norm()) * level / max(nz, 1) ** 0.5
    gen = torch.Generator().manual_seed(9300 + r * 100 + i)
    if level == 0.0:
        return copy
    noisy = {
        k: torch.where(t != 0, t + (torch.randn(t.shape, generator=gen) * sd).to(t.dtype), t)
        for k, t in copy.items()
    }
    return via(noisy)


def measure(
    config: SimConfig, splits: Any, every: int, fraction: float, feedback: bool
) -> dict[str, Any]:
    spec = ModelSpec()
    residuals: dict[int, Any] = {}  # site -> its error-feedback residual (a node keeps one)
    out: dict[str, Any] = {"dense_a": [], "sparse_a": [], "cos": [], "rounds": 0}
    out["inside"] = []  # (containment, restricted cosine, b sparse) for a sparse, any b
    out["copies"] = []  # the HONEST_TOPK-mode a93 copies: (containment, restricted cosine)
    out["wide"] = []  # honest sparse a against another site's update at twice the fraction
    wide: dict[int, Delta] = {}
    out["marked"] = out["one_way"] = 0
    real = _sim.aggregate
    rule = DuplicateRule()
    old = DuplicateRule(either_order=None)  # the one-way rule (either_order absent)

    def near_pair(r: int, i: int, j: int, a: Delta, b: Delta, share: float) -> None:
        """A pair near the kept-entries threshold: its support cosine and the white-noise
        statistic of ``b``'s residual from ``a`` on ``b``'s entries (``a`` set to 0 where ``b``
        is), beside the same for a93's copies of ``a`` (``topk8`` at ``b``'s fraction, noise of
        :data:`NEAR_NOISE` of its norm on the entries it keeps, recoded): what a test of the
        kept entries or of their values would have to tell apart."""
        cut = {k: torch.where(b[k] != 0, a[k], torch.zeros((), dtype=a[k].dtype)) for k in a}
        comp = Compression(method="topk8", fraction=fraction)
        copy = decode_update(
            encode_update(dict(a), spec=spec, round=r, compression=comp).blob,
            spec=spec,
            expected_round=r,
        )[0]
        parts = []
        for level in NEAR_NOISE:
            gen = torch.Generator().manual_seed(r * 1000 + i)
            norm = float(_flat(copy).norm())
            nz = sum(int((t != 0).sum()) for t in copy.values())
            sd = norm * level / nz**0.5
            noisy = {
                k: torch.where(t != 0, t + torch.randn(t.shape, generator=gen) * sd, 0.0).to(
                    t.dtype
                )
                for k, t in copy.items()
            }
            noisy = decode_update(
                encode_update(noisy, spec=spec, round=r, compression=comp).blob,
                spec=spec,
                expected_round=r,
            )[0]
            cut_c = {
                k: torch.where(noisy[k] != 0, a[k], torch.zeros((), dtype=a[k].dtype)) for k in a
            }
            parts.append(
                f"a93 copy ({level:g}): share {support_overlap(a, noisy):.4f} support cosine "
                f"{support_cos(a, noisy) or float('nan'):.6f} white z "
                f"{duplicate_residual_z(noisy, cut_c):.1f}"
            )
        print(
            f"    near: round {r} s{j:03d} on s{i:03d}: share {share:.4f} support cosine "
            f"{support_cos(a, b) or float('nan'):.6f} white z on its entries "
            f"{duplicate_residual_z(b, cut):.1f} | " + " | ".join(parts),
            flush=True,
        )

    def spy(agg: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        r = out["rounds"] = out["rounds"] + 1
        sent: list[Delta] = []
        for i, d in enumerate(deltas):
            if i % every == 1 % every:
                prior = residuals.get(i) if feedback else None
                dense = {k: d[k] + prior[k] for k in d} if prior is not None else d  # as encoded
                comp = Compression(method="topk8", fraction=fraction)
                enc = encode_update(
                    dict(d),
                    spec=spec,
                    round=r,
                    compression=comp,
                    residual=residuals.get(i) if feedback else None,
                )
                residuals[i] = enc.residual
                d = decode_update(enc.blob, spec=spec, expected_round=r)[0]
                wide[i] = a93_superset_copy(dense, r, i, 0.0, 2 * fraction)
                for level in NEAR_NOISE:
                    cp = a93_superset_copy(dense, r, i, level, 2 * fraction)
                    out["copies"].append((level, *inside_stats(d, cp)))
            sent.append(d)
        for i, a in enumerate(sent):
            if not sparse(a):
                continue
            for j, b in enumerate(sent):
                if i != j:
                    out["inside"].append((*inside_stats(a, b), sparse(b)))
                    if j in wide:
                        out["wide"].append(inside_stats(a, wide[j]))
        for j, b in enumerate(sent):
            if not sparse(b):
                continue
            for i, a in enumerate(sent):
                if i == j:
                    continue
                key = "sparse_a" if sparse(a) else "dense_a"
                share = support_overlap(a, b)
                out[key].append(share)
                if share > NEAR:
                    near_pair(r, i, j, a, b, share)
                c = support_cos(a, b)
                if c is not None:
                    out["cos"].append(c)
        for order in (list(range(len(sent))), list(range(len(sent)))[::-1]):
            entries = [Entry(f"s{i:03d}", n + 1, f"{i:064x}", sent[i]) for n, i in enumerate(order)]
            for key, judge in (("marked", rule), ("one_way", old)):
                got = find_duplicates(entries, judge, whiteness=duplicate_residual_z)
                out[key] += len(got)
                for copy, original in sorted(got.items()):
                    c, o = int(copy[1:]), int(original[1:])
                    kind = f"{'sparse' if sparse(sent[c]) else 'dense'} copy of " + (
                        "sparse" if sparse(sent[o]) else "dense"
                    )
                    print(
                        f"    {key}: round {r} {copy} ({kind}, committed "
                        f"{'first' if order.index(c) < order.index(o) else 'second'}): "
                        f"kept-entries share {support_overlap(sent[o], sent[c]):.4f}",
                        flush=True,
                    )
        return real(agg, deltas, weights, **kw)

    _sim.aggregate = spy  # type: ignore[assignment]
    try:
        _sim.run_method("fedavg", config, splits)
    finally:
        _sim.aggregate = real  # type: ignore[assignment]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", default="5,10,50")
    parser.add_argument("--alphas", default="1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=2, help="every n-th site sends topk8")
    parser.add_argument("--fraction", type=float, default=0.05, help="their topk8 fraction")
    parser.add_argument(
        "--error-feedback",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the sparse sites carry topk8's residual from round to round, as a node does "
        "(--no-error-feedback: every round encoded alone, as a node's first round)",
    )
    parser.add_argument("--min-size", type=int, default=20, help="smallest site (images)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = load_bundled()
    rule = DuplicateRule()
    overlap, support = rule.support_overlap, rule.support_cosine
    assert overlap is not None and support is not None
    started = time.perf_counter()
    bad = 0
    print(
        f"topk8 {args.fraction:g} every {args.every}"
        f"{'' if args.error_feedback else ', no error feedback'}: sites alpha  kept-entries "
        f"share max, dense original (> {overlap:g}) | sparse original   "
        f"support cosine max (> {support:g})"
        "   honest marked by find_duplicates, both orders (one-way rule)"
    )
    for n in (int(x) for x in args.sites.split(",") if x):
        for alpha in (float(x) for x in args.alphas.split(",") if x):
            dense_a: list[float] = []
            sparse_a: list[float] = []
            cos: list[float] = []
            marked = one_way = 0
            inside: list[tuple[float, float, bool]] = []
            copies: list[tuple[float, float, float]] = []
            wides: list[tuple[float, float]] = []
            for seed in parse_seeds(args.seeds):
                config = SimConfig(
                    sites=n, rounds=args.rounds, alpha=alpha, seed=seed, min_size=args.min_size
                )
                got = measure(config, splits, args.every, args.fraction, args.error_feedback)
                dense_a += got["dense_a"]
                sparse_a += got["sparse_a"]
                cos += got["cos"]
                marked += got["marked"]
                inside += got["inside"]
                copies += got["copies"]
                wides += got["wide"]
                one_way += got["one_way"]
            over = sum(x > overlap for x in dense_a + sparse_a)
            cover = sum(x > support for x in cos)
            bad += over + cover + marked + one_way
            print(
                f"  {n:5d} {alpha:5g}  {max(dense_a, default=float('nan')):.4f} "
                f"({sum(x > overlap for x in dense_a)}/{len(dense_a)}) | "
                f"{max(sparse_a, default=float('nan')):.4f} "
                f"({sum(x > overlap for x in sparse_a)}/{len(sparse_a)})   "
                f"{max(cos, default=float('nan')):.6f} ({cover}/{len(cos)})   {marked} "
                f"(one-way rule: {one_way})",
                flush=True,
            )
            for kind, rows in (
                ("sparse b", [x for x in inside if x[2]]),
                ("dense b", [x for x in inside if not x[2]]),
            ):
                full = [c for s_, c, _ in rows if s_ >= 0.99]
                print(
                    f"      sparse a, {kind}: containment max "
                    f"{max((x[0] for x in rows), default=float('nan')):.4f}, restricted cosine "
                    f"max {max((x[1] for x in rows), default=float('nan')):.6f} "
                    f"(where containment >= 0.99: {max(full, default=float('nan')):.6f}, "
                    f"{len(full)}/{len(rows)} pairs)",
                    flush=True,
                )
            print(
                f"      sparse a, another site's topk8 at {2 * args.fraction:g}: containment max "
                f"{max((x[0] for x in wides), default=float('nan')):.4f}, restricted cosine max "
                f"{max((x[1] for x in wides), default=float('nan')):.6f} ({len(wides)} pairs)",
                flush=True,
            )
            for level in NEAR_NOISE:
                got_c = [x for x in copies if x[0] == level]
                print(
                    f"      a93 superset copies (noise {level:g}, topk8 {2 * args.fraction:g}): "
                    f"containment min {min((x[1] for x in got_c), default=float('nan')):.4f}, "
                    f"restricted cosine min {min((x[2] for x in got_c), default=float('nan')):.6f}"
                    f" ({len(got_c)})",
                    flush=True,
                )
    print(f"{time.perf_counter() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
