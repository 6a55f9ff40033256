"""The duplicate screen of a round runs once per set of inputs (issue 18): the valuation and the
finalize of a round both read its candidates, and the screen (float32 Gram products, the support
and white-noise tests) was computed again for the same updates, 20-40 ms of a 5-site round's
CPU. A new reveal, an entry that became unusable, or another rule computes it again."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import fedtrail.valuation.candidates as candidates_mod
from fedtrail.ledger import Submission
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.storage.codec import encode_update
from fedtrail.storage.store import LocalStore
from fedtrail.valuation.candidates import CandidateCache, revealed_candidates
from fedtrail.valuation.freeride import duplicate_residual_z

SPEC = ModelSpec()
ROUND = 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _deltas() -> list[dict[str, torch.Tensor]]:
    """Three sites' updates, the third a near copy of the first (scaled by 1.0001), and a
    fourth, independent one."""
    shapes = federated_state(initial_model(SPEC, 0))
    gen = torch.Generator().manual_seed(1)
    ramps = {k: torch.linspace(0.1, 2.0, v.numel()).reshape(v.shape) for k, v in shapes.items()}

    def fresh() -> dict[str, torch.Tensor]:
        return {k: 0.01 * ramps[k] * torch.randn(v.shape, generator=gen) for k, v in shapes.items()}

    first, second, fourth = fresh(), fresh(), fresh()
    return [first, second, {k: 1.0001 * v for k, v in first.items()}, fourth]


def _subs(store: LocalStore, deltas: list[dict[str, torch.Tensor]]) -> list[Submission]:
    subs = []
    for i, delta in enumerate(deltas):
        blob = encode_update(delta, spec=SPEC, round=ROUND).blob
        subs.append(
            Submission(
                round=ROUND,
                site=f"0x{i + 1:040x}",
                cid=store.put(blob),
                sha256=hashlib.sha256(blob).hexdigest(),
                num_samples=100,
                score=0,
                reason=0,
                weight=0,
                commitment="",
                commit_order=i + 1,
                revealed=True,
            )
        )
    return subs


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = candidates_mod.find_duplicates

    def counted(entries: Any, rule: Any, **kw: Any) -> dict[str, str]:
        calls.append(len(entries))
        return real(entries, rule, **kw)

    monkeypatch.setattr(candidates_mod, "find_duplicates", counted)
    return calls


def _terms(rule: DuplicateRule) -> Any:
    # valuation settings recording no thresholds: no privacy spend check (no events to read)
    return SimpleNamespace(
        duplicates=rule, privacy=None, valuation={"method": "loo", "metric": "auc"}
    )


def test_a_rounds_candidates_screen_the_same_updates_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    subs = _subs(store, _deltas())
    revealed = subs[:3]  # the fourth reveals later
    ledger: Any = SimpleNamespace(get_submissions=lambda round_id: list(revealed))
    calls = _counting(monkeypatch)
    cache = CandidateCache()
    terms = _terms(DuplicateRule())

    def statuses() -> list[Reason]:
        pairs = revealed_candidates(ledger, store, ROUND, terms=terms, spec=SPEC, cache=cache)
        return [cand.status for _, cand in pairs]

    expected = [Reason.OK, Reason.OK, Reason.DUPLICATE]
    assert statuses() == expected  # the valuation's read
    assert statuses() == expected  # the finalize's: the same updates, not screened again
    assert calls == [3]
    revealed = subs  # a reveal landed since: screened again, with it
    assert statuses() == [*expected, Reason.OK]
    assert calls == [3, 4]
    terms = _terms(replace(DuplicateRule(), relative_l2=0.002))
    assert statuses() == [*expected, Reason.OK]  # another rule: screened again
    assert calls == [3, 4, 4]
    # a fresh cache (a restarted service) screens again, and says the same
    assert revealed_candidates(
        ledger, store, ROUND, terms=terms, spec=SPEC, cache=CandidateCache()
    ) and calls == [3, 4, 4, 4]


def test_the_kept_screen_is_the_screens_answer_and_follows_its_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deltas = _deltas()
    entries = [
        Entry(f"0x{i + 1:040x}", i + 1, f"{i:064x}", d, noise_declared=False)
        for i, d in enumerate(deltas)
    ]
    rule = DuplicateRule()
    direct = find_duplicates(entries, rule, whiteness=duplicate_residual_z)
    assert direct == {entries[2].site: entries[0].site}
    calls = _counting(monkeypatch)
    cache = CandidateCache()
    cache.of(ROUND)
    assert cache.duplicates(ROUND, entries, rule) == direct
    kept = cache.duplicates(ROUND, entries, rule)
    assert kept == direct and len(calls) == 1
    kept.clear()  # the caller's copy: the kept answer is not changed through it
    assert cache.duplicates(ROUND, entries, rule) == direct and len(calls) == 1
    # the original now unusable (its delta None): no longer anyone's original
    unusable = [replace(entries[0], delta=None), *entries[1:]]
    assert cache.duplicates(ROUND, unusable, rule) == {} and len(calls) == 2
    # the copy declaring DP noise: another input, computed again
    declared = [*entries[:2], replace(entries[2], noise_declared=True), entries[3]]
    cache.duplicates(ROUND, declared, rule)
    assert len(calls) == 3
    # a later round drops the earlier one's answer
    cache.of(ROUND + 1)
    assert ROUND not in cache.copies
    assert cache.duplicates(ROUND + 1, entries, rule) == direct and len(calls) == 4
