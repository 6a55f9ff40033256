"""What the duplicate rule's white-noise test (``duplicates.white_noise_z``) costs a round:
``find_duplicates`` over N synthetic SmallCNN-shaped updates (each row and column of a tensor
its own log-normal scale, shared by all, plus a shared and an own Gaussian part: pairwise
cosine about 0.5, none a copy), with and without the test, alternated R times in one process.
Prints the median seconds of each; exit 1 if any update is marked (none is a copy). A third
argument names another field of the rule to time the same way (``shared_tensor``: the
shared-tensor test, with and without).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/dup_white_cost.py 10,100 3
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/dup_white_cost.py 10,100 3 shared_tensor
"""

from __future__ import annotations

import math
import statistics
import sys
import time

import torch

from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.valuation.freeride import duplicate_residual_z


def updates(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in initial_model(ModelSpec(), 0).state_dict().items()}
    scales, common = {}, {}
    for name, shape in shapes.items():
        if len(shape) >= 2:
            rows = torch.randn(shape[0], 1, generator=gen).exp()
            cols = torch.randn(1, math.prod(shape[1:]), generator=gen).exp()
            scales[name] = (rows * cols).reshape(shape)
        else:
            scales[name] = torch.randn(shape, generator=gen).exp()
        common[name] = torch.randn(shape, generator=gen)
    return [
        {
            k: (scales[k] * (common[k] + torch.randn(s, generator=gen))).to(torch.float32)
            for k, s in shapes.items()
        }
        for _ in range(n)
    ]


def main() -> int:
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "10,100").split(",")]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    key = sys.argv[3] if len(sys.argv) > 3 else "white_noise_z"
    without = DuplicateRule(**{key: None})  # type: ignore[arg-type]
    torch.set_num_threads(1)
    marked = 0
    for n in sizes:
        entries = [Entry(f"s{i:03d}", i + 1, f"{i:064x}", d) for i, d in enumerate(updates(n))]
        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(repeats):
            for label, rule in (
                ("without", without),
                ("with", DuplicateRule()),
            ):
                t0 = time.perf_counter()
                marked += len(find_duplicates(entries, rule, whiteness=duplicate_residual_z))
                times[label].append(time.perf_counter() - t0)
        print(
            f"{n} updates: without {key} {statistics.median(times['without']):.2f} s, "
            f"with {statistics.median(times['with']):.2f} s (median of {repeats})",
            flush=True,
        )
    print(f"updates marked: {marked}")
    return 1 if marked else 0


if __name__ == "__main__":
    raise SystemExit(main())
