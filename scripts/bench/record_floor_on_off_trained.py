"""An on-off attacker through the accuracy bench's trained federation (h-256, issue 12 (a)).

Scenario ``o`` (registered here, not in ``accuracy.py``): 5 sites, site 4 sends its update
sign-flipped (x ``-FACTOR``) for ``HARMFUL`` rounds, then one honest update, and repeats
(rounds ``r`` with ``r % (HARMFUL + 1) == 0`` honest). Run it with and without the product's
record floor and read the attacker's weight share per seed from the JSON (``--out``), beside
its FedAvg share (its sample share)::

    OMP_NUM_THREADS=1 python scripts/bench/record_floor_on_off_trained.py --harmful 2 \\
        --factor 1 --seeds 3 --rounds 10 --alpha 3 --methods valuation --threads 1 \\
        --out /tmp/on.json [--record-floor 0]

Every argument but ``--harmful`` and ``--factor`` goes to ``accuracy.py`` (``--scenarios o``
is added).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

from fedtrail.simulation.faults import SiteFault
from scripts.bench import accuracy


def _pop(args: list[str], name: str, default: float) -> float:
    if name in args:
        i = args.index(name)
        value = float(args[i + 1])
        del args[i : i + 2]
        return value
    return default


def install(harmful: int, factor: float) -> None:
    original = SiteFault.apply_to_update

    def apply_to_update(
        self: SiteFault, delta: Any, *, round_id: int = 0, other: Any = None
    ) -> dict[str, Any]:
        if self.kind == "sign_flip" and round_id % (harmful + 1) == 0:
            return dict(delta)  # the helpful round: its honest update
        return original(self, delta, round_id=round_id, other=other)

    SiteFault.apply_to_update = apply_to_update  # type: ignore[method-assign]

    def faults(seed: int) -> tuple[SiteFault, ...]:
        honest = [SiteFault() for _ in range(4)]
        return (*honest, SiteFault(kind="sign_flip", factor=factor, seed=seed * 1000 + 4))

    accuracy.SCENARIOS["o"] = accuracy.Scenario(
        "o",
        "(o) 1 of 5 sites on-off",
        5,
        faults,
        f"site 4 sign-flipped x -{factor:g} for {harmful} rounds, then one honest round, repeated",
    )


def summary(path: str, harmful: int) -> None:
    doc = json.loads(Path(path).read_text())
    for run in doc["scenarios"]["o"]["runs"]:
        names, faults = run["site_names"], run["site_faults"]
        bad = {n for n, f in zip(names, faults, strict=True) if f != "none"}
        samples = dict(zip(names, run["site_samples"], strict=True))
        fedavg = sum(samples[n] for n in bad) / sum(samples.values())
        every, harm = [], []
        for r in run["rounds"]:
            if r["skipped"]:
                continue
            share = sum(w for s, w in zip(r["submitted"], r["weights"], strict=True) if s in bad)
            every.append(share / 1e18)
            if r["round"] % (harmful + 1) != 0:
                harm.append(share / 1e18)
        print(
            f"seed {run['seed']}: attacker share {statistics.fmean(every):.3f} over all rounds, "
            f"{statistics.fmean(harm):.3f} over its harmful rounds (FedAvg {fedavg:.3f}); "
            f"test AUC {run['test']['auc']:.4f}"
        )


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    harmful = int(_pop(args, "--harmful", 2))
    factor = _pop(args, "--factor", 1.0)
    install(harmful, factor)
    rc = int(accuracy.main([*args, "--scenarios", "o"]))
    if "--out" in args:
        summary(args[args.index("--out") + 1], harmful)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
