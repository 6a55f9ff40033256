#!/usr/bin/env python3
"""README's privacy accountant (*The privacy accountant, exactly*, run from its text) against
opacus' RDP accountant (what fedtrail declares with) over a grid of 1,785 parameter sets: how
many epsilons are bit-equal, the largest relative difference, and the micro-epsilon (on-chain
unit) mismatches. Exits 1 on any micro-epsilon mismatch. Takes ~5-11 min on one core.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/independent/accountant_grid.py
"""

import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from opacus.accountants.analysis import rdp as A

warnings.simplefilter("ignore")
text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
M = "<!-- rdp-reference -->\n```python\n"
s = text.index(M) + len(M)
ns = {}
exec(text[s : text.index("```", s)], ns)
AL = ns["ORDERS"]
cases = []
for sigma in [0.3, 0.5, 0.7, 1.0, 1.3, 2.0, 3.0, 5.0, 10.0]:
    for q in [0.005, 0.01, 0.02, 0.0205, 0.05, 0.1, 0.147, 0.3, 0.5, 0.9, 1.0]:
        for steps in [1, 7, 30, 100, 1000]:
            for delta in [1e-5, 1e-4, 1e-3]:
                cases.append((sigma, q, steps, delta))
for n in [100, 217, 648, 1563, 5000]:
    for batch in [32, 128]:
        q = min(1.0, batch / n)
        for sigma in [0.6, 0.8, 1.0, 1.5, 2.0]:
            for epochs in [1, 3]:
                for delta in [1e-5, 1e-4, 1e-3]:
                    cases.append((sigma, q, epochs * max(1, round(1 / q)), delta))
t0 = time.time()
curves = {}
bit = 0
bad = []
worst = 0.0
for sigma, q, steps, delta in cases:
    if (sigma, q) not in curves:
        curves[(sigma, q)] = np.asarray(
            A.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=AL)
        )
    co = curves[(sigma, q)]
    eo = float(A.get_privacy_spent(orders=AL, rdp=co * steps, delta=delta)[0])
    ep2 = ns["epsilon"]([(sigma, q, steps)], delta)
    bit += eo == ep2
    worst = max(worst, abs(eo - ep2) / eo)
    if math.ceil(eo * 1e6) != math.ceil(ep2 * 1e6):
        bad.append((sigma, q, steps, delta, eo, ep2))
print(
    f"{len(cases)} cases, {time.time() - t0:.0f} s: bit-equal {bit}, worst relative "
    f"{worst:.3g}, micro-epsilon mismatches {len(bad)} {bad[:3]}"
)
sys.exit(1 if bad else 0)
