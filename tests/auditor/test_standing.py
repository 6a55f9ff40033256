"""Valuation with standing, end to end on the embedded chain: the aggregator records each
round's accumulated values chained through the previous log, and `audit verify` re-derives
them (publicly, and from the validation set), failing a log that lies about them."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from fedtrail.auditor.standing import check_standing
from fedtrail.auditor.verify import verify_all, verify_round
from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import RoundLog, ValuationSettings
from fedtrail.valuation.standing import accumulate, floored_records, normalised_values
from tests.auditor.test_verify import federation, on_anvil

# Every federation here runs on the real Anvil node (see on_anvil).
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


def _failed(audit: Any) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if not c.passed}


@pytest.fixture(scope="module")
def three_rounds(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Valued on two torch threads; the tests audit it on one (``one_torch_thread``), as an
    auditor on another machine would: the last bits of every evaluation differ."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return federation(tmp_path_factory.mktemp("standing"), rounds=3, **on_anvil(anvil_url))
    finally:
        torch.set_num_threads(before)


def _log(fed: Any, round_id: int) -> RoundLog:
    info = fed.ledger.get_round(round_id)
    return RoundLog.from_bytes(fed.store.get(info.log_cid, info.log_sha256))


def test_each_round_log_continues_the_previous_one(three_rounds: Any) -> None:
    fed = three_rounds
    logs = [_log(fed, r) for r in (1, 2, 3)]
    assert all(log.standing is not None for log in logs)
    first, second, third = (log.standing for log in logs)
    assert first is not None and second is not None and third is not None
    assert first.previous is None and first.valued_rounds == 0
    # the preset's warm-up shows its shares; the fixture's equal claimed counts let none of
    # them outweigh the others (warm_up_scope 1), so it records none
    assert dict(first.before) == {} and dict(first.after) == {}
    info1 = fed.ledger.get_round(1)
    assert second.previous is not None
    assert (second.previous.round, second.previous.cid) == (1, info1.log_cid)
    assert second.valued_rounds == 1 and second.normalised is not None
    assert dict(third.before) == dict(second.after)
    assert "the global delta of round 1" in second.references
    assert logs[0].settings.valuation.standing is True
    assert logs[0].settings.valuation.metric == "balanced_loss"


def test_verify_re_derives_the_standing_publicly_and_from_the_validation_set(
    three_rounds: Any,
) -> None:
    """Also on another thread count than the aggregator's (measured: normalised values 9.6e-6
    apart between 1 and 2 threads; within STANDING_TOLERANCE)."""
    fed = three_rounds
    audits = verify_all(fed.ledger, fed.store, validation=load_bundled().val)
    assert all(a.passed for a in audits), [_failed(a) for a in audits]
    names = {c.name for c in audits[2].checks}
    assert {
        "standing.chain",
        "standing.accumulated",
        "standing.scores",
        "standing.recomputed",
    } <= names


def _lie(fed: Any, round_id: int, **changes: Any) -> dict[str, str]:
    """Audit of ``round_id`` with its standing block changed (the log re-read, not re-hashed:
    the checks are run on the altered record directly)."""
    log = _log(fed, round_id)
    assert log.standing is not None
    forged = dataclasses.replace(log, standing=dataclasses.replace(log.standing, **changes))
    settings = ValuationSettings.from_json(log.settings.valuation.to_json())
    subs = fed.ledger.get_submissions(round_id)
    return {
        n: d for n, ok, d in check_standing(fed.ledger, fed.store, forged, settings, subs) if not ok
    }


def test_a_log_that_inflates_accumulated_values_fails(three_rounds: Any) -> None:
    fed = three_rounds
    log = _log(fed, 3)
    assert log.standing is not None
    site = next(iter(log.standing.after))
    after = {**log.standing.after, site: log.standing.after[site] + 0.5}
    bad = _lie(fed, 3, after=after)
    assert (
        "standing.accumulated" in bad
        and "'after' is not 'before' plus" in bad["standing.accumulated"]
    )


def _with_values(log: RoundLog, values: dict[str, float]) -> RoundLog:
    """``log`` with the ``components.value`` of each site in ``values`` replaced."""
    return dataclasses.replace(
        log,
        sites=tuple(
            dataclasses.replace(e, components={**e.components, "value": values[e.site]})
            if e.site in values
            else e
            for e in log.sites
        ),
    )


def test_normalised_values_other_than_the_shares_of_the_logs_values_fail(
    three_rounds: Any,
) -> None:
    """Attack a95 ``shares``: a log that keeps every site's value (positive, as the game gave
    it) but writes one site's share as -0.8 and the others' as 0.05, ``after`` and the scores
    following, passed every public check (the scores are the aggregator's claim, but the shares
    are a function of the values the same log shows: README *Standing*); now
    standing.accumulated fails, naming the site. The honest log passes."""
    fed = three_rounds
    log = _log(fed, 3)
    assert log.standing is not None and log.standing.normalised is not None
    site = next(s for s, v in log.standing.normalised.items() if v > 0)
    norm = {s: (-0.8 if s == site else 0.05) for s in log.standing.normalised}
    assert math.fsum(abs(v) for v in norm.values()) <= 1.0
    bad = _lie(fed, 3, normalised=norm, after=accumulate(log.standing.before, norm))
    assert "not the shares of the log's values" in bad["standing.accumulated"]
    assert site[:10] in bad["standing.accumulated"]
    assert "standing.accumulated" not in _lie(fed, 3)


def test_a_log_that_rewrites_history_fails_the_chain_check(three_rounds: Any) -> None:
    fed = three_rounds
    log = _log(fed, 3)
    assert log.standing is not None
    before = {s: 0.0 for s in log.standing.before}
    bad = _lie(fed, 3, before=before, after=dict(before))
    assert "before' differs from the previous log" in bad["standing.chain"]


def test_a_score_that_does_not_follow_the_standing_fails(three_rounds: Any) -> None:
    """A site driven to a very negative accumulated value must score 0 (LOW_QUALITY); a log
    that claims so while the chain shows a full score fails standing.scores."""
    fed = three_rounds
    log = _log(fed, 3)
    assert log.standing is not None and log.standing.normalised is not None
    site = next(s.site for s in fed.ledger.get_submissions(3) if s.reason == 0)
    norm = {**log.standing.normalised, site: -1.0}
    norm = {s: (v if s == site else 0.0) for s, v in norm.items()}
    after = dict(log.standing.before)
    after[site] = after.get(site, 0.0) - 1.0
    bad = _lie(fed, 3, normalised=norm, after=after)
    assert "standing.scores" in bad and site[:10] in bad["standing.scores"]


def test_a_positive_share_credited_against_the_consensus_fails(three_rounds: Any) -> None:
    """A site whose update points against the consensus (cosine to the median below the
    terms' ``credit_cosine``) gets no positive share: with a recorded cosine of -0.9 for a
    site the log credits a positive share, standing.accumulated fails, naming it; with the
    log's true cosines it passes."""
    fed = three_rounds
    log = _log(fed, 3)
    assert log.standing is not None and log.standing.normalised is not None
    settings = ValuationSettings.from_json(log.settings.valuation.to_json())
    subs = fed.ledger.get_submissions(3)
    site = next(s for s, v in log.standing.normalised.items() if v > 0)
    entry = log.site(site)
    assert entry is not None and entry.components["robust_checked"] is True
    against = dataclasses.replace(entry, components={**entry.components, "cosine": -0.9})
    forged = dataclasses.replace(
        log, sites=tuple(against if e.site == site else e for e in log.sites)
    )
    bad = {
        n: d for n, ok, d in check_standing(fed.ledger, fed.store, forged, settings, subs) if not ok
    }
    assert "standing.accumulated" in bad and site[:10] in bad["standing.accumulated"]
    assert "credit_cosine -0.7" in bad["standing.accumulated"]
    honest = {
        n for n, ok, _ in check_standing(fed.ledger, fed.store, log, settings, subs) if not ok
    }
    assert "standing.accumulated" not in honest


def test_a_score_relieved_against_the_consensus_fails(three_rounds: Any) -> None:
    """The median's relief (a negative median accumulated value is the reference) is not for
    an update pointing against the consensus (cosine below the terms' ``relief_cosine``): with
    every OK site's record at -0.3, the median, every full score follows; with a recorded
    cosine of -0.9 for one site its record is measured against 0, so its full score on the
    chain fails standing.scores, naming it and the score expected (0.4 of the full)."""
    fed = three_rounds
    log = _log(fed, 3)
    assert log.standing is not None
    settings = ValuationSettings.from_json(log.settings.valuation.to_json())
    subs = fed.ledger.get_submissions(3)
    scored = [s for s in subs if s.reason == 0]
    demoted = [s for s in subs if s.reason == int(Reason.LOW_QUALITY)]
    assert len(scored) > len(demoted) and all(s.score == 1_000_000 for s in scored)
    # the median record is -0.3; a LOW_QUALITY site's -0.9 keeps its score 0 either way
    low = {
        **log.standing.after,
        **{s.site: -0.3 for s in scored},
        **{s.site: -0.9 for s in demoted},
    }
    sunk = dataclasses.replace(log, standing=dataclasses.replace(log.standing, after=low))

    def failed(forged: RoundLog) -> dict[str, str]:
        checks = check_standing(fed.ledger, fed.store, forged, settings, subs)
        return {n: d for n, ok, d in checks if not ok}

    assert "standing.scores" not in failed(sunk)
    site = scored[0].site
    entry = log.site(site)
    assert entry is not None and entry.components["robust_checked"] is True
    against = dataclasses.replace(entry, components={**entry.components, "cosine": -0.9})
    forged = dataclasses.replace(
        sunk, sites=tuple(against if e.site == site else e for e in sunk.sites)
    )
    bad = failed(forged)
    assert "standing.scores" in bad and site[:10] in bad["standing.scores"]
    assert "expected 400000" in bad["standing.scores"]


def test_a_score_not_weighted_for_a_tiny_norm_fails(three_rounds: Any) -> None:
    """The scores follow the terms' magnitude thresholds and the norms the log records: under
    terms with ``small_norm_ratio`` 0.05, a site whose recorded norm is 1% of the median must
    show a fifth of the full score, so with the chain's full score standing.scores fails,
    naming it; with the log's true norms nothing is below the bound and the check passes."""
    fed = three_rounds
    log = _log(fed, 3)
    recorded = log.settings.valuation.to_json()
    assert recorded["combiner"]["small_norm_ratio"] == 0.0  # the preset: off
    settings = ValuationSettings.from_json(
        {**recorded, "combiner": {**recorded["combiner"], "small_norm_ratio": 0.05}}
    )
    subs = fed.ledger.get_submissions(3)
    site = next(s.site for s in subs if s.reason == 0 and s.score == 1_000_000)
    entry = log.site(site)
    assert entry is not None and entry.components["robust_checked"] is True
    median = entry.components["median_norm"]
    assert isinstance(median, float) and median > 0
    tiny = dataclasses.replace(entry, components={**entry.components, "norm": 0.01 * median})
    forged = dataclasses.replace(log, sites=tuple(tiny if e.site == site else e for e in log.sites))
    bad = {
        n: d for n, ok, d in check_standing(fed.ledger, fed.store, forged, settings, subs) if not ok
    }
    assert "standing.scores" in bad and site[:10] in bad["standing.scores"]
    assert "expected 200000" in bad["standing.scores"]
    honest = {
        n for n, ok, _ in check_standing(fed.ledger, fed.store, log, settings, subs) if not ok
    }
    assert "standing.scores" not in honest


def test_a_boosted_update_paid_in_full_fails(three_rounds: Any) -> None:
    """Under terms with ``boost_clip`` 0.5 (an opt-in), a site whose update is 8 median
    norms long along the median update (recorded norm 8x the median, cosine 1) keeps
    (2 / 8)^2 of its score, so the chain's full score fails standing.scores, naming the site
    and the 62,500 expected; the same log under its recorded terms (0, off) passes."""
    fed = three_rounds
    log = _log(fed, 3)
    recorded = log.settings.valuation.to_json()
    assert recorded["combiner"]["boost_clip"] == 0.0  # the preset: off
    settings = ValuationSettings.from_json(
        {**recorded, "combiner": {**recorded["combiner"], "boost_clip": 0.5}}
    )
    subs = fed.ledger.get_submissions(3)
    site = next(s.site for s in subs if s.reason == 0 and s.score == 1_000_000)
    entry = log.site(site)
    assert entry is not None and entry.components["robust_checked"] is True
    median = entry.components["median_norm"]
    assert isinstance(median, float) and median > 0
    boosted = dataclasses.replace(
        entry, components={**entry.components, "norm": 8.0 * median, "cosine": 1.0}
    )
    forged = dataclasses.replace(
        log, sites=tuple(boosted if e.site == site else e for e in log.sites)
    )

    def failed(under: ValuationSettings) -> dict[str, str]:
        checks = check_standing(fed.ledger, fed.store, forged, under, subs)
        return {n: d for n, ok, d in checks if not ok}

    bad = failed(settings)
    assert "standing.scores" in bad and site[:10] in bad["standing.scores"]
    assert "expected 62500" in bad["standing.scores"]
    assert "standing.scores" not in failed(ValuationSettings.from_json(recorded))


def test_a_warm_up_score_that_ignores_the_accumulated_shares_fails(three_rounds: Any) -> None:
    """Under terms with ``warm_up_floor`` 0.5 (an opt-in) the warm-up accumulates its shares:
    a round-1 log whose standing shows one site's share at -0.6 (after = before + normalised)
    passes standing.accumulated and expects that site to keep the floor, 500,000, so the
    chain's full score fails standing.scores, naming the site; under its recorded terms (1,
    off) the same log fails standing.accumulated instead (the warm-up accumulates nothing)."""
    fed = three_rounds
    log = _log(fed, 1)
    assert log.standing is not None and log.standing.valued_rounds == 0
    recorded = log.settings.valuation.to_json()
    settings = ValuationSettings.from_json(
        {
            **recorded,
            "combiner": {**recorded["combiner"], "warm_up_floor": 0.5, "warm_up_scope": 0},
        }
    )
    recorded = {**recorded, "combiner": {**recorded["combiner"], "warm_up_floor": 1.0}}
    subs = fed.ledger.get_submissions(1)
    passed = [s.site for s in subs if s.reason == 0 and s.score == 1_000_000]
    site = passed[0]
    # values whose shares (normalised_values) put the site at -0.6 / (0.6 + 0.05 k)
    values = {s: (-0.6 if s == site else 0.05) for s in passed}
    shares = normalised_values(values)
    assert shares is not None and shares[site] < -0.5
    forged = dataclasses.replace(
        _with_values(log, values),
        standing=dataclasses.replace(log.standing, normalised=shares, after=dict(shares)),
    )

    def failed(under: ValuationSettings) -> dict[str, str]:
        checks = check_standing(fed.ledger, fed.store, forged, under, subs)
        return {n: d for n, ok, d in checks if not ok}

    bad = failed(settings)
    assert "standing.accumulated" not in bad
    assert "standing.scores" in bad and site[:10] in bad["standing.scores"]
    assert "expected 500000" in bad["standing.scores"]
    off = failed(ValuationSettings.from_json(recorded))
    assert "accumulates nothing" in off["standing.accumulated"]


def test_the_scoped_warm_up_records_and_demotes_only_an_outweighing_update(
    three_rounds: Any,
) -> None:
    """Under terms with ``warm_up_floor`` 0.5 and ``warm_up_scope`` 1 (the preset since session
    63), a round-1 log whose values give the site claiming the most samples a positive share
    and the others negative ones (-0.6 for one) has no outweighing update: it passes
    standing.accumulated only with nothing recorded (every share in ``after`` fails) and every
    passed site keeps the full score; under ``warm_up_scope`` 0 the same log fails
    standing.accumulated.
    With every value negative each update outweighs (none is vouched for): every share is
    recorded and the -0.6 site is expected at the floor, 500,000."""
    fed = three_rounds
    log = _log(fed, 1)
    assert log.standing is not None and log.standing.valued_rounds == 0
    recorded = log.settings.valuation.to_json()
    combiner = {**recorded["combiner"], "warm_up_floor": 0.5, "warm_up_scope": 1}
    scoped = ValuationSettings.from_json({**recorded, "combiner": combiner})
    every = ValuationSettings.from_json({**recorded, "combiner": {**combiner, "warm_up_scope": 0}})
    subs = fed.ledger.get_submissions(1)
    passed = [s for s in subs if s.reason == 0 and s.score == 1_000_000]
    assert len(passed) >= 3
    big = max(passed, key=lambda s: (s.num_samples, s.site))
    low = min((s for s in passed if s is not big), key=lambda s: s.site)

    def failed(
        under: ValuationSettings, values: dict[str, float], after: dict[str, float]
    ) -> dict[str, str]:
        shares = normalised_values(values)
        forged = dataclasses.replace(
            _with_values(log, values),
            standing=dataclasses.replace(log.standing, normalised=shares, after=after),
        )
        checks = check_standing(fed.ledger, fed.store, forged, under, subs)
        return {n: d for n, ok, d in checks if not ok}

    values = {s.site: (0.05 if s is big else -0.6 if s is low else -0.05) for s in passed}
    shares = normalised_values(values)
    assert shares is not None and shares[low.site] < -0.5
    assert failed(scoped, values, {}) == {}
    assert "standing.accumulated" in failed(scoped, values, dict(shares))
    assert "standing.accumulated" in failed(every, values, {})
    negative = {s.site: (-0.6 if s is low else -0.05) for s in passed}
    all_shares = normalised_values(negative)
    assert all_shares is not None
    bad = failed(scoped, negative, dict(all_shares))
    assert "standing.accumulated" not in bad
    assert "expected 500000" in bad["standing.scores"] and low.site[:10] in bad["standing.scores"]
    assert "standing.accumulated" in failed(scoped, negative, {})


def test_made_up_normalised_values_fail_only_the_re_run(
    three_rounds: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, anvil_url: str
) -> None:
    """Normalised values the game did not give, kept consistent with the arithmetic, the
    scores and the log's values (made up too), pass the public checks; the re-run with the
    validation set catches them."""
    real = RoundLog.to_bytes

    def forged(log: RoundLog) -> bytes:
        st = log.standing
        if st is None or st.normalised is None or st.valued_rounds == 0:
            return real(log)
        # Move half of one gain to another site, in the log's values and the shares they give
        # alike: the total, the negative shares and every score (full while the accumulated
        # value is >= 0) stay the same.
        values = {e.site: v for e in log.sites if isinstance(v := e.components.get("value"), float)}
        gains = [s for s, v in values.items() if v > 0]
        assert len(gains) >= 2
        moved = values[gains[0]] / 2
        values[gains[0]] -= moved
        values[gains[1]] += moved
        norm = normalised_values(values)
        assert norm is not None and norm != st.normalised
        after = dict(st.before)
        for s, v in norm.items():
            after[s] = after.get(s, 0.0) + v
        return real(
            dataclasses.replace(
                _with_values(log, values),
                standing=dataclasses.replace(st, normalised=norm, after=after),
            )
        )

    monkeypatch.setattr(RoundLog, "to_bytes", forged)
    fed = federation(tmp_path, rounds=2, **on_anvil(anvil_url))
    public = verify_round(fed.ledger, fed.store, 2)
    assert not {n for n in _failed(public) if n.startswith("standing.")}
    full = verify_round(fed.ledger, fed.store, 2, validation=load_bundled().val)
    assert "standing.recomputed" in _failed(full)


def test_audit_rounds_counts_commitments_and_reveals_apart(three_rounds: Any) -> None:
    from fedtrail.auditor.commands import round_rows

    fed = three_rounds
    r = fed.service.open_next()
    node = fed.nodes[0]
    node.participate(r)  # commits only: the commit window is still open
    rows = {row["round"]: row for row in round_rows(fed.ledger)}
    assert (rows[1]["committed"], rows[1]["revealed"]) == (3, 3)
    assert (rows[r]["committed"], rows[r]["revealed"]) == (1, 0)


def test_a_log_that_names_another_validation_set_fails_terms_validation(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, attack 6: the validation-set hash is committed in the terms at open; a log that
    claims another one (to make a re-run with some other split look right) fails verify."""
    real = RoundLog.to_bytes

    def lying(log: RoundLog) -> bytes:
        other = dataclasses.replace(log.validation, sha256="0" * 64)
        return real(dataclasses.replace(log, validation=other))

    monkeypatch.setattr(RoundLog, "to_bytes", lying)
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    bad = _failed(verify_round(fed.ledger, fed.store, 1))
    assert "terms.validation" in bad and "not the committed" in bad["terms.validation"]


def test_a_false_outlier_verdict_on_the_best_site_fails_the_re_run(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, attack 6: the aggregator zeroes the site its own valuation liked best with a
    made-up OUTLIER_DIRECTION. The chain accepts the form (score 0, a reason code); the screen
    needs no data, and these standing terms' min_cosine is -1, so public verify names it
    (reasons.screen; before, it passed); with the validation set, the re-run of the valuation
    shows the reasons differ too."""
    import fedtrail.aggregator.service as service_mod
    from fedtrail.protocol.codes import Reason

    real = service_mod.value_round

    def biased(**kwargs: Any) -> Any:
        report = real(**kwargs)
        best = max(report.sites, key=lambda v: (v.score, v.site))
        sites = [
            dataclasses.replace(v, score=0, reason=Reason.OUTLIER_DIRECTION, detail="made up")
            if v is best
            else v
            for v in report.sites
        ]
        return dataclasses.replace(report, sites=sites)

    monkeypatch.setattr(service_mod, "value_round", biased)
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    assert any(s.reason == int(Reason.OUTLIER_DIRECTION) for s in fed.ledger.get_submissions(1))
    public = _failed(verify_round(fed.ledger, fed.store, 1))
    # under the preset's warm-up (warm_up_floor 0.5) round 1 shows shares, and the zeroed site
    # keeps one: standing.accumulated names that too
    assert "reasons.screen" in public and set(public) <= {"reasons.screen", "standing.accumulated"}
    assert "passed the screen" in public["reasons.screen"]
    full = verify_round(fed.ledger, fed.store, 1, validation=load_bundled().val)
    bad = _failed(full)
    assert "scores.recomputed" in bad and "reasons DIFFER" in bad["scores.recomputed"]


def test_audit_log_shows_the_standing_with_what_verify_checks(
    three_rounds: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import fedtrail.auditor.commands as commands
    from fedtrail.cli import cli

    fed = three_rounds
    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    args = ["audit", "log", "2", "--store", f"local:{fed.store.root}"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    log = _log(fed, 2)
    assert log.standing is not None and log.standing.previous is not None
    assert f"continues round 1's log {log.standing.previous.cid}" in out.output
    assert "standing [checked by audit verify" in out.output
    site = log.sites[0]
    after = log.standing.after[site.site]
    assert f"{site.name}: +0.000 + " in out.output and f"= {after:+.3f}" in out.output
    first = CliRunner().invoke(cli, ["audit", "log", "1", "--store", f"local:{fed.store.root}"])
    assert "warm-up: nothing accumulated" in first.output


def test_a_round_valued_per_round_does_not_reset_the_standing(
    anvil_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: the aggregator values one round per round (``--per-round``: its terms say
    ``standing: false``), then goes back to standing. Before, the next standing round continued
    that round's log, which has no standing block: every site's record was wiped (a demoted site
    paid in full again) and the round was a second warm-up, with every check passing. Now
    honest sites refuse the round (standing is fixed from round 1) and verify fails its
    ``terms.task_fixed``; with sites that do not check (forced here), the next standing round
    continues the latest log with a block, and a log that starts over fails standing.chain."""
    import fedtrail.node.daemon as daemon

    monkeypatch.setattr(daemon.SiteNode, "_payment_refusal", lambda self, terms, **_: None)
    # nor refuse a round without standing under their [accept] (per_round false by default)
    import fedtrail.valuation.consent as consent

    monkeypatch.setattr(consent, "payment_refusal", lambda accept, rule, settings: None)
    fed = federation(tmp_path, rounds=2, **on_anvil(anvil_url))
    kept = _log(fed, 2).standing
    assert kept is not None and kept.after
    # a dishonest aggregator skips its service's own pre-flight (PaymentSettingsChanged)
    monkeypatch.setattr(fed.service, "_payment_changes", lambda terms: [])
    standing = fed.service.settings
    fed.service.settings = dataclasses.replace(standing, standing=False)
    assert fed.run_round() is not None
    assert _log(fed, 3).standing is None and _log(fed, 3).settings.valuation.standing is False
    fed.service.settings = standing
    assert fed.run_round() is not None
    fourth = _log(fed, 4).standing
    assert fourth is not None and fourth.previous is not None
    info2 = fed.ledger.get_round(2)
    assert (fourth.previous.round, fourth.previous.cid) == (2, info2.log_cid)
    assert dict(fourth.before) == dict(kept.after)
    assert fourth.valued_rounds == kept.valued_rounds + 1
    for audit in verify_all(fed.ledger, fed.store):
        failed = _failed(audit)
        if audit.round == 3:  # standing re-chosen: fixed by round 1's terms
            assert set(failed) == {"terms.task_fixed"}, failed
            assert '"standing":false' in failed["terms.task_fixed"], failed
        else:
            assert audit.passed, (audit.round, failed)

    # the log the aggregator wrote before: round 3's log continued, the records wiped
    info3 = fed.ledger.get_round(3)
    reset = dataclasses.replace(
        fourth,
        previous=dataclasses.replace(
            fourth.previous, round=3, cid=info3.log_cid, sha256=info3.log_sha256
        ),
        before={},
        valued_rounds=0,
    )
    settings = _log(fed, 4).settings.valuation
    problems = {
        name: detail
        for name, passed, detail in check_standing(
            fed.ledger,
            fed.store,
            dataclasses.replace(_log(fed, 4), standing=reset),
            settings,
            fed.ledger.get_submissions(4),
        )
        if not passed
    }
    assert "standing.chain" in problems, problems
    assert "does not continue round 2's log" in problems["standing.chain"]


def test_a_log_whose_records_ignore_the_record_floor_fails(three_rounds: Any) -> None:
    """Terms written now carry ``record_floor`` 0.5: a round-3 log whose ``after`` sinks a
    passed site to ``before`` (forged at -3) plus its share, unraised, fails
    standing.accumulated naming the floor; the same ``after`` raised by ``floored_records``
    passes it. Under the same terms without the field (written before it: the unbounded
    record) the unraised ``after`` passes and the raised one fails."""
    fed = three_rounds
    log = _log(fed, 3)
    assert log.standing is not None and log.standing.normalised is not None
    recorded = log.settings.valuation.to_json()
    assert recorded["combiner"]["record_floor"] == 0.5
    subs = fed.ledger.get_submissions(3)
    passed = {s.site for s in subs if s.reason in (int(Reason.OK), int(Reason.LOW_QUALITY))}
    site = next(s for s in log.standing.normalised if s in passed)
    before = {**log.standing.before, site: -3.0}
    plain = accumulate(before, log.standing.normalised)
    cosines: dict[str, float | None] = {}
    for s in passed:
        entry = log.site(s)
        assert entry is not None
        cos = entry.components.get("cosine")
        checked = entry.components.get("robust_checked") is True
        cosines[s] = float(cos) if checked and isinstance(cos, float) else None
    raised = floored_records(plain, cosines, record_floor=0.5, demote_scale=0.5, relief_cosine=-0.7)
    assert raised[site] > plain[site]
    old_json = {
        **recorded,
        "combiner": {k: v for k, v in recorded["combiner"].items() if k != "record_floor"},
    }
    now, old = ValuationSettings.from_json(recorded), ValuationSettings.from_json(old_json)

    def failed(after: dict[str, float], under: ValuationSettings) -> dict[str, str]:
        forged = dataclasses.replace(
            log, standing=dataclasses.replace(log.standing, before=before, after=after)
        )
        checks = check_standing(fed.ledger, fed.store, forged, under, subs)
        return {n: d for n, ok, d in checks if not ok}

    bad = failed(plain, now)
    assert "raised to record_floor 0.5" in bad["standing.accumulated"]
    assert "standing.accumulated" not in failed(raised, now)
    assert "standing.accumulated" not in failed(plain, old)
    assert "standing.accumulated" in failed(raised, old)
