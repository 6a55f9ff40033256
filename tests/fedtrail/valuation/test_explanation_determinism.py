"""The explanation check is recomputed by auditors on other machines (``reasons.explanation_
shift``), so its components must be the same bits in any process at any torch thread count:
:meth:`ExplanationScorer.assess` pins one intra-op thread for the explanation and restores the
caller's setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[1]))
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.explanation import ExplanationScorer
from fedtrail.valuation.round import explanation_probe

spec = ModelSpec()
state = federated_state(initial_model(spec, seed=3))
rng = np.random.default_rng(5)
cands = [
    Candidate(f"s{i}", 10, {k: torch.from_numpy(
        rng.normal(0, 0.05, tuple(v.shape)).astype(np.float32)) for k, v in state.items()})
    for i in range(2)
]
ctx = ValuationContext(global_state=state, spec=spec, candidates=cands, validation=None,
                       metric="loss", seed=11)
out = ExplanationScorer(explanation_probe(load_bundled().val)).assess(ctx)
assert torch.get_num_threads() == int(sys.argv[1])  # the caller's setting is restored
print(json.dumps({k: v.as_dict() for k, v in out.items()}, sort_keys=True))
"""


def _components(threads: int) -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threads)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
        timeout=600,
    )
    out: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def test_components_are_the_same_bits_across_processes_and_thread_counts() -> None:
    one, two = _components(1), _components(2)
    assert one == two  # JSON floats round-trip exactly: equal text is equal bits
    assert set(one) == {"s0", "s1"}
    first = one["s0"]
    assert isinstance(first, dict) and 0.0 <= first["region_share"] <= 1.0
