"""The public DP noise check (issue 16, attack a24) on honest and plain updates.

Trains ``--seeds`` honest DP-SGD updates with the node's own :func:`train_private` (the node's
``[privacy]`` defaults: expected batch 128, lr 0.5, momentum 0, at ``--noise``) from the
federation's initial SmallCNN on ``--images`` images of the bundled training split, and one
plain update (``[training]``'s batch 32, momentum 0.9, no clipping, no noise) per seed under the
same declaration; prints each one's verdict of :func:`fedtrail.ml.dp_noise.check_noise`: the
signal its block norms need at the best noise scale against the most the parameters allow.

Targets (exit 1 when missed): every honest update passes (the check's false-positive rate is
at most 1e-9 by construction; this measures it at 0 of ``--seeds``). The plain updates' failures
are reported, not required: where ``Lambda`` nears ``sqrt(P)`` the noise cannot be told from a
signal (many steps, small noise multiplier).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/dp_noise.py --images 150 --seeds 50
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.dp_noise import check_noise
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.privacy import DP_BATCH_SIZE, DP_LR, DP_MOMENTUM, DpSettings, train_private
from fedtrail.ml.training import TrainConfig, train_local


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--noise", type=float, default=2.0)
    args = parser.parse_args()
    spec = ModelSpec()
    data = load_bundled()
    perm = np.random.default_rng(0).permutation(len(data.train.labels))
    shard = data.train.subset(perm[: args.images])
    start = federated_state(initial_model(spec, 0))
    dp = DpSettings(
        noise_multiplier=args.noise, batch_size=DP_BATCH_SIZE, lr=DP_LR, momentum=DP_MOMENTUM
    )
    worst, failed, caught = 0.0, 0, 0
    for seed in range(args.seeds):
        out = train_private(
            start, shard, spec=spec, config=TrainConfig(seed=seed), settings=dp, delta=1e-5
        )
        honest = check_noise(out.local.delta, out.params, args.images)
        plain = check_noise(
            train_local(start, shard, spec=spec, config=TrainConfig(seed=seed)).delta,
            out.params,
            args.images,
        )
        worst = max(worst, honest.needed / honest.allowed)
        failed += not honest.ok
        caught += not plain.ok
        print(
            f"seed {seed}: honest needs {honest.needed:.1f}, plain {plain.needed:.1f}, "
            f"allowed {honest.allowed:.1f} (steps {out.params.steps}, {honest.blocks} blocks)"
        )
    print(
        f"{args.images} images, noise {args.noise}: honest DP-SGD failed {failed} of {args.seeds}"
        f" (worst needed / allowed {worst:.3g}); plain updates failed {caught} of {args.seeds}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
