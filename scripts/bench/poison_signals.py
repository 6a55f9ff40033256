"""Data-free signals against poisoned updates under label skew: a diagnosis, not a bar.

Issue 12 asks whether a screen that needs no validation data (the direction or the size of an
update) could catch the sign-flipping and x10 sites of scenario (c) without catching honest sites
of a skewed federation. This script trains the accuracy benchmark's federations under FedAvg
(``_sim.run_method("fedavg", ...)``: the same sites, seeds, faults and local training) and, in
every round, measures each sent update against the others of the round:

* ``cos <group>``: cosine between the update and the mean of the other updates, over all
  parameters (``all``), the convolutions (``conv``), everything but the output layer (``feat``)
  and the output layer alone (``head``): a sign flip reverses every layer, while an honest site
  of a skewed federation is expected to disagree mostly in the head;
* ``norm``: the update's L2 norm over the round's median norm, raw, per local step (steps = its
  sample count / the batch size, rounded up: a larger site takes more steps) and per square root
  of its steps;
* ``server <group>``: cosine between the update and a *server update*, the aggregator's own
  local training from the round's global model on its validation split (the same local training
  settings as the sites'; FLTrust's trust score, Cao et al. NDSS 2021). It needs the validation
  split, so it is not data-free: the question is whether a reference direction trained on
  balanced data tells a sign flip from an honest skewed site better than the others' mean does;
* ``along``: the update's length along the round's coordinate-wise median update, over the
  median norm (``cosine * norm / median_norm`` of the product's robust statistics,
  :func:`fedtrail.valuation.robust.robust_statistics`): what a scaled honest direction inflates
  and an honest skewed site's long but sideways update does not.

For each signal it prints quantiles per kind of site (``none`` = honest) and the separation: the
share of a faulty kind's updates beyond the most extreme honest value (below the honest minimum
for cosines, above the honest maximum for norms), i.e. what a threshold that never catches an
honest update would catch. Exit status 0 (nothing is judged).

    python scripts/bench/poison_signals.py --runs c:1,c:3,a:1,a:3,b:1 --seeds 0,1 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.aggregation import apply_delta
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.valuation.robust import robust_statistics
from scripts.bench import _sim
from scripts.bench._sim import ROOT, SimConfig, parse_seeds, provenance
from scripts.bench.accuracy import SCENARIOS

Delta = Mapping[str, torch.Tensor]

GROUPS: dict[str, Callable[[str], bool]] = {
    "all": lambda name: True,
    "conv": lambda name: name.startswith("conv"),
    "feat": lambda name: not name.startswith("fc2"),
    "head": lambda name: name.startswith("fc2"),
}
"""SmallCNN's parameter groups (conv1, conv2, fc1, fc2)."""


def _flat(delta: Delta, names: Sequence[str]) -> np.ndarray:
    return np.concatenate([delta[k].detach().to(torch.float64).reshape(-1).numpy() for k in names])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / den if den > 0 else 0.0


def round_signals(
    deltas: Sequence[Delta],
    samples: Sequence[int],
    batch_size: int,
    server: Delta | None = None,
) -> list[dict[str, float]]:
    """Every signal of the module docstring for each update of one round (``server``: the
    server update, None to leave its signals out)."""
    names = list(deltas[0])
    out: list[dict[str, float]] = [{} for _ in deltas]
    for group, keep in GROUPS.items():
        kept = [k for k in names if keep(k)]
        m = np.stack([_flat(d, kept) for d in deltas])
        ref = None if server is None else _flat(server, kept)
        for i in range(len(deltas)):
            out[i][f"cos {group}"] = _cosine(m[i], np.delete(m, i, axis=0).mean(axis=0))
            if ref is not None:
                out[i][f"server {group}"] = _cosine(m[i], ref)
    stats = robust_statistics({f"{i:04d}": d for i, d in enumerate(deltas)})
    for i in range(len(deltas)):
        r = stats[f"{i:04d}"]
        out[i]["along"] = r.cosine * r.norm / r.median_norm if r.median_norm > 0 else math.nan
    norms = np.array([float(np.linalg.norm(_flat(d, names))) for d in deltas])
    steps = np.ceil(np.asarray(samples, dtype=np.float64) / batch_size)
    for key, x in {
        "norm": norms,
        "norm per step": norms / steps,
        "norm per sqrt step": norms / np.sqrt(steps),
    }.items():
        med = float(np.median(x))
        for i in range(len(deltas)):
            out[i][key] = float(x[i] / med) if med > 0 else math.nan
    return out


def measure(
    scenario: str, alpha: float, seed: int, rounds: int, splits: Any
) -> list[dict[str, Any]]:
    """One FedAvg federation of the accuracy bench's ``scenario``: a row per sent update."""
    sc = SCENARIOS[scenario]
    faults = sc.faults(seed)
    config = SimConfig(
        sites=sc.sites, rounds=rounds, alpha=alpha, seed=seed, faults=faults, stale=sc.stale
    )
    kinds = config.fault_labels
    samples = [len(d) for d in _sim.site_splits(splits.train, config)]
    rows: list[dict[str, Any]] = []
    real = _sim.aggregate
    round_no = 0
    spec = ModelSpec()
    # the simulation's own starting model; the spy follows the global model round by round
    state: dict[str, torch.Tensor] = {
        k: v.detach().clone() for k, v in federated_state(initial_model(spec, seed)).items()
    }

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        nonlocal round_no, state
        round_no += 1
        if len(deltas) == len(samples):  # every site sent (FedAvg: always, barring divergence)
            tc = TrainConfig(
                epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, seed=round_no
            )
            server = train_local(state, splits.val, spec=spec, config=tc).delta
            for i, sig in enumerate(round_signals(deltas, samples, config.batch_size, server)):
                rows.append({"round": round_no, "site": i, "kind": kinds[i], **sig})
        agg = real(rule, deltas, weights, **kw)
        state = apply_delta(state, agg)
        return agg

    _sim.aggregate = spy  # type: ignore[assignment]
    try:
        _sim.run_method("fedavg", config, splits)
    finally:
        _sim.aggregate = real  # type: ignore[assignment]
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Quantiles per kind and signal, and each faulty kind's separation from the honest sites."""
    signals = (
        [k for k in rows[0] if k.startswith(("cos", "norm", "server", "along"))] if rows else []
    )
    lines = []
    for sig in signals:
        by_kind: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            if math.isfinite(r[sig]):
                by_kind[str(r["kind"])].append(float(r[sig]))
        honest = np.array(by_kind.get("none", []))
        for kind, values in sorted(by_kind.items()):
            v = np.array(values)
            q = np.quantile(v, [0.0, 0.1, 0.5, 0.9, 1.0])
            cell = " ".join(f"{x:6.2f}" for x in q)
            sep = ""
            if kind != "none" and honest.size:
                low = sig.startswith(("cos", "server"))
                beyond = v < honest.min() if low else v > honest.max()
                sep = f"  beyond every honest value: {int(beyond.sum())}/{v.size}"
            lines.append(f"  {sig:<19} {kind:<12} n={v.size:<4} {cell}{sep}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--runs", default="c:1,c:3,a:1,a:3,b:1", help="scenario:alpha pairs, comma-separated"
    )
    parser.add_argument("--seeds", default="0,1", help="a count N or a list 0,3,7-9")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "poison_signals.json")
    args = parser.parse_args(argv)
    runs: list[tuple[str, float]] = []
    for part in (p for p in args.runs.split(",") if p):
        key, _, alpha = part.partition(":")
        if key not in SCENARIOS or not alpha:
            parser.error(
                f"--runs: {part!r} is not scenario:alpha (scenarios {', '.join(SCENARIOS)})"
            )
        try:
            runs.append((key, float(alpha)))
        except ValueError:
            parser.error(f"--runs: alpha {alpha!r} is not a number")
    seeds = parse_seeds(args.seeds)
    if not seeds or args.rounds < 2:
        parser.error("need at least one seed and two rounds")
    torch.set_num_threads(args.threads)
    splits = load_bundled()
    started = time.perf_counter()
    doc: dict[str, Any] = {"benchmark": "poison_signals", "argv": list(sys.argv[1:]), "runs": {}}
    for key, alpha in runs:
        rows = []
        for seed in seeds:
            rows += [{"seed": seed, **r} for r in measure(key, alpha, seed, args.rounds, splits)]
        label = f"{key}:{alpha:g}"
        doc["runs"][label] = rows
        print(
            f"{SCENARIOS[key].title} at alpha {alpha:g}, seeds {seeds}, "
            f"{args.rounds} rounds; ratio quantiles min p10 median p90 max:"
        )
        print("\n".join(summarise(rows)), flush=True)
    doc["wall_seconds"] = time.perf_counter() - started
    doc["provenance"] = provenance()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(f"wall {doc['wall_seconds']:.0f} s; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
