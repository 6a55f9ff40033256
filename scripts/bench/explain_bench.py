"""Benchmark of the explanations: seconds per image per method, the shortcut-site detection, and
each method's faithfulness (deletion / insertion AUC against a random ordering).

Usage: .venv/bin/python scripts/bench/explain_bench.py [--repeats 3] [--threads 1] [--seeds 1]
       [--only timing,shortcut,faithfulness] [--images 64] [--epochs 3]

1. Timing: SmallCNN explains a batch of 32 validation images of the bundled PneumoniaMNIST
   subset with every method (default settings, plus integrated gradients with 16 steps as the
   explanation scorer uses it); the median wall-clock seconds per image over the repeats.
2. Shortcut detection, per seed: a global model trained 3 epochs on 600 training images; three
   honest sites and one shortcut site (a 4x4 tag of value 1.0 burned into the top-left corner of
   its pneumonia images) train 3 epochs on 400 images each from it. Every site model is probed
   with 32 validation images that carry the tag (for both classes) and, for comparison, the same
   images without it. Printed per site: the attribution share on the tag (integrated gradients,
   16 steps, and gradient SHAP), and the explanation scorer's components and score.
3. Faithfulness, per seed: SmallCNN trained ``--epochs`` epochs (seeded) on the bundled train
   split explains ``--images`` test images (an even, seeded draw of both classes) with every
   method at its default settings, for the predicted class. Per method: the mean deletion AUC
   (pixels removed most-attributed first, 10% per step, set to 0; lower is better) and
   insertion AUC (higher is better) over the images with their standard error, the deletion
   AUC minus the random ordering's on the same image (mean and standard error: the paired
   comparison, since images differ far more than methods), the share of images where it is
   below, and the milliseconds per image of the explanation (the measure itself is not timed).
   The random ordering (seeded) is the first row.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from fedtrail.ml.datasets import Splits, load_bundled
from fedtrail.ml.explain import METHODS, Explainer, region_share
from fedtrail.ml.explain.faithfulness import area, perturbation_curves, random_heatmaps
from fedtrail.ml.models import ModelSpec, federated_state, initial_model, load_federated
from fedtrail.ml.shortcuts import add_marker, marker_mask
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.explanation import ExplanationScorer

PROBE = 32


def _timing(splits: Splits, spec: ModelSpec, repeats: int) -> None:
    model = initial_model(spec, seed=0)
    probe = torch.from_numpy(np.array(splits.val.images[:PROBE]))
    runs: list[tuple[str, str, dict[str, int]]] = [(m, m, {}) for m in METHODS]
    runs.insert(1, ("integrated_gradients", "integrated_gradients (n_steps=16)", {"n_steps": 16}))
    print(f"\nexplanation time, batch of {PROBE} images (median of {repeats})")
    print(f"{'method':36s} {'ms/image':>9s} {'s/batch':>8s}")
    Explainer(model, "integrated_gradients", n_steps=4).explain(probe[:4])  # warm-up
    for method, label, settings in runs:
        walls = []
        for _ in range(repeats):
            t = time.perf_counter()
            Explainer(model, method, **settings).explain(probe)
            walls.append(time.perf_counter() - t)
        med = statistics.median(walls)
        print(f"{label:36s} {1000 * med / PROBE:9.2f} {med:8.3f}")


def _state_plus(
    state: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    return {k: v + delta[k] for k, v in state.items()}


def _shortcut(splits: Splits, spec: ModelSpec, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(len(splits.train))
    start = federated_state(initial_model(spec, seed=seed))
    warm = train_local(
        start, splits.train.subset(perm[:600]), spec=spec, config=TrainConfig(epochs=3, seed=seed)
    )
    global_state = _state_plus(start, warm.delta)
    candidates = []
    for i in range(4):
        data = splits.train.subset(perm[600 + 400 * i : 600 + 400 * (i + 1)])
        name = f"site{i}-honest"
        if i == 3:
            data = add_marker(data, corner="top_left", size=4, label=1)
            name = "site3-shortcut"
        cfg = TrainConfig(epochs=3, seed=10 * seed + i + 1)
        result = train_local(global_state, data, spec=spec, config=cfg)
        candidates.append(Candidate(name, result.num_samples, result.delta))
    idx = np.sort(np.random.default_rng(seed + 100).choice(len(splits.val), PROBE, replace=False))
    clean = splits.val.subset(idx)
    tagged = add_marker(clean, corner="top_left", size=4, label=None)
    mask = marker_mask((28, 28), corner="top_left", size=4)
    x = torch.from_numpy(np.array(tagged.images))

    ctx = ValuationContext(
        global_state=global_state,
        spec=spec,
        candidates=candidates,
        validation=splits.val,
        seed=seed,
    )
    t = time.perf_counter()
    on_tagged = ExplanationScorer(tagged).assess(ctx)
    scorer_s = time.perf_counter() - t
    on_clean = ExplanationScorer(clean).assess(ctx)

    print(
        f"\nshortcut detection, seed {seed} (scorer: {scorer_s:.2f} s for the global model and "
        f"{len(candidates)} sites on {PROBE} probes)"
    )
    print(
        f"{'site':16s} {'tag IG':>7s} {'tag SHAP':>8s} | tagged probes: {'rank':>5s} "
        f"{'top10%':>6s} {'corner':>6s} {'global':>6s} {'score':>6s} {'shift':>5s} | "
        f"clean: {'corner':>6s} {'score':>6s} {'shift':>5s}"
    )
    for cand in candidates:
        assert cand.delta is not None
        model = spec.build()
        load_federated(model, _state_plus(global_state, dict(cand.delta)))
        ig = Explainer(model, "integrated_gradients", n_steps=16).explain(x)
        shap = Explainer(model, "gradient_shap", seed=seed).explain(x)
        a, c = on_tagged[cand.site], on_clean[cand.site]
        print(
            f"{cand.site:16s} {region_share(ig.heatmaps, mask).mean():7.3f} "
            f"{region_share(shap.heatmaps, mask).mean():8.3f} | {'':15s}"
            f"{a.rank_correlation:5.3f} {a.top_k_overlap:6.3f} {a.region_share:6.3f} "
            f"{a.global_region_share:6.3f} {a.score:6.3f} {a.shifted!s:>5s} | {'':7s}"
            f"{c.region_share:6.3f} {c.score:6.3f} {c.shifted!s:>5s}"
        )


def _areas(
    model: torch.nn.Module, x: torch.Tensor, heat: np.ndarray, targets: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image deletion and insertion areas (10 steps, baseline 0)."""
    dele = perturbation_curves(model, x, heat, targets, mode="deletion", seed=seed)
    ins = perturbation_curves(model, x, heat, targets, mode="insertion", seed=seed)
    return area(dele), area(ins)


def _faithfulness(splits: Splits, spec: ModelSpec, images: int, epochs: int, seed: int) -> None:
    start = federated_state(initial_model(spec, seed=seed))
    t = time.perf_counter()
    trained = train_local(
        start, splits.train, spec=spec, config=TrainConfig(epochs=epochs, seed=seed)
    )
    train_s = time.perf_counter() - t
    model = spec.build()
    load_federated(model, _state_plus(start, trained.delta))
    model.eval()
    rng = np.random.default_rng(seed + 200)
    picks = np.concatenate(
        [
            rng.choice(np.flatnonzero(splits.test.labels == c), images // 2, replace=False)
            for c in (0, 1)
        ]
    )
    test = splits.test.subset(np.sort(picks))
    x = torch.from_numpy(np.array(test.images))
    with torch.no_grad():
        predicted = model(x).argmax(1).numpy()
    accuracy = float((predicted == test.labels).mean())
    print(
        f"\nfaithfulness, seed {seed}: SmallCNN trained {epochs} epochs on {len(splits.train)} "
        f"images ({train_s:.0f} s), {len(test)} test images (accuracy {accuracy:.3f}), "
        "explaining the predicted class; mean +- standard error over the images"
    )
    print(
        f"{'method':22s} {'deletion AUC':>15s} {'del - random':>16s} {'del<random':>10s} "
        f"{'insertion AUC':>15s} {'ms/image':>9s}"
    )
    rand_del, rand_ins = _areas(
        model, x, random_heatmaps(len(test), 28, 28, seed=seed), predicted, seed
    )

    def row(label: str, dele: np.ndarray, ins: np.ndarray, ms: str) -> None:
        se = np.sqrt(len(dele))
        diff = dele - rand_del  # paired with the random ordering, image by image
        paired = (
            "-"
            if label == "random ordering"
            else f"{diff.mean():+.3f} +- {diff.std(ddof=1) / se:.3f}"
        )
        share = "-" if label == "random ordering" else f"{(diff < 0).mean():.2f}"
        print(
            f"{label:22s} {dele.mean():7.3f} +- {dele.std(ddof=1) / se:5.3f} "
            f"{paired:>16s} {share:>10s} {ins.mean():7.3f} +- {ins.std(ddof=1) / se:5.3f} "
            f"{ms:>9s}"
        )

    row("random ordering", rand_del, rand_ins, "-")
    for method in METHODS:
        t = time.perf_counter()
        exp = Explainer(model, method, seed=seed).explain(x)
        ms = 1000 * (time.perf_counter() - t) / len(test)
        dele, ins = _areas(model, x, exp.heatmaps, exp.targets, seed)
        row(method, dele, ins, f"{ms:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    parser.add_argument(
        "--seeds", type=int, default=1, help="shortcut and faithfulness runs with seeds 0..N-1"
    )
    parser.add_argument("--only", default="timing,shortcut,faithfulness", help="sections to run")
    parser.add_argument("--images", type=int, default=64, help="test images (faithfulness)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (faithfulness)")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    splits = load_bundled()
    spec = ModelSpec()
    if "timing" in sections:
        _timing(splits, spec, args.repeats)
    for seed in range(args.seeds):
        if "shortcut" in sections:
            _shortcut(splits, spec, seed)
        if "faithfulness" in sections:
            _faithfulness(splits, spec, args.images, args.epochs, seed)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
