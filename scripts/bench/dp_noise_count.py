"""The noise check's credited count (``dp_noise_check`` 2, attack a97): honest margins and the
cheapest declaration a plain update passes under, whatever count a site claims.

Part 1 trains honest DP-SGD updates with the node's :func:`train_private` from the initial
SmallCNN on shards of the bundled training split, at settings where the signal is largest
(small noise, several epochs, large batches), and prints the signal each needs against
``Lambda`` at its true count and at :data:`~fedtrail.ml.dp_noise.NOISE_COUNT`. Part 2 trains
one plain update of 150 images and searches DP parameters (sample rates down to 1e-9, up to
1e7 steps) for the smallest epsilon whose ``Lambda`` at each count covers what it needs: a
rate that small takes a claimed count of ``1 / rate``, so this is the detection limit when
nothing bounds the claim.

Target (exit 1 when missed): every honest update passes at the credited count
(:func:`~fedtrail.ml.dp_noise.noise_breach` under rule 2). Part 2 is reported.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/dp_noise_count.py
"""

from __future__ import annotations

import sys

import numpy as np

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.dp_noise import (
    CREDITED_COUNT,
    NOISE_COUNT,
    allowed_signal,
    check_noise,
    noise_breach,
)
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.privacy import DP_LR, DP_MOMENTUM, DpSettings, epsilon_spent, train_private
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.protocol.privacy import DpParams

HONEST = [  # images, noise multiplier, epochs, expected batch
    (150, 1.0, 1, 128),
    (150, 0.5, 3, 128),
    (600, 0.3, 2, 128),
    (1500, 0.5, 1, 128),
    (1500, 1.0, 2, 256),
    (2428, 0.7, 1, 512),
]
RATES = [1e-9, 1e-7, 1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
SIGMAS = [0.5, 0.7, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0]
STEPS = [10**k for k in range(8)] + [3 * 10**k for k in range(7)]


def main() -> int:
    spec = ModelSpec()
    data = load_bundled()
    perm = np.random.default_rng(0).permutation(len(data.train.labels))
    start = federated_state(initial_model(spec, 0))
    failed = 0
    for n, sigma, epochs, batch in HONEST:
        n = min(n, len(data.train.labels))
        shard = data.train.subset(perm[:n])
        dp = DpSettings(noise_multiplier=sigma, batch_size=batch, lr=DP_LR, momentum=DP_MOMENTUM)
        out = train_private(
            start,
            shard,
            spec=spec,
            config=TrainConfig(seed=0, epochs=epochs),
            settings=dp,
            delta=1e-5,
        )
        verdict = check_noise(out.local.delta, out.params, n)
        credited = allowed_signal(out.params, min(n, NOISE_COUNT))
        bad = noise_breach(out.local.delta, out.params, n, "none", CREDITED_COUNT) is not None
        failed += bad
        print(
            f"honest {n} images, noise {sigma}, {epochs} epoch(s), batch {batch}: needs "
            f"{verdict.needed:.2f}; Lambda {verdict.allowed:.1f} at {n}, {credited:.1f} at "
            f"{min(n, NOISE_COUNT)}: {'FAILS' if bad else 'passes'}",
            flush=True,
        )
    shard = data.train.subset(perm[:150])
    plain = train_local(start, shard, spec=spec, config=TrainConfig(seed=0)).delta
    probe = DpParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=1, delta=1e-5)
    needed = check_noise(plain, probe, 150).needed
    print(f"plain update of 150 images needs {needed:.1f} noise units")
    eps: dict[tuple[float, int, float], float] = {}
    for count in (16, NOISE_COUNT, 64, 150):
        best: tuple[float, DpParams] | None = None
        for q in RATES:
            for sigma in SIGMAS:
                for steps in STEPS:
                    p = DpParams(
                        noise_multiplier=sigma,
                        max_grad_norm=1.0,
                        sample_rate=q,
                        steps=steps,
                        delta=1e-5,
                    )
                    if allowed_signal(p, count) < needed:
                        continue
                    key = (q, steps, sigma)
                    if key not in eps:
                        eps[key] = epsilon_spent(p)
                    if best is None or eps[key] < best[0]:
                        best = (eps[key], p)
        if best is None:
            print(f"count {count}: no declaration on the grid passes")
        else:
            p = best[1]
            print(
                f"count {count}: cheapest passing declaration {best[0]:.3f} epsilon (rate "
                f"{p.sample_rate:g}, {p.steps} steps, noise {p.noise_multiplier})",
                flush=True,
            )
    print(f"honest updates failing at the credited count: {failed} of {len(HONEST)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
