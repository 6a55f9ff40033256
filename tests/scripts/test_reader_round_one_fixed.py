"""Attacks a134-a136 on real Anvil + IPFS: a round 2 whose terms re-choose what round 1 fixed,
taken by the aggregator's own nodes (honest nodes refuse it: ``SiteNode._payment_refusal``).
``audit verify`` fails each such round 2 ``terms.task_fixed``
(:func:`fedtrail.protocol.terms.payment_differences`); the independent reader passed all three:

- a134: the valuation block names ``"mode": "aggregator"``, which the schema allows and every
  reader takes as an aggregator round, where round 1's had no ``mode``. The reader held round 1's
  fields only while the two ``mode`` values were equal, so with the spelling changed it
  compared nothing: here round 2 also aggregates by the coordinate median (round 1: weighted).
- a135: a ``privacy`` block added in round 2 (round 1 had none): its delta decides which DP
  sites take part (a39); the reader never compared ``privacy`` with round 1's.
- a136: a commit window shorter than round 1's (a40: it shuts out the slowest sites); the
  reader compared each round's windows with the chain only.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedtrail.aggregator.service import AggregatorService
from fedtrail.auditor.verify import verify_round
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.node.daemon import CLOCK_SLACK, SiteNode
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.terms import PrivacyTerms, RoundTerms
from fedtrail.simulation.federation import Federation
from tests.fixtures.chain import ChainEnv
from tests.scripts.test_huge_reveal_cid import _federation, _reader

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


def _median(terms: RoundTerms) -> dict[str, Any]:
    rule = AggregationRule(name="median")
    return rule.to_terms(statistics="statistics" in terms.aggregation_rule)


EDITS: dict[str, Callable[[RoundTerms], RoundTerms]] = {
    "a134 mode spelled out": lambda t: replace(
        t,
        valuation={**t.valuation, "mode": "aggregator"},
        aggregation_rule=_median(t),
    ),
    "a135 privacy added": lambda t: replace(t, privacy=PrivacyTerms(delta=1e-5)),
    "a136 shorter commit window": lambda t: replace(t, commit_seconds=t.commit_seconds // 2),
}
VERIFY_SAYS = {
    "a134 mode spelled out": "valuation mode None -> aggregator",
    "a135 privacy added": "privacy delta None -> 1e-05",
    "a136 shorter commit window": "shorter than round 1's",
}


def _round(fed: Federation, round_id: int) -> None:
    ledger, service = fed.ledger, fed.service
    assert service.open_next() == round_id
    for node in fed.nodes:
        node.participate(round_id)  # commit
    deadline = ledger.get_round(round_id).commit_deadline
    now = next_block_timestamp(ledger.w3)
    if now <= deadline:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)
    for node in fed.nodes:
        node.participate(round_id)  # store, reveal
    for _ in range(4):
        if service.step() is not None:
            break
    assert ledger.get_round(round_id).phase == Phase.FINALIZED


def _reader_results(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, fed: Federation, round_id: int
) -> set[str]:
    """The checks scripts/independent/reader.py fails in round ``round_id``."""
    reader = _reader()
    deployment = tmp_path / "deployment.json"
    deployment.write_text(fed.deployment.to_json())
    reader.RESULTS.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(
            [
                "--rpc-url",
                str(anvil.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
                "--deployment",
                str(deployment),
                "--ipfs",
                "ipfs:" + ipfs_api,
            ]
        )
    return {x["check"] for x in reader.RESULTS if x["round"] == round_id and x["result"] == "FAIL"}


@pytest.mark.parametrize("kind", list(EDITS))
def test_a_round_that_re_chooses_a_round_one_setting_fails_task_fixed_for_both_readers(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, kind: str
) -> None:
    fed = _federation(anvil, ipfs_api, tmp_path, honest=3)
    _round(fed, 1)
    honest_terms = AggregatorService.round_terms

    def lying(self: AggregatorService, round_id: int) -> RoundTerms:
        terms = honest_terms(self, round_id)
        return EDITS[kind](terms) if round_id == 2 else terms

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AggregatorService, "round_terms", lying)
        patch.setattr(AggregatorService, "_refuse_changed_payment", lambda self, terms: None)
        # the aggregator's own nodes: they take any terms
        patch.setattr(SiteNode, "_payment_refusal", lambda self, terms, late=True: None)
        _round(fed, 2)
    audit = verify_round(fed.ledger, fed.store, 2)
    failed = {c.name: c.detail for c in audit.checks if c.failed}
    assert VERIFY_SAYS[kind] in failed.get("terms.task_fixed", ""), failed
    assert "terms.task_fixed" in _reader_results(anvil, ipfs_api, tmp_path, fed, 2)
