"""scripts/bench/dup_cosine.py: honest same-round pairs of a skewed federation stay clear of
the duplicate rule while a1's copies of a real update are caught."""

from __future__ import annotations

import torch

from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.valuation.freeride import duplicate_residual_z
from scripts.bench import dup_cosine
from scripts.bench._sim import SimConfig


def test_real_honest_pairs_are_not_duplicates_and_real_copies_are() -> None:
    """Five sites on Dirichlet(0.3) splits, three rounds: round 3 holds a pair at cosine
    0.99921 (two sites of mostly one class), among the closest honest pairs measured."""
    torch.set_num_threads(1)
    config = SimConfig(sites=5, rounds=3, alpha=0.3, seed=0)
    got = dup_cosine.measure(config, load_bundled(), 0.05)
    honest, attack = got["honest"], got["attack"]
    assert len(honest) == 3 * 10
    assert max(h["cosine"] for h in honest) > 0.999  # the test is near the worst case
    rule = DuplicateRule()
    assert rule.scaled_cosine is not None
    assert all(max(h["cosine"], h["codes"]) < rule.scaled_cosine for h in honest)
    caught = {(a["copy"], a["caught_new"], a["caught_old"]) for a in attack}
    for name in ("x1.01", "x0.5", "topk8 f=1", "noise 0.2%"):
        assert (name, True, False) in caught and (name, False, False) not in caught
    # a90: the copy sparsified through topk8 at 0.05 is caught on the entries it carries
    assert ("topk8 f=0.05", True, False) in caught and ("topk8 f=0.05", False, False) not in caught
    # noisy copies, past every cosine, are caught by white_noise_z (h-197)
    for name in ("noise 1%", "noise 5%", "noise 10%"):
        assert (name, True, False) in caught and (name, False, False) not in caught


def test_the_rule_marks_no_pair_of_a_real_round() -> None:
    """The same honest round through find_duplicates itself (screen included): no DUPLICATE."""
    torch.set_num_threads(1)
    seen: list[list[dict[str, torch.Tensor]]] = []
    real = dup_cosine._sim.aggregate

    def spy(
        rule: object, deltas: list[dict[str, torch.Tensor]], *a: object, **kw: object
    ) -> object:
        seen.append(list(deltas))
        return real(rule, deltas, *a, **kw)  # type: ignore[arg-type]

    dup_cosine._sim.aggregate = spy  # type: ignore[assignment]
    try:
        dup_cosine._sim.run_method(
            "fedavg", SimConfig(sites=5, rounds=3, alpha=0.3), load_bundled()
        )
    finally:
        dup_cosine._sim.aggregate = real
    for deltas in seen:
        entries = [Entry(f"s{i}", i + 1, f"{i:064x}", d) for i, d in enumerate(deltas)]
        assert find_duplicates(entries, DuplicateRule(), whiteness=duplicate_residual_z) == {}
