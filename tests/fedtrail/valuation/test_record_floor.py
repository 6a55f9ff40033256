"""``record_floor`` (issue 12 (a)): after a round's shares are added, each site scored from its
standing has its record kept at or above its own reference minus ``max(record_floor,
demote_scale)``; screened-out sites keep theirs; terms without the field keep the unbounded
record."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation import HISTORY_COMBINER, Candidate, Combiner, RobustStats
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.standing import floored_records


def _round(
    records: dict[str, float], *, cosines: dict[str, float] | None = None, outlier: str = ""
) -> tuple[list[Candidate], dict[str, RobustStats]]:
    """Candidates for ``records``' sites (one ``outlier`` rejected by the norm screen), with
    cosine 0.5 to the median update unless ``cosines`` says otherwise."""
    cands = [Candidate(site=s, num_samples=100, delta={"w": torch.ones(1)}) for s in records]
    robust = {
        s: RobustStats(
            cosine=(cosines or {}).get(s, 0.5),
            norm=1.0,
            norm_z=1000.0 if s == outlier else 0.0,
            median_norm=1.0,
        )
        for s in records
    }
    return cands, robust


def test_a_record_below_the_floor_is_raised_against_a_negative_median() -> None:
    """Scored records 0.2, -0.3, -0.4, -2.0 (median -0.35, the reference): d is raised to
    -0.35 - 0.5 = -0.85 and still scores 0; the others and the screened-out e (-3.0) keep
    theirs."""
    records = {"a": 0.2, "b": -0.3, "c": -0.4, "d": -2.0, "e": -3.0}
    cands, robust = _round(records, outlier="e")
    screened = HISTORY_COMBINER.screen(cands, robust)
    assert screened["e"][0] is Reason.OUTLIER_NORM
    assert all(screened[s][0] is Reason.OK for s in "abcd")
    got = HISTORY_COMBINER.floor_records(
        cands, robust, records, passed=HISTORY_COMBINER.passed(cands, robust)
    )
    assert got["d"] == pytest.approx(-0.85)
    assert {s: got[s] for s in "abce"} == {"a": 0.2, "b": -0.3, "c": -0.4, "e": -3.0}
    assert list(got) == list(records)
    values = {s: 0.1 for s in "abcd"}
    sites = {v.site: v for v in HISTORY_COMBINER.settle(cands, robust, values, got, method="s")}
    assert sites["d"].score == 0 and sites["d"].reason is Reason.LOW_QUALITY
    assert sites["e"].reason is Reason.OUTLIER_NORM


def test_a_positive_median_floors_at_minus_the_depth() -> None:
    """Median record positive: the reference is 0, so d (-1.7) is raised to -0.5."""
    records = {"a": 0.3, "b": 0.2, "c": 0.1, "d": -1.7}
    cands, robust = _round(records)
    got = HISTORY_COMBINER.floor_records(
        cands, robust, records, passed=HISTORY_COMBINER.passed(cands, robust)
    )
    assert got == {"a": 0.3, "b": 0.2, "c": 0.1, "d": -0.5}


def test_an_update_against_the_consensus_is_floored_against_zero() -> None:
    """Below ``relief_cosine`` (-0.7) a site's reference is 0, not the negative median (-0.35):
    its floor is -0.5, not -0.85."""
    records = {"a": -0.2, "b": -0.3, "c": -0.4, "d": -2.0}
    cands, robust = _round(records, cosines={"d": -0.9})
    got = HISTORY_COMBINER.floor_records(
        cands, robust, records, passed=HISTORY_COMBINER.passed(cands, robust)
    )
    assert got["d"] == -0.5
    assert {s: got[s] for s in "abc"} == {"a": -0.2, "b": -0.3, "c": -0.4}


def test_the_depth_is_never_less_than_demote_scale() -> None:
    """With ``demote_scale`` 1 a record_floor of 0.5 keeps records 1 below (a raised record
    scores 0, so no floor lifts a score); a floor of 2 keeps them 2 below."""
    records = {"a": 0.3, "b": 0.2, "c": 0.1, "d": -3.0}
    cands, robust = _round(records)
    wide = replace(HISTORY_COMBINER, demote_scale=1.0)
    assert (
        wide.floor_records(cands, robust, records, passed=wide.passed(cands, robust))["d"] == -1.0
    )
    deep = replace(HISTORY_COMBINER, record_floor=2.0)
    assert (
        deep.floor_records(cands, robust, records, passed=deep.passed(cands, robust))["d"] == -2.0
    )


def test_off_keeps_the_unbounded_record() -> None:
    records = {"a": 0.3, "b": 0.2, "c": 0.1, "d": -3.0}
    cands, robust = _round(records)
    off = replace(HISTORY_COMBINER, record_floor=0.0)
    assert off.floor_records(cands, robust, records, passed=off.passed(cands, robust)) == records
    assert floored_records(records, {}, record_floor=0.5, demote_scale=0.5, relief_cosine=-0.7) == (
        records
    )


def test_terms_without_the_field_keep_the_old_rule_and_new_terms_carry_it() -> None:
    old = combiner_from(
        ValuationSettings(method="shapley", metric="balanced_loss", standing=True, combiner={})
    )
    assert old.record_floor == 0.0
    assert HISTORY_COMBINER.record_floor == Combiner().record_floor == 0.5
    new = combiner_from(
        ValuationSettings(
            method="shapley",
            metric="balanced_loss",
            standing=True,
            combiner={"record_floor": HISTORY_COMBINER.record_floor},
        )
    )
    assert new.record_floor == 0.5


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "0.5"])
def test_a_bad_record_floor_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="record_floor"):
        Combiner(record_floor=bad)  # type: ignore[arg-type]


def test_a_standing_round_screens_once_and_floors_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """value_round screened the round, then floor_records screened it again, then settle a
    third time: the same verdicts from the same inputs. Now the caller's verdicts are passed
    on and the screen runs once, with the same records and scores as when each step screens
    for itself (the steps made to screen again below, as before session 58)."""
    from fedtrail.valuation import value_round
    from fedtrail.valuation.standing import History
    from tests.fedtrail.valuation.real_sites import SPEC, real_sites

    rs = real_sites()
    cands = [Candidate(f"site-{i}", rs.num_samples[i], rs.deltas[i]) for i in range(4)]
    # a record far below the floor: the floor raises it (a share moves it by at most 1)
    history = History(accumulated={"site-3": -5.0, "site-0": 0.2}, valued_rounds=2)
    screens: list[int] = []
    screen, floor, settle = Combiner.screen, Combiner.floor_records, Combiner.settle

    def counted(self: Combiner, *args: Any, **kwargs: Any) -> Any:
        screens.append(1)
        return screen(self, *args, **kwargs)

    def value() -> Any:
        screens.clear()
        return value_round(
            global_state=rs.global_state,
            spec=SPEC,
            candidates=cands,
            validation=rs.validation,
            method="shapley",
            metric="balanced_loss",
            seed=0,
            history=history,
            combiner=HISTORY_COMBINER,
        )

    monkeypatch.setattr(Combiner, "screen", counted)
    once = value()
    assert len(screens) == 1
    assert once.accumulated is not None and once.accumulated["site-3"] > -4.0  # floored

    def floor_screening(self: Combiner, c: Any, r: Any, a: Any, *, passed: Any) -> Any:
        return floor(self, c, r, a, passed=self.passed(c, r))

    def settle_screening(self: Combiner, *args: Any, screened: Any = None, **kw: Any) -> Any:
        return settle(self, *args, **kw)

    monkeypatch.setattr(Combiner, "floor_records", floor_screening)
    monkeypatch.setattr(Combiner, "settle", settle_screening)
    again = value()
    assert len(screens) == 3
    assert again.sites == once.sites and again.accumulated == once.accumulated
