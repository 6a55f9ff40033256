"""A site's ``[accept]`` bounds the payment settings of every round's terms, round 1's included:
terms without standing (attack a18), with a freezing ``norm_clip`` or a one-update ``krum``
(a20), with leave-one-out values (a21), or with a rule the site does not take are refused
before training, naming the setting; the site trains once its table opts in."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from fedtrail.protocol.codes import Decline
from fedtrail.valuation.combine import Combiner
from fedtrail.valuation.limits import ACCEPTED_GAMES, ThresholdLimits
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

SHAPLEY = {"method": "shapley", "metric": "loss", "standing": True, "combiner": asdict(Combiner())}
"""A valuation block the default ``[accept]`` takes (every threshold at this build's default)."""

CASES: dict[str, tuple[dict[str, Any], str, ThresholdLimits]] = {
    "standing-off": (
        {"valuation": {**SHAPLEY, "standing": False}},
        "standing off (accepted: only with per_round = true)",
        ThresholdLimits(per_round=True),
    ),
    "loo": (
        {"valuation": {**SHAPLEY, "method": "loo"}},
        "valuation game 'loo'",
        ThresholdLimits(methods=(*ACCEPTED_GAMES, "loo")),
    ),
    "freeze-clip": (
        {"valuation": SHAPLEY, "aggregation_rule": {"name": "norm_clip", "max_norm": 1e-12}},
        "norm_clip max_norm 1e-12 (accepted: unset, the median norm",
        ThresholdLimits(min_clip_norm=1e-12),
    ),
    "one-update-krum": (
        {"valuation": SHAPLEY, "aggregation_rule": {"name": "krum", "krum_f": 0, "krum_m": 1}},
        "krum krum_m 1 (accepted: unset or at least 2",
        ThresholdLimits(min_krum_m=1),
    ),
    "near-median-trim": (
        {"valuation": SHAPLEY, "aggregation_rule": {"name": "trimmed_mean", "trim_ratio": 0.45}},
        "trimmed_mean trim_ratio 0.45 (accepted: at most 0.3",
        ThresholdLimits(max_trim_ratio=0.45),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_terms_outside_the_payment_limits_are_refused_until_the_site_opts_in(
    embedded: ChainEnv, tmp_path: Path, case: str
) -> None:
    edit, named, opt_in = CASES[case]
    world = World(embedded, tmp_path, edit=edit)
    refused = world.node(0).participate(world.round)
    assert refused is not None and refused.phase == "skipped"
    assert "payment settings this site does not accept ([accept]" in refused.note
    assert named in refused.note, refused.note
    # declined on chain (a42), not silently absent: no update committed
    assert world.ledger.declines(world.round).get(world.node(0).address) is Decline.UNACCEPTED
    # the other site, whose table takes the setting, trains and commits under the same terms
    taking = world.node(1, accept=opt_in)
    record = taking.participate(world.round)
    assert record is not None and record.phase != "skipped", record
    assert world.ledger.get_submission(world.round, taking.address) is not None


def test_a_rule_the_site_does_not_list_is_refused(embedded: ChainEnv, tmp_path: Path) -> None:
    world = World(embedded, tmp_path, edit={"aggregation_rule": {"name": "median"}})
    only_weighted = world.node(0, accept=ThresholdLimits(rules=("weighted",)))
    record = only_weighted.participate(world.round)
    assert record is not None and record.phase == "skipped"
    assert "aggregation rule 'median' (accepted: rules = ['weighted'])" in record.note
    record = world.node(1).participate(world.round)  # the default table takes every rule
    assert record is not None and record.phase != "skipped"


def test_the_default_aggregators_terms_are_taken_by_the_default_table(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """The control: the terms of an aggregator with default settings (standing, Shapley, the
    weighted rule) pass a default ``[accept]``, the simulated consent aside."""
    world = World(embedded, tmp_path)
    node = world.node(0, accept=ThresholdLimits())
    record = node.participate(world.round)
    assert record is not None and record.phase != "skipped"
    assert world.ledger.get_submission(world.round, node.address) is not None


def test_an_explanation_check_without_a_public_probe_is_refused_by_every_table(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Attack a22: without a committed probe set the ``EXPLANATION_SHIFT`` verdicts are the
    aggregator's word; no ``[accept]`` opts into that, the loosest included."""
    world = World(embedded, tmp_path, edit={"valuation": {**SHAPLEY, "explanation_check": True}})
    loosest = ThresholdLimits(per_round=True, methods=(*ACCEPTED_GAMES, "loo"))
    for i, accept in ((0, None), (1, loosest)):
        node = world.node(i) if accept is None else world.node(i, accept=accept)
        record = node.participate(world.round)
        assert record is not None and record.phase == "skipped", record
        assert "explanation check without a public probe set" in record.note, record.note
        # declined on chain (a42), not silently absent: no update committed
        assert world.ledger.declines(world.round).get(node.address) is Decline.UNACCEPTED


def test_a_first_round_with_an_unbound_start_model_is_refused_until_the_site_opts_in(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Attack a23: terms without ``initial_model: "deployment"`` (the legacy rule) start the
    federation from the model every deployment with that seed shares, where another
    federation's updates can be replayed for pay; ``unbound_start = true`` takes them."""
    world = World(embedded, tmp_path, edit={"initial_model": None, "initial_salt": None})
    assert world.ledger.last_finalized_round() == 0
    refused = world.node(0).participate(world.round)
    assert refused is not None and refused.phase == "skipped", refused
    assert "initial model of the bare seed" in refused.note, refused.note
    assert "unbound_start = true" in refused.note
    # declined on chain (a42), not silently absent: no update committed
    assert world.ledger.declines(world.round).get(world.node(0).address) is Decline.UNBOUND_START
    taking = world.node(1, accept=ThresholdLimits(unbound_start=True))
    record = taking.participate(world.round)
    assert record is not None and record.phase != "skipped", record
    assert world.ledger.get_submission(world.round, taking.address) is not None
