"""Issue 12 (b) diagnostic (bench only, not the product): what limits the paired calibrated F1.

Usage:
  .venv/bin/python scripts/bench/f1cal_gap.py --dump OUT.npz [--exclude-faulty]
      [--demote-scale S] [accuracy.py's arguments]
  .venv/bin/python scripts/bench/f1cal_gap.py --analyze A.npz [A2.npz ...] [--boot 200]
  .venv/bin/python scripts/bench/f1cal_gap.py --compare A.npz:METHOD[,A2.npz:METHOD]
      B.npz:METHOD[,B2.npz:METHOD]

``--dump`` runs ``scripts/bench/accuracy.py`` unchanged (the product's valuation path, the
same seeds and models) and saves, per method and seed, the final global model's logits on the
validation split (where the product fits its decision) and on the test split. Two bench-only
switches change the run: ``--exclude-faulty`` gives FedAvg's faulty sites score 0 every round
(an oracle: the most any demotion of them could reach; run it with ``--methods fedavg``,
as accuracy.py's report divides by FedAvg's faulty share), ``--demote-scale S`` the valuation's
combiner ``demote_scale`` (the product's is 0.5).

``--analyze`` prints, for the final models, the test F1 of class 1 at several decision
thresholds, FedAvg and valuation means and their paired difference (mean, worst seed, sd):

* ``product``: the product's decision, the intercept ``fedtrail.ml.metrics.fit_intercept``
  fits on the validation split (what ``accuracy.py``'s F1cal is);
* ``test intercept`` / ``test max-F1``: oracles fitted on the test split itself (the same
  rule; the threshold that maximises test F1): what a perfect threshold fit would give;
* ``val max-F1``, ``val median``, ``val platt``, ``val smoothed max-F1``: other fits on the
  validation split (the F1-maximising threshold; the median margin; the class-balanced
  logistic fit of ``a * margin + c``; F1 of sigmoid-smoothed decisions, bandwidth by
  Silverman's rule, maximised on a grid);
* ``plain 0.5`` and the test AUC.

With ``--boot B``, per seed: the sd of the paired product F1 difference when the intercept is
refitted on B bootstrap resamples of the validation split (the threshold fit's noise) and when
the test split is resampled with the thresholds fixed (the test's sampling noise).

``--compare`` prints the same figures paired B - A for any two (file, method) sets, e.g. the
oracle's FedAvg against the valuation; a comma joins files (other seeds of the same runs).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

import numpy as np
import torch

from fedtrail.ml.metrics import class_f1, fit_intercept, predict_logits, roc_auc
from fedtrail.ml.models import initial_model, load_federated
from fedtrail.protocol.weights import onchain_weights
from scripts.bench import _sim, accuracy

Final = dict[tuple[str, int], dict[str, np.ndarray]]


def _dump(out: Path, exclude_faulty: bool, demote_scale: float | None, argv: list[str]) -> int:
    finals: Final = {}
    context: dict[str, Any] = {}
    evaluate_state = _sim._evaluate_state
    run_method = _sim.run_method

    def evaluate(
        spec: Any, state: Mapping[str, torch.Tensor], ds: Any, calibration: Any = None
    ) -> dict[str, float]:
        metrics = evaluate_state(spec, state, ds, calibration)
        finite = all(bool(torch.isfinite(t).all()) for t in state.values())
        if calibration is not None and finite:
            model = initial_model(spec, seed=0)
            load_federated(model, state)
            finals[(context["method"], context["seed"])] = {  # the last call is the final model
                "val": predict_logits(model, calibration),
                "yval": np.asarray(calibration.labels),
                "test": predict_logits(model, ds),
                "ytest": np.asarray(ds.labels),
            }
        return metrics

    def weights(num_samples: Sequence[int], scores: Sequence[int]) -> list[int]:
        if exclude_faulty and context["method"] == "fedavg":
            faults = context["faults"]
            if len(scores) != len(faults):
                raise RuntimeError("a site sent nothing: the oracle needs every site's update")
            scores = [0 if f != "none" else s for s, f in zip(scores, faults, strict=True)]
        return onchain_weights(num_samples, scores)

    def run(method: Any, config: Any, splits: Any, **kw: Any) -> Any:
        if demote_scale is not None:
            config = replace(config, combiner=replace(config.combiner, demote_scale=demote_scale))
        context.update(method=method, seed=config.seed, faults=list(config.fault_labels))
        return run_method(method, config, splits, **kw)

    setattr(_sim, "_evaluate_state", evaluate)  # noqa: B010 - patched in this process only
    setattr(_sim, "run_method", run)  # noqa: B010
    setattr(_sim, "onchain_weights", weights)  # noqa: B010
    try:
        rc = accuracy.main(argv)
    finally:  # saved even when accuracy.py's report fails after the runs
        arrays = {f"{m}/{s}/{k}": v for (m, s), d in finals.items() for k, v in d.items()}
        np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
        print(f"final models' logits of {len(finals)} runs: {out}")
    return int(rc)


def _load(spec: str) -> dict[int, dict[str, np.ndarray]]:
    """``FILE:METHOD[,FILE:METHOD...]``: each seed's final model of that method."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for part in spec.split(","):
        path, method = part.rsplit(":", 1)
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                m, seed, what = key.split("/")
                if m == method:
                    out.setdefault(int(seed), {})[what] = z[key]
    return out


def _f1_at(margin: np.ndarray, y: np.ndarray, t: float) -> float:
    return float(class_f1((margin > t).astype(np.int64), y, 2)[1])


def _max_f1_threshold(margin: np.ndarray, y: np.ndarray) -> float:
    s = np.unique(margin)
    candidates = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2])
    f1 = [_f1_at(margin, y, float(t)) for t in candidates]
    return float(candidates[int(np.argmax(f1))])


def _smoothed_threshold(margin: np.ndarray, y: np.ndarray) -> float:
    h = 1.06 * float(margin.std()) * len(margin) ** -0.2
    best, best_t = -1.0, 0.0
    for t in np.linspace(np.quantile(margin, 0.05), np.quantile(margin, 0.95), 400):
        p = 1.0 / (1.0 + np.exp(-(margin - t) / h))
        tp, fp, fn = float(np.sum(p * y)), float(np.sum(p * (1 - y))), float(np.sum((1 - p) * y))
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best:
            best, best_t = f1, float(t)
    return best_t


def _platt_threshold(margin: np.ndarray, y: np.ndarray) -> float:
    w = np.where(y == 1, 0.5 / (y == 1).sum(), 0.5 / (y == 0).sum())
    a, c = 1.0, 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(a * margin + c)))
        g = np.array([np.sum(w * (p - y) * margin), np.sum(w * (p - y))])
        h = p * (1 - p) * w
        hess = np.array(
            [[np.sum(h * margin**2), np.sum(h * margin)], [np.sum(h * margin), h.sum()]]
        )
        a, c = np.array([a, c]) - np.linalg.solve(hess + 1e-12 * np.eye(2), g)
    return -c / a


def _intercept_threshold(logits: np.ndarray, y: np.ndarray) -> float:
    bias = fit_intercept(logits, y).bias
    return bias[0] - bias[1]  # class 1 when z1 - z0 > b0 - b1


def _figures(d: Mapping[str, np.ndarray]) -> dict[str, float]:
    mv, yv = d["val"][:, 1] - d["val"][:, 0], d["yval"].astype(np.int64)
    mt, yt = d["test"][:, 1] - d["test"][:, 0], d["ytest"].astype(np.int64)
    rules: dict[str, Callable[[], float]] = {
        "product (val intercept)": lambda: _intercept_threshold(d["val"], yv),
        "test intercept (oracle)": lambda: _intercept_threshold(d["test"], yt),
        "test max-F1 (oracle)": lambda: _max_f1_threshold(mt, yt),
        "val max-F1": lambda: _max_f1_threshold(mv, yv),
        "val median": lambda: float(np.median(mv)),
        "val platt": lambda: _platt_threshold(mv, yv),
        "val smoothed max-F1": lambda: _smoothed_threshold(mv, yv),
        "plain 0.5": lambda: 0.0,
    }
    out = {name: _f1_at(mt, yt, rule()) for name, rule in rules.items()}
    out["test AUC"] = roc_auc(mt, yt)
    return out


def _table(
    a: Mapping[int, Mapping[str, np.ndarray]], b: Mapping[int, Mapping[str, np.ndarray]], head: str
) -> list[int]:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        print(f"{head}: no seed in both")
        return seeds
    fa, fb = {s: _figures(a[s]) for s in seeds}, {s: _figures(b[s]) for s in seeds}
    print(f"{head}, seeds {seeds}")
    print(f"  {'F1 at':26s} {'A':>7s} {'B':>7s} {'B-A':>8s} {'worst':>8s} {'sd':>7s}  per seed")
    for name in fa[seeds[0]]:
        x = np.array([fa[s][name] for s in seeds])
        z = np.array([fb[s][name] for s in seeds])
        diff = z - x
        sd = float(diff.std(ddof=1)) if len(seeds) > 1 else math.nan
        per = " ".join(f"{v:+.3f}" for v in diff)
        print(
            f"  {name:26s} {x.mean():7.4f} {z.mean():7.4f} {diff.mean():+8.4f} "
            f"{diff.min():+8.4f} {sd:7.4f}  {per}"
        )
    return seeds


def _boot(
    a: Mapping[int, Mapping[str, np.ndarray]],
    b: Mapping[int, Mapping[str, np.ndarray]],
    seeds: Sequence[int],
    draws: int,
) -> None:
    rng = np.random.default_rng(0)
    print(f"  bootstrap ({draws} draws): paired product-F1 difference per seed")
    for s in seeds:
        fv, vv = a[s]["val"], b[s]["val"]
        yv = a[s]["yval"].astype(np.int64)
        fm, vm = a[s]["test"][:, 1] - a[s]["test"][:, 0], b[s]["test"][:, 1] - b[s]["test"][:, 0]
        yt = a[s]["ytest"].astype(np.int64)
        tf, tv = _intercept_threshold(fv, yv), _intercept_threshold(vv, yv)
        base = _f1_at(vm, yt, tv) - _f1_at(fm, yt, tf)
        refit, resample = [], []
        for _ in range(draws):
            i = rng.integers(0, len(yv), len(yv))
            if len(np.unique(yv[i])) == 2:
                refit.append(
                    _f1_at(vm, yt, _intercept_threshold(vv[i], yv[i]))
                    - _f1_at(fm, yt, _intercept_threshold(fv[i], yv[i]))
                )
            j = rng.integers(0, len(yt), len(yt))
            resample.append(_f1_at(vm[j], yt[j], tv) - _f1_at(fm[j], yt[j], tf))
        print(
            f"    seed {s}: {base:+.4f}; sd with the intercept refitted on resampled validation "
            f"{np.std(refit):.4f}, with the test split resampled {np.std(resample):.4f}"
        )


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if args[:1] == ["--dump"]:
        out = Path(args[1])
        rest = args[2:]
        exclude = "--exclude-faulty" in rest
        rest = [r for r in rest if r != "--exclude-faulty"]
        demote: float | None = None
        if "--demote-scale" in rest:
            k = rest.index("--demote-scale")
            demote = float(rest[k + 1])
            del rest[k : k + 2]
        return _dump(out, exclude, demote, rest)
    if args[:1] == ["--analyze"]:
        draws = 0
        if "--boot" in args:
            k = args.index("--boot")
            draws = int(args[k + 1])
            del args[k : k + 2]
        files = ",".join(args[1:])
        a = _load(",".join(f"{f}:fedavg" for f in files.split(",")))
        b = _load(",".join(f"{f}:valuation" for f in files.split(",")))
        seeds = _table(a, b, f"A = fedavg, B = valuation ({files})")
        if draws:
            _boot(a, b, seeds, draws)
        return 0
    if args[:1] == ["--compare"] and len(args) == 3:
        _table(_load(args[1]), _load(args[2]), f"A = {args[1]}, B = {args[2]}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
