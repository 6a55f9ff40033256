"""A13 (measurement): the duplicate check's cost on adversarial inputs.

``find_duplicates`` screens every pair with blocked float32 Gram products (plain and int8 codes) and
decides the pairs it cannot rule out exactly (two norms and a dot product each, plus a codes
dot product). The screen's floor is the lower of ``cosine`` (0.9999) and ``scaled_cosine``, so
Sybils that register many addresses and send updates whose pairwise cosines all lie between
0.9999 and 0.999995 (here 1 - 5.5e-6; a 0.4-1% noise copy of one update lands there) leave
every pair to the exact rule, and none is a duplicate. Prints seconds for n SmallCNN-sized
updates, honest-like (independent directions) against the band, and how many pairs were left
to the exact rule.

usage: python attacks/a13_duplicate_cost.py [n ...]   (default 50 100)
"""

import sys
import time

import torch

torch.set_num_threads(1)
from fedtrail.ml.models import ModelSpec, federated_state, initial_model  # noqa: E402
from fedtrail.protocol import duplicates  # noqa: E402
from fedtrail.protocol.terms import DuplicateRule  # noqa: E402
from fedtrail.valuation.freeride import duplicate_residual_z  # noqa: E402

ns = [int(a) for a in sys.argv[1:]] or [50, 100]
shapes = {k: v.shape for k, v in federated_state(initial_model(ModelSpec(), 0)).items()}
rule = DuplicateRule(white_noise_z=None)  # random updates: their residuals are white
print("rule:", rule)


def unflat(x):
    out, i = {}, 0
    for k in sorted(shapes):
        n = shapes[k].numel()
        out[k] = x[i : i + n].reshape(shapes[k]).float()
        i += n
    return out


def entries(n, eps, seed):
    g = torch.Generator().manual_seed(seed)
    size = sum(s.numel() for s in shapes.values())
    base = torch.randn(size, generator=g, dtype=torch.float64)
    out = []
    for i in range(n):
        e = torch.randn(size, generator=g, dtype=torch.float64)
        x = base + eps * e if eps is not None else e
        out.append(duplicates.Entry(f"s{i:03d}", i + 1, f"{i:064x}", unflat(x)))
    return out


screened = duplicates._screen
for n in ns:
    for label, eps in (("honest-like", None), ("band", (5.5e-6 / 2) ** 0.5 * 2**0.5)):
        es = entries(n, eps, n)
        flats = [duplicates._flat(e.delta) for e in es]
        c = float(flats[0] @ flats[1]) / float(flats[0].norm() * flats[1].norm())
        floor = min(rule.cosine, rule.scaled_cosine or rule.cosine)
        width = flats[0].numel()
        deltas = [e.delta for e in es]
        apart, buffer = screened(deltas, width, duplicates._fill_plain, floor)
        if rule.scaled_cosine is not None:
            apart &= screened(deltas, width, duplicates._fill_codes, floor, buffer)[0]
        t0 = time.perf_counter()
        copies = duplicates.find_duplicates(es, rule, whiteness=duplicate_residual_z)
        dt = time.perf_counter() - t0
        pairs = n * (n - 1) // 2
        print(
            f"n={n} {label:11s}: cosine s0-s1 {c:.7f}, pairs left to the exact rule "
            f"{pairs - len(apart)} of {pairs}, duplicates {len(copies)}, {dt:.2f} s"
        )
