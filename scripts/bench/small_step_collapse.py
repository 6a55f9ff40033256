"""Why issue 12 (f)'s seed 3 collapses at alpha 1 (h-274): the accuracy bench's split and faults,
trained as FedAvg (sample-count weights), traced per round.

Prints the split (each site's images and positive rate), then per round: each site's honest
step applied alone to the global model (test AUC), the FedAvg global model's test AUC (the
bench's ``evaluate`` and scikit-learn's ``roc_auc_score`` on the same logits, a check of the
bench's AUC), the mean predicted P(class 1) and the gap between the classes' mean logit
margins (near 0: a near-constant model). Then the counterfactuals: the same federation with
one site's weight multiplied by each of ``--mults`` (0: the site left out), the test AUC after
every round. ``--scenario a`` gives the clean split's ones::

    OMP_NUM_THREADS=1 python scripts/bench/small_step_collapse.py --scenario f --seed 3 \\
        --trace-rounds 6 --rounds 10 --site 3 --mults 0,0.25,0.5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.aggregation import apply_delta
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.metrics import evaluate, predict_logits
from fedtrail.ml.models import ModelSpec, federated_state, initial_model, load_federated
from fedtrail.ml.training import train_local
from scripts.bench import _sim, accuracy

State = dict[str, torch.Tensor]


def _metrics(
    spec: ModelSpec, state: Mapping[str, torch.Tensor], ds: ImageDataset
) -> dict[str, float]:
    model = initial_model(spec, seed=0)
    load_federated(model, state)
    logits = np.asarray(predict_logits(model, ds))
    margin = logits[:, 1] - logits[:, 0]
    y = np.asarray(ds.labels)
    return {
        "bench_auc": float(evaluate(model, ds).auc),
        "sklearn_auc": float(roc_auc_score(y, margin)),
        "mean_p1": float(np.mean(1.0 / (1.0 + np.exp(-margin)))),
        "gap": float(np.mean(margin[y == 1]) - np.mean(margin[y == 0])),
    }


def _steps(
    config: _sim.SimConfig,
    spec: ModelSpec,
    state: State,
    data: Sequence[ImageDataset],
    r: int,
    skip: set[int],
) -> tuple[list[State | None], list[State | None]]:
    """Each site's honest update of round ``r`` and what it sends (its fault applied)."""
    honest: list[State | None] = []
    sent: list[State | None] = []
    for i, ds in enumerate(data):
        if i in skip:
            honest.append(None)
            sent.append(None)
            continue
        tc = _sim._train_config(config, config.epochs, _sim._sub_seed(config.seed, i, r))
        delta = dict(train_local(state, ds, spec=spec, config=tc).delta)
        honest.append(delta)
        sent.append(dict(config.site_faults[i].apply_to_update(delta, round_id=r)))
    return honest, sent


def _average(state: State, sent: Sequence[State | None], weights: Sequence[float]) -> State:
    total = sum(w for w, d in zip(weights, sent, strict=True) if d is not None)
    agg = {
        k: sum(w / total * d[k] for w, d in zip(weights, sent, strict=True) if d is not None)
        for k in state
    }
    return dict(apply_delta(state, agg))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="f")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--trace-rounds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=10, help="rounds of each counterfactual")
    parser.add_argument("--site", type=int, default=3, help="the site whose weight is scaled")
    parser.add_argument("--mults", default="0,0.25,0.5", help="its weight multipliers ('' none)")
    args = parser.parse_args(argv)
    splits = load_source("pneumonia").splits()
    spec = ModelSpec()
    sc = accuracy.SCENARIOS[args.scenario]
    config = _sim.SimConfig(
        sites=sc.sites,
        rounds=args.rounds,
        alpha=args.alpha,
        seed=args.seed,
        faults=sc.faults(args.seed),
    )
    data = _sim.site_splits(splits.train, config)
    counts = [float(len(d)) for d in data]
    print(f"({args.scenario}) alpha {args.alpha:g} seed {args.seed}: faults {config.fault_labels}")
    print("  images   ", " ".join(f"{int(n):6d}" for n in counts))
    pos = [float(np.mean(np.asarray(d.labels))) for d in data]
    print("  positive ", " ".join(f"{p:6.3f}" for p in pos))
    init: State = {
        k: v.detach().clone() for k, v in federated_state(initial_model(spec, args.seed)).items()
    }
    state = dict(init)
    m = _metrics(spec, state, splits.test)
    print(f"  initial model: test AUC {m['sklearn_auc']:.3f}")
    for r in range(1, args.trace_rounds + 1):
        honest, sent = _steps(config, spec, state, data, r, set())
        alone = []
        for d in honest:
            assert d is not None
            alone.append(_metrics(spec, apply_delta(state, d), splits.test)["sklearn_auc"])
        state = _average(state, sent, counts)
        m = _metrics(spec, state, splits.test)
        print(
            f"  round {r}: honest step alone "
            + " ".join(f"{a:.3f}" for a in alone)
            + f" | FedAvg AUC {m['bench_auc']:.3f} (sklearn {m['sklearn_auc']:.3f}), mean "
            f"P(1) {m['mean_p1']:.3f}, class margin gap {m['gap']:+.3f}"
        )
    mults = [float(x) for x in args.mults.split(",") if x]
    for mult in mults:
        weights = [c * (mult if i == args.site else 1.0) for i, c in enumerate(counts)]
        skip = {i for i, w in enumerate(weights) if w == 0}
        state = dict(init)
        aucs = []
        for r in range(1, args.rounds + 1):
            _, sent = _steps(config, spec, state, data, r, skip)
            state = _average(state, sent, weights)
            aucs.append(_metrics(spec, state, splits.test)["sklearn_auc"])
        share = weights[args.site] / sum(weights)
        print(
            f"  site {args.site} weight x{mult:g} (share {share:.3f}): test AUC by round "
            + " ".join(f"{a:.3f}" for a in aucs)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
