"""Cost of the duplicate rule's ``support_cosine`` (attack a90) in ``find_duplicates``: N
synthetic updates shaped as the bundled SmallCNN's (heavy-tailed entries), judged with and
without the key, alternated in one process (ratio at the same load). Modes: ``halfzero`` (every
update zero on the same half of its entries, as dense updates from one start model are where
its units are dead) and ``sparse`` (each keeps its own largest 5% per tensor, as ``topk8``
sends: the screen's worst case, few of one update's maxima among another's entries).

``KEY=support_overlap``: the same for ``support_overlap`` (a93), the rule without it against
the default (``support_cosine`` on in both).

usage: .venv/bin/python scripts/bench/support_cost.py [N] [REPEATS]
Prints each timing; exits 1 when a rule marks any of these independent updates a copy.
"""

import os
import sys
import time

import torch

from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.valuation.freeride import duplicate_residual_z

torch.set_num_threads(1)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
KEY = os.environ.get("KEY", "support_cosine")
SHAPES = {k: v.shape for k, v in initial_model(ModelSpec(), 0).state_dict().items()}
GEN = torch.Generator().manual_seed(0)


def update(mode: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, shape in SHAPES.items():
        t = torch.randn(shape, generator=GEN)
        t = t * t.abs() * 1e-3
        flat = t.reshape(-1)
        if mode == "sparse":
            k = max(1, int(0.05 * flat.numel()))
            t = torch.where(t.abs() >= flat.abs().topk(k).values.min(), t, 0.0)
        else:
            mask = torch.zeros(flat.numel())
            mask[: flat.numel() // 2] = 1
            t = t * mask.reshape(shape)
        out[name] = t.float()
    return out


marked = 0
for mode in ("halfzero", "sparse"):
    entries = [Entry(f"s{i:03d}", i + 1, f"{i:064x}", update(mode)) for i in range(N)]
    for _ in range(REPEATS):
        for label, rule in (
            ("without", DuplicateRule(white_noise_z=None, **{KEY: None})),
            ("with", DuplicateRule(white_noise_z=None)),
        ):
            t0 = time.perf_counter()
            copies = find_duplicates(entries, rule, whiteness=duplicate_residual_z)
            print(f"{mode} {N} updates, {label} {KEY}: {time.perf_counter() - t0:.2f} s")
            marked += len(copies)
sys.exit(1 if marked else 0)
