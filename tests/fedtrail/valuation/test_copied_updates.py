"""A site that resends a revealed update of an earlier round instead of training is not paid.

Updates are public once revealed, so from round 2 on a site can take another site's update (or
its own) of an earlier round, scale it and commit it for the current round. The stale screen
(:mod:`fedtrail.valuation.freeride`, with the references the chain and the round logs hold,
:mod:`fedtrail.valuation.chained`) must flag it FREE_RIDER with weight 0 whatever the scale,
and ``audit verify --validation`` must re-derive that. Measured before the fix, in this
federation of four sites (LOO, standing on): a copy of hospital-0's previous update scaled by
1.05 scored OK with weights 0.30-0.41 (an honest share is 0.25), and one of its update of two
rounds before 0.33-0.41 (the references were the previous round's only; now the terms'
``stale_rounds``, 3 by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import connect, dev_account
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.daemon import NodeHooks, UpdateContext
from fedtrail.protocol.codes import Reason
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.codec import decode_update
from fedtrail.storage.store import LocalStore

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

Copy = tuple[int | None, int, float]
"""Whose update (an honest site's index, None: the copier's own), how many rounds back, scale."""

SCHEDULES: dict[str, dict[int, Copy]] = {
    "previous_round_scaled": {2: (0, 1, 1.05), 3: (1, 1, 0.5), 4: (None, 1, 3.0)},
    "earlier_rounds": {3: (0, 2, 1.0), 4: (None, 3, 0.7)},
}
"""Per case: round -> what the copier sends instead of its training (round 1: it trains)."""


def _copier(schedule: Mapping[int, Copy], honest: list[str]):  # type: ignore[no-untyped-def]
    def hook(delta: dict[str, torch.Tensor], round_id: int, ctx: UpdateContext) -> object:
        if round_id not in schedule:
            return delta
        whose, lag, scale = schedule[round_id]
        site = ctx.address if whose is None else honest[whose]
        sub = next(s for s in ctx.ledger.get_submissions(round_id - lag) if s.site == site)
        old, _ = decode_update(ctx.store.get(sub.cid, sub.sha256), spec=ctx.spec)
        return {k: v.clone() * scale for k, v in old.items()}

    return hook


@pytest.mark.parametrize(
    ("case", "mode"),
    [*((case, "aggregator") for case in SCHEDULES), ("previous_round_scaled", "peers")],
)
def test_a_resent_earlier_update_is_not_paid(
    anvil_url: str, tmp_path: Path, one_torch_thread: None, case: str, mode: str
) -> None:
    """In peer rounds every validator keeps the same references (its own standing), so the
    median of their scores rejects the copy too."""
    schedule = SCHEDULES[case]
    peers = mode == "peers"
    rounds = max(schedule)
    w3 = connect(anvil_url)
    accounts = [dev_account(i) for i in (0, 5, 6, 7, 8)]
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 10, seed=0)
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        sites=make_sites(
            accounts[1:],
            [splits.train.subset(parts[i]) for i in range(4)],
            names=[f"hospital-{i}" for i in range(4)],
            training=TrainConfig(epochs=1),
            val=splits.val if peers else None,  # each validator scores on the split
        ),
        store=LocalStore(tmp_path / "store"),
        folder=tmp_path,
        validation=splits.val,
        # standing on (the default)
        settings=AggregatorSettings(valuation="loo", valuation_mode=mode),
    )
    honest = [n.address for n in fed.nodes[:3]]
    copier = fed.node(3, hooks=NodeHooks(transform_update=_copier(schedule, honest)))
    fed = type(fed)(**{**fed.__dict__, "nodes": (*fed.nodes[:3], copier)})
    for _ in range(rounds):
        assert fed.run_round() is not None

    for r in range(1, rounds + 1):
        subs = {s.site: s for s in fed.ledger.get_submissions(r)}
        mine = subs[copier.address]
        if peers:  # the chain records the median, not the validators' reasons
            if r in schedule:
                assert (mine.score, mine.weight) == (0, 0), r
            else:
                assert mine.weight > 0, r
            assert all(subs[site].weight > 0 for site in honest), r
            continue
        if r in schedule:
            assert (Reason(mine.reason), mine.score, mine.weight) == (Reason.FREE_RIDER, 0, 0), r
        else:
            assert Reason(mine.reason) is Reason.OK, r
        for site in honest:  # honest updates are never taken for copies
            assert Reason(subs[site].reason) is not Reason.FREE_RIDER, (r, site)
    audits = verify_all(fed.ledger, fed.store, validation=splits.val)
    assert len(audits) == rounds
    assert not [c for a in audits for c in a.checks if c.failed]
