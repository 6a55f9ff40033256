"""``audit verify`` recomputes the round log's data-free valuation components (cosine, norm,
norm_z, median_norm, robust_checked, which updates counted) from the decoded updates, and weighs
``standing.scores`` with its own norms: a log that lies about them fails ``log.components``
(and ``standing.scores`` where the lie moved a score), while honest logs pass."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import fedtrail.aggregator.service as service_mod
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_round
from fedtrail.chain import connect, dev_account
from fedtrail.ml.datasets import ImageDataset, load_bundled, partition_iid
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.training import TrainConfig
from fedtrail.protocol import roundlog
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.store import LocalStore
from fedtrail.valuation.combine import HISTORY_COMBINER
from fedtrail.valuation.limits import ThresholdLimits
from tests.auditor.test_verify import federation, on_anvil

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def fed(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """Two honest rounds valued with standing (round 2 accumulates), 3 sites: the robust
    thresholds apply (min_robust_sites 3)."""
    return federation(tmp_path_factory.mktemp("components"), rounds=2, **on_anvil(anvil_url))


def _failed(audit: Any) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.failed}


def _audit_with_log(
    fed: Federation,
    round_id: int,
    edit: Edit,
    monkeypatch: pytest.MonkeyPatch,
    validation: ImageDataset | None = None,
    *,
    unchecked: bool = False,
) -> dict[str, str]:
    """The failed checks of ``round_id`` (with ``validation``, if given) when the chain names a
    log edited by ``edit``: the edited log is stored and the ledger's round record re-pointed
    at it (its CID and sha256), as an aggregator that wrote it would have finalized it.
    ``unchecked``: written as canonical JSON without the schema (a log fedtrail's writer
    refuses to write)."""
    info = fed.ledger.get_round(round_id)
    doc = json.loads(fed.store.get(info.log_cid, info.log_sha256))
    edit(doc)
    blob = (
        json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        if unchecked
        else roundlog.to_bytes(doc)
    )
    forged = dataclasses.replace(
        info, log_cid=fed.store.put(blob), log_sha256=hashlib.sha256(blob).hexdigest()
    )
    real = fed.ledger.get_round
    monkeypatch.setattr(fed.ledger, "get_round", lambda r: forged if r == round_id else real(r))
    return _failed(verify_round(fed.ledger, fed.store, round_id, validation=validation))


def _audited(
    fed: Federation,
    round_id: int,
    edit: Edit,
    monkeypatch: pytest.MonkeyPatch,
    validation: ImageDataset | None = None,
) -> Any:
    """The whole audit of ``round_id`` under a log edited by ``edit`` (as ``_audit_with_log``)."""
    _audit_with_log(fed, round_id, edit, monkeypatch)  # stores the log, re-points the round
    return verify_round(fed.ledger, fed.store, round_id, validation=validation)


def _ok_site(doc: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = next(e for e in doc["sites"] if e["reason"] == int(Reason.OK))
    return entry


def test_honest_components_are_recomputed_bit_for_bit(fed: Federation) -> None:
    for round_id in (1, 2):
        audit = verify_round(fed.ledger, fed.store, round_id)
        assert audit.passed, _failed(audit)
        check = next(c for c in audit.checks if c.name == "log.components")
        assert "of the 3 update(s) that counted recomputed bit for bit" in check.detail
        assert "thresholds applied" in check.detail


def _scale(key: str, factor: float) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        comp = _ok_site(doc)["components"]
        comp[key] = comp[key] * factor

    return edit


def _set(key: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        _ok_site(doc)["components"][key] = value

    return edit


def _uncounted(doc: dict[str, Any]) -> None:
    """An OK site shown as rejected before the screen (leaving the median to the others)."""
    comp = _ok_site(doc)["components"]
    comp |= {k: None for k in ("cosine", "norm", "norm_z", "median_norm")}
    comp |= {"status": "OUTLIER_NORM", "robust_checked": False}


COMPONENT_LIES: dict[str, tuple[Edit, str]] = {
    "norm": (_scale("norm", 0.5), "norm "),
    "median_norm": (_scale("median_norm", 2.0), "median_norm "),
    "cosine": (_set("cosine", -0.9), "cosine -0.9, recomputed"),
    "norm_z": (_set("norm_z", 42.0), "norm_z 42.0, recomputed"),
    "robust_checked": (_set("robust_checked", False), "robust_checked False, recomputed True"),
    "status": (_uncounted, "is scored OK, so its update reached the screen"),
    # a figure no valuation gives, beside the checked ones: the report showed it unchecked
    "extra": (_set("harm", 0.35), "shows component(s) harm that no valuation gives"),
}


@pytest.mark.parametrize("lie", list(COMPONENT_LIES))
def test_a_log_that_lies_about_a_data_free_component_fails_log_components(
    lie: str, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each component the chain does not pin but the updates fix: on the parent commit the
    edited log passed every check (they were the aggregator's word); now log.components fails,
    naming the site and the field, and nothing else does."""
    edit, needle = COMPONENT_LIES[lie]
    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    assert set(bad) == {"log.components"}, bad
    assert needle in bad["log.components"]


def test_a_norm_lie_that_keeps_a_full_score_fails_publicly(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Terms that weigh a small update down (small_norm_ratio 0.99: every update more than 1%
    below the median norm keeps only part of its score). The aggregator pays the smallest
    update in full and logs its norm as the median's, so the log's numbers give factor 1: on the
    parent commit standing.scores took the norm from the log and the round passed. Now the norm
    is recomputed from the update: log.components and standing.scores both fail, naming it."""
    real = service_mod.value_round
    lied: list[str] = []

    def generous(**kwargs: Any) -> Any:
        report = real(**kwargs)
        small = [v for v in report.sites if v.reason is Reason.OK and v.score < SCORE_SCALE]
        assert small, "no update was weighed down: the test cannot lie about one"
        v = min(small, key=lambda v: v.score)
        lied.append(v.site)
        fair = dataclasses.replace(v, score=SCORE_SCALE, norm=v.median_norm, detail="full score")
        return dataclasses.replace(report, sites=[fair if s is v else s for s in report.sites])

    monkeypatch.setattr(service_mod, "value_round", generous)
    combiner = dataclasses.replace(HISTORY_COMBINER, small_norm_ratio=0.99)
    settings = AggregatorSettings(valuation="loo", combiner=combiner)
    fed = federation(tmp_path, rounds=1, settings=settings, **on_anvil(anvil_url))
    site = lied[-1]
    sub = next(s for s in fed.ledger.get_submissions(1) if s.site == site)
    assert sub.score == SCORE_SCALE
    bad = _failed(verify_round(fed.ledger, fed.store, 1))
    assert "small_norm_ratio 0.99" in bad.pop("terms.limits")  # stricter than the defaults
    bad = _failed(
        verify_round(fed.ledger, fed.store, 1, accept=ThresholdLimits.accepting(combiner))
    )
    assert set(bad) == {"log.components", "standing.scores"}, bad
    assert f"{site[:10]}: norm " in bad["log.components"]
    assert f"{site[:10]} score {SCORE_SCALE}" in bad["standing.scores"]


def test_the_game_value_is_re_derived_with_the_validation_set(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """components.value (and method) come from the validation game: without the split they
    stay the aggregator's claim (public verify passes every value doubled, which leaves their
    shares, the standing's normalised values, exactly as they were; one value doubled alone
    moves the shares away from the log's and fails standing.accumulated publicly since a95);
    with it, the re-run compares them: on the parent commit only the scores and the standing
    were compared and the doubled values passed; now components.recomputed fails, naming the
    site."""
    val = load_bundled().val
    site: list[str] = []

    def edit(doc: dict[str, Any]) -> None:
        site.append(_ok_site(doc)["site"])
        for entry in doc["sites"]:
            if isinstance(entry["components"].get("value"), float):
                entry["components"]["value"] *= 2

    bad = _audit_with_log(fed, 2, edit, monkeypatch, validation=val)
    assert set(bad) == {"components.recomputed"}, bad
    assert f"{site[0][:10]} value " in bad["components.recomputed"]
    monkeypatch.undo()
    assert _audit_with_log(fed, 2, edit, monkeypatch) == {}
    monkeypatch.undo()
    honest = verify_round(fed.ledger, fed.store, 2, validation=val)
    assert honest.passed, _failed(honest)
    check = next(c for c in honest.checks if c.name == "components.recomputed")
    # valued on the default thread count, re-run on one: the last bits differ (measured
    # 1.2e-10 on a total |value| of 3.3e-4), far inside the tolerance
    assert "largest value difference " in check.detail and "of the round's total" in check.detail


def _lie_about_the_value(site: list[str]) -> Edit:
    """Attack a125 ``detail``: a paid site's text states another game value and a demotion,
    its reason label kept (so public verify's ``log.agrees`` passes it)."""

    def edit(doc: dict[str, Any]) -> None:
        entry = _ok_site(doc)
        site.append(entry["site"])
        label, _ = entry["explanation"].split(":", 1)
        entry["explanation"] = f"{label}: shapley value -0.3000: below, demoted to 1.0%"

    return edit


def _last_digit(doc: dict[str, Any]) -> None:
    """A mantissa's last digit moved by one, as another thread count may print it."""
    entry = _ok_site(doc)
    moved = lambda m: "8" if m[0] == "9" else str(int(m[0]) + 1)  # noqa: E731
    entry["explanation"] = re.sub(r"\d(?=(?:e[-+]\d+)?,)", moved, entry["explanation"], count=1)
    assert "," in entry["explanation"]


def test_a_text_that_is_not_the_re_runs_fails_under_a_named_wording(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each usable update's explanation text is the valuation's (``ok: shapley value 0.4455,
    accumulated 0.7188: not below, full score``), and the terms name its wording
    (``valuation.explanation_wording``, session 57): with the split, a text that is not the
    one the re-run renders fails components.recomputed, naming the site (attack a125
    ``detail``: on the parent commit it was named in the detail, "noted, not failed", and the
    round passed). Digits moved by one unit are the re-run's (numbers compared parsed, within
    one unit of the last printed digit); the honest log passes."""
    val = load_bundled().val
    terms = fed.service.terms(2)[0]
    assert terms.valuation["explanation_wording"] == roundlog.EXPLANATION_WORDING == 1
    site: list[str] = []
    bad = _audit_with_log(fed, 2, _lie_about_the_value(site), monkeypatch, validation=val)
    monkeypatch.undo()
    assert set(bad) == {"components.recomputed"}, bad
    assert f"{site[0][:10]} explanation 'ok: shapley value -0.3000" in bad["components.recomputed"]
    assert (
        "explanation wording 1: a text that is not the re-run's fails"
        in bad["components.recomputed"]
    )
    # public verify cannot re-derive the values: the label is the chain's, nothing fails
    assert _audit_with_log(fed, 2, _lie_about_the_value([]), monkeypatch) == {}
    monkeypatch.undo()
    moved = _audited(fed, 2, _last_digit, monkeypatch, val)
    monkeypatch.undo()
    assert moved.passed, _failed(moved)
    honest = verify_round(fed.ledger, fed.store, 2, validation=val)
    check = next(c for c in honest.checks if c.name == "components.recomputed")
    assert check.passed and check.detail.endswith(
        "; explanation wording 1: 3 explanation text(s) the re-run's"
    ), check.detail


def test_a_log_cannot_drop_the_wording_its_terms_name(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wording is named by the terms committed at open, which the log's settings repeat:
    a log that leaves it out to have its lying text only noted fails terms.valuation, and the
    text is still held to the terms' wording."""
    val = load_bundled().val
    lie = _lie_about_the_value([])

    def edit(doc: dict[str, Any]) -> None:
        del doc["settings"]["valuation"]["explanation_wording"]
        lie(doc)

    bad = _audit_with_log(fed, 2, edit, monkeypatch, validation=val)
    assert set(bad) == {"terms.valuation", "components.recomputed"}, bad


@pytest.fixture(scope="module")
def old_writer(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """One honest round written as an aggregator before session 57 wrote it: terms (and so
    the log) without ``valuation.explanation_wording``."""
    settings = AggregatorSettings(valuation="loo", explanation_wording=None)
    tmp = tmp_path_factory.mktemp("old-writer")
    return federation(tmp, rounds=1, settings=settings, **on_anvil(anvil_url))


def test_an_older_writers_texts_are_noted_not_failed(
    old_writer: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log whose terms name no wording (a writer before session 57) keeps session 56's
    rule: its honest texts pass, and a text that is not the re-run's is named in
    components.recomputed's detail, "noted, not failed" (its wording may be an older
    release's)."""
    fed, val = old_writer, load_bundled().val
    assert "explanation_wording" not in fed.service.terms(1)[0].valuation
    honest = verify_round(fed.ledger, fed.store, 1, validation=val)
    assert honest.passed, _failed(honest)
    check = next(c for c in honest.checks if c.name == "components.recomputed")
    assert check.detail.endswith("explanation text(s) the re-run's (no explanation wording named)")
    site: list[str] = []
    audit = _audited(fed, 1, _lie_about_the_value(site), monkeypatch, val)
    assert audit.passed, _failed(audit)
    detail = next(c.detail for c in audit.checks if c.name == "components.recomputed")
    assert "noted, not failed: 1 of 3 explanation text(s) are not the re-run's" in detail
    assert "the log names no explanation wording" in detail
    assert f"{site[0][:10]} explanation 'ok: shapley value -0.3000" in detail


def _sub(site: str, n: int, reason: Reason, weight: int) -> Any:
    from fedtrail.ledger import Submission

    score = SCORE_SCALE if reason is Reason.OK else 0
    return Submission(1, site, "Qm", "aa" * 32, n, score, int(reason), weight, "00", 1, True)


def test_reasons_the_chain_alone_decides_are_recomputed() -> None:
    """IMPLAUSIBLE_SAMPLES follows from the on-chain sample counts and LATE from the contract's
    deadlines, so public verify recomputes both (``reasons.public``): a site zeroed as
    implausible with an ordinary count, one called late, and an ally paid its tenfold count
    each fail; the honest reading passes."""
    from fedtrail.auditor.components import check_public_reasons

    settings = ValuationSettings(method="loo", metric="auc", standing=True)
    ok, implausible, late = Reason.OK, Reason.IMPLAUSIBLE_SAMPLES, Reason.LATE
    honest = [_sub("0xa", 100, ok, 1), _sub("0xb", 120, ok, 1), _sub("0xc", 5000, implausible, 0)]
    assert check_public_reasons(honest, {}, settings)[1]
    cases = {
        "zeroed": (
            [_sub("0xa", 100, ok, 1), _sub("0xb", 120, ok, 1), _sub("0xc", 110, implausible, 0)],
            "0xc claims 110",
        ),
        "late": ([_sub("0xa", 100, ok, 1), _sub("0xb", 120, late, 0)], "0xb is LATE"),
        "ally": (
            [_sub("0xa", 100, ok, 1), _sub("0xb", 120, ok, 1), _sub("0xc", 5000, ok, 1)],
            "0xc claims 5000",
        ),
    }
    for name, (subs, needle) in cases.items():
        check, passed, detail = check_public_reasons(subs, {}, settings)
        assert (check, passed) == ("reasons.public", False), name
        assert needle in detail, (name, detail)
    # an unusable update counts in no median: here two usable others are left for 0xc
    subs = [*honest, _sub("0xd", 1, Reason.TAMPERED, 0)]
    assert check_public_reasons(subs, {"0xd": Reason.TAMPERED}, settings)[1]


def test_reasons_public_replays_each_rounds_own_median_of_the_counts() -> None:
    """Terms written with ``sample_median_self`` (every round from stop 38 on) judge a count
    against the median with its own count in, so honest 300-image sites zeroed beside two
    colluders claiming 1 fail ``reasons.public``; a log whose recorded thresholds lack the field
    replays the older median of the others, under which the same verdicts are the rule."""
    from dataclasses import asdict

    from fedtrail.auditor.components import check_public_reasons
    from fedtrail.valuation import HISTORY_COMBINER
    from fedtrail.valuation.chained import combiner_from

    ok, implausible = Reason.OK, Reason.IMPLAUSIBLE_SAMPLES
    sabotaged = [
        _sub("0xa", 300, implausible, 0),
        _sub("0xb", 300, implausible, 0),
        _sub("0xc", 1, ok, 1),
        _sub("0xd", 1, ok, 1),
    ]
    fair = [_sub(s.site, s.num_samples, ok, 1) for s in sabotaged]
    now = ValuationSettings(
        method="loo", metric="auc", standing=True, combiner=asdict(HISTORY_COMBINER)
    )
    recorded = {k: v for k, v in asdict(HISTORY_COMBINER).items() if k != "sample_median_self"}
    before = ValuationSettings(method="loo", metric="auc", standing=True, combiner=recorded)
    assert combiner_from(now).sample_median_self == 1
    assert combiner_from(before).sample_median_self == 0
    name, passed, detail = check_public_reasons(sabotaged, {}, now)
    assert (name, passed) == ("reasons.public", False)
    assert "0xa claims 300 samples against the median 150.5" in detail
    assert check_public_reasons(fair, {}, now)[1]
    assert check_public_reasons(sabotaged, {}, before)[1]
    assert not check_public_reasons(fair, {}, before)[1]


def test_an_honest_site_zeroed_as_implausible_fails_public_verify(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: the aggregator marks an honest site IMPLAUSIBLE_SAMPLES before the screen (its
    count is ordinary), so the statistics and the log agree with the chain. Before, public
    verify passed it (the reason was the aggregator's word without the validation split)."""
    real = service_mod.value_round
    victim: list[str] = []

    def zeroing(**kwargs: Any) -> Any:
        cands = list(kwargs["candidates"])
        i = max(range(len(cands)), key=lambda k: cands[k].site)
        victim.append(cands[i].site)
        cands[i] = dataclasses.replace(
            cands[i], status=Reason.IMPLAUSIBLE_SAMPLES, detail="claims too many samples"
        )
        return real(**{**kwargs, "candidates": cands})

    monkeypatch.setattr(service_mod, "value_round", zeroing)
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    sub = next(s for s in fed.ledger.get_submissions(1) if s.site == victim[-1])
    assert (sub.reason, sub.weight) == (int(Reason.IMPLAUSIBLE_SAMPLES), 0)
    bad = _failed(verify_round(fed.ledger, fed.store, 1))
    assert set(bad) == {"reasons.public"}, bad
    assert f"{victim[-1][:10]} claims {sub.num_samples} samples" in bad["reasons.public"]


def test_an_honest_site_zeroed_as_a_free_rider_fails_public_verify(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: in round 2 of a standing federation the aggregator marks an honest site
    FREE_RIDER before the screen. The verdict needs no data (norms and the stale screen over
    the updates and the history's references), yet before public verify passed it and only
    the validation re-run caught it; now reasons.free_rider names the site."""
    real = service_mod.value_round
    victim: list[str] = []

    def zeroing(**kwargs: Any) -> Any:
        cands = list(kwargs["candidates"])
        history = kwargs.get("history")
        if history is not None and not history.warm_up:
            i = max(range(len(cands)), key=lambda k: cands[k].site)
            victim.append(cands[i].site)
            cands[i] = dataclasses.replace(cands[i], status=Reason.FREE_RIDER, detail="resend")
        return real(**{**kwargs, "candidates": cands})

    monkeypatch.setattr(service_mod, "value_round", zeroing)
    fed = federation(tmp_path, rounds=2, **on_anvil(anvil_url))
    sub = next(s for s in fed.ledger.get_submissions(2) if s.site == victim[-1])
    assert (sub.reason, sub.weight) == (int(Reason.FREE_RIDER), 0)
    assert verify_round(fed.ledger, fed.store, 1).passed
    bad = _failed(verify_round(fed.ledger, fed.store, 2))
    assert set(bad) == {"reasons.free_rider"}, bad
    assert (
        f"{victim[-1][:10]} is FREE_RIDER, but its update is no free-rider"
        in bad["reasons.free_rider"]
    )


def test_screen_verdicts_follow_from_the_recomputed_statistics() -> None:
    """The screen is data-free: with the thresholds applied, an update that counted is
    OUTLIER_DIRECTION exactly below min_cosine and OUTLIER_NORM exactly above max_norm_z
    (``reasons.screen``). Found by an attack review: an ally's x30 update
    (norm z 114) paid OK, and an honest site (cosine 0.99) zeroed OUTLIER_DIRECTION under
    standing terms whose min_cosine is -1, or LOW_GAIN after the screen, which a round valued
    with standing never gives, each passed every public check."""
    from fedtrail.auditor.components import Recomputed, check_screen
    from fedtrail.valuation.robust import RobustStats

    standing = ValuationSettings(
        method="loo",
        metric="balanced_loss",
        standing=True,
        explanation_check=False,
        combiner=dataclasses.asdict(HISTORY_COMBINER),
    )
    per_round = ValuationSettings(
        method="loo", metric="balanced_loss", standing=False, explanation_check=False
    )
    stats = {
        "0xa": RobustStats(cosine=0.99, norm=1.0, norm_z=0.0, median_norm=1.0),
        "0xb": RobustStats(cosine=0.95, norm=1.1, norm_z=0.4, median_norm=1.0),
        "0xc": RobustStats(cosine=0.97, norm=30.0, norm_z=114.0, median_norm=1.0),
        "0xd": RobustStats(cosine=-0.9, norm=1.0, norm_z=0.0, median_norm=1.0),
    }
    robust = Recomputed(stats, checked=True)
    ok, direction, size = Reason.OK, Reason.OUTLIER_DIRECTION, Reason.OUTLIER_NORM

    def run(settings: ValuationSettings, *reasons: Reason) -> tuple[bool, str]:
        subs = [_sub(site, 100, r, 0) for site, r in zip(stats, reasons, strict=True)]
        name, passed, detail = check_screen(subs, robust, settings)
        assert name == "reasons.screen"
        return passed, detail

    # standing (min_cosine -1: the direction screen off; max_norm_z 20)
    assert run(standing, ok, ok, size, ok)[0]
    passed, detail = run(standing, ok, ok, ok, ok)  # the x30 update paid
    assert not passed and "0xc's robust norm z 114.0 is above max_norm_z 20" in detail
    passed, detail = run(standing, direction, ok, size, ok)  # the best site zeroed
    assert not passed and "0xa passed the screen" in detail and "OUTLIER_DIRECTION" in detail
    passed, detail = run(standing, Reason.LOW_GAIN, ok, size, ok)
    assert not passed and "LOW_GAIN" in detail
    # per round (min_cosine -0.5, max_norm_z 10)
    assert run(per_round, ok, Reason.LOW_GAIN, size, direction)[0]
    passed, detail = run(per_round, ok, ok, size, ok)  # the sign-flipper paid
    assert not passed and "0xd's cosine -0.9" in detail
    passed, detail = run(per_round, ok, ok, size, Reason.LOW_QUALITY)
    assert not passed and "only a round valued with standing" in detail
    # without the thresholds applied the screen rejects nothing, but the per-round data-free
    # fallback may still call a non-positive cosine OUTLIER_DIRECTION
    few = Recomputed(stats, checked=False)
    subs = [_sub(site, 100, r, 0) for site, r in zip(stats, (ok, ok, ok, direction), strict=True)]
    assert check_screen(subs, few, per_round)[1]
    assert not check_screen(subs, few, standing)[1]
    subs[2] = _sub("0xc", 100, size, 0)
    assert not check_screen(subs, few, per_round)[1]


class _Logged:
    """A round log reduced to what ``reasons.oversized`` reads: each site's logged status."""

    def __init__(self, statuses: dict[str, str]) -> None:
        self.statuses = statuses

    def site(self, site: str) -> Any:
        return SimpleNamespace(components={"status": self.statuses[site]})


def test_an_oversized_update_must_be_outlier_norm_before_the_screen() -> None:
    """The 100x-the-model bound needs no data, so public verify recomputes it
    (``reasons.oversized``): an update above it paid OK, or OUTLIER_NORM but counted toward the
    statistics, fails; rejected before the screen it passes, as do updates within the bound,
    whatever their reason (an OUTLIER_NORM within it may be the validation split's verdict)."""
    from fedtrail.auditor.components import check_oversized

    spec = ModelSpec()
    start = {k: torch.full_like(v, 0.01) for k, v in spec.build().state_dict().items()}
    small = {k: v * 0.5 for k, v in start.items()}
    huge = {k: v * 150 for k, v in start.items()}
    ok, outlier = Reason.OK, Reason.OUTLIER_NORM
    deltas = {"0xa": small, "0xb": small, "0xc": huge}
    honest = [_sub("0xa", 100, ok, 1), _sub("0xb", 100, outlier, 0), _sub("0xc", 100, outlier, 0)]
    logged: Any = _Logged({"0xa": "OK", "0xb": "OUTLIER_NORM", "0xc": "OUTLIER_NORM"})
    name, passed, detail = check_oversized(logged, honest, deltas, {}, spec, start)
    assert (name, passed) == ("reasons.oversized", True), detail
    assert "1 of 3 usable" in detail
    all_ok: Any = _Logged({"0xa": "OK", "0xb": "OK", "0xc": "OK"})
    paid = [_sub("0xa", 100, ok, 1), _sub("0xb", 100, ok, 1), _sub("0xc", 100, ok, 1)]
    passed, detail = check_oversized(all_ok, paid, deltas, {}, spec, start)[1:]
    assert not passed and "0xc's update is 150 times" in detail and "not OUTLIER_NORM" in detail
    counted = [_sub("0xa", 100, ok, 1), _sub("0xb", 100, ok, 1), _sub("0xc", 100, outlier, 0)]
    passed, detail = check_oversized(all_ok, counted, deltas, {}, spec, start)[1:]
    assert not passed and "yet it counted toward the statistics" in detail
    # an update zeroed before the size check, or found tampered, is not judged here
    earlier = [_sub("0xa", 100, ok, 1), _sub("0xc", 100, Reason.FREE_RIDER, 0)]
    assert check_oversized(all_ok, earlier, deltas, {}, spec, start)[1]
    assert check_oversized(all_ok, paid, deltas, {"0xc": Reason.TAMPERED}, spec, start)[1]


def test_known_norms_spare_the_exact_norm_only_for_updates_clearly_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``check_oversized`` with the robust statistics' norms (another exact-to-rounding sum of
    the same squares): the same verdicts and details as without them; the exact norm is taken
    only for an update whose known norm is not below the bound by KNOWN_NORM_MARGIN (a known
    norm just under the bound, or none, still gets it)."""
    import fedtrail.auditor.components as components
    from fedtrail.valuation.round import KNOWN_NORM_MARGIN, MAX_UPDATE_TO_MODEL_NORM, model_norm
    from fedtrail.valuation.rows import Rows

    spec = ModelSpec()
    start = {k: torch.full_like(v, 0.01) for k, v in spec.build().state_dict().items()}
    deltas = {
        "0xa": {k: v * 0.5 for k, v in start.items()},
        "0xb": {k: v * 3 for k, v in start.items()},
        "0xc": {k: v * 150 for k, v in start.items()},
    }
    rows = Rows.of(list(deltas.values()))
    known = {site: rows.norm(i) for i, site in enumerate(deltas)}
    ok = Reason.OK
    cases: list[tuple[Any, list[Any]]] = [
        (_Logged({s: "OK" for s in deltas}), [_sub(s, 100, ok, 1) for s in deltas]),
        (
            _Logged({"0xa": "OK", "0xb": "OK", "0xc": "OUTLIER_NORM"}),
            [
                _sub("0xa", 100, ok, 1),
                _sub("0xb", 100, ok, 1),
                _sub("0xc", 100, Reason.OUTLIER_NORM, 0),
            ],
        ),
    ]
    exact: list[float] = []

    def counted(tensors: Any) -> float:
        exact.append(model_norm(tensors))
        return exact[-1]

    monkeypatch.setattr(components, "model_norm", counted)
    for logged, subs in cases:
        exact.clear()
        plain = check_oversized_of(logged, subs, deltas, spec, start, None)
        assert len(exact) == 4  # the start model's and each update's
        exact.clear()
        assert check_oversized_of(logged, subs, deltas, spec, start, known) == plain
        assert len(exact) == 2  # the start model's and the oversized one's
    scale = model_norm(start)
    edge = {**known, "0xb": MAX_UPDATE_TO_MODEL_NORM * scale * (1.0 - KNOWN_NORM_MARGIN / 2)}
    exact.clear()
    check_oversized_of(cases[0][0], cases[0][1], deltas, spec, start, edge)
    assert len(exact) == 3  # within the margin of the bound: computed exactly


def check_oversized_of(
    logged: Any, subs: list[Any], deltas: Any, spec: ModelSpec, start: Any, known: Any
) -> Any:
    from fedtrail.auditor.components import check_oversized

    return check_oversized(logged, subs, deltas, {}, spec, start, known)


def test_an_update_let_past_the_size_bound_fails_public_verify(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: the aggregator skips the size bound for an update 8,600x the global model's
    norm, so the verdict on it is the data-dependent checks' (here the warm-up harm check's
    LOW_GAIN; in a round too small for the robust screen whatever the game pays). Every public
    check passed that before; ``reasons.oversized`` names the site."""
    import fedtrail.valuation.round as round_mod

    monkeypatch.setattr(round_mod, "MAX_UPDATE_TO_MODEL_NORM", 1e30)  # the aggregator's bound
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 10, seed=0)
    accounts = [dev_account(i) for i in (0, 5, 6, 7)]
    fed = build_federation(
        w3=connect(anvil_url),
        coordinator=accounts[0],
        sites=make_sites(
            accounts[1:],
            [splits.train.subset(parts[i]) for i in range(3)],
            training=TrainConfig(epochs=1),
            faults=[SiteFault(), SiteFault(), SiteFault(kind="scale", factor=1e6)],
        ),
        store=LocalStore(tmp_path / "store"),
        folder=tmp_path,
        validation=splits.val,
        settings=AggregatorSettings(valuation="loo"),
    )
    fed.run_round()
    ally = accounts[3].address
    audit = verify_round(fed.ledger, fed.store, 1)
    sub = next(s for s in fed.ledger.get_submissions(1) if s.site == ally)
    assert sub.reason != int(Reason.OUTLIER_NORM)  # the bound skipped: another verdict
    bad = _failed(audit)
    assert set(bad) == {"reasons.oversized"}, bad
    assert f"{ally[:10]}'s update is" in bad["reasons.oversized"]


def test_screen_verdicts_replay_the_size_allowance_of_the_terms() -> None:
    """A 1,000-image site beside sites of 90-200 images, norm 12x the others' (robust z 41.7):
    under terms with ``norm_size_cap`` 10 its claimed count (6.25x the median 160) excuses it, so
    OUTLIER_NORM is a verdict its statistics contradict; under terms recorded before the
    allowance (no such field) it must be OUTLIER_NORM, and paying it fails."""
    from fedtrail.auditor.components import Recomputed, check_screen
    from fedtrail.valuation.robust import RobustStats

    now = dataclasses.asdict(dataclasses.replace(HISTORY_COMBINER, norm_size_cap=10.0))
    before = {k: v for k, v in now.items() if k not in {"norm_size_cap", "tiny_size_power"}}
    median, scale = 1.05, 0.25 * 1.05

    def stats(norm: float) -> RobustStats:
        return RobustStats(
            cosine=0.9, norm=norm, norm_z=(norm - median) / scale, median_norm=median
        )

    robust = Recomputed(
        {"0xa": stats(1.0), "0xb": stats(1.0), "0xc": stats(1.1), "0xd": stats(12.0)},
        checked=True,
    )
    counts = {"0xa": 90, "0xb": 120, "0xc": 200, "0xd": 1000}

    def run(combiner: dict[str, Any], big: Reason) -> tuple[bool, str]:
        settings = ValuationSettings(
            method="loo",
            metric="balanced_loss",
            standing=True,
            explanation_check=False,
            combiner=combiner,
        )
        reasons = {"0xa": Reason.OK, "0xb": Reason.OK, "0xc": Reason.OK, "0xd": big}
        subs = [_sub(s, n, reasons[s], 0) for s, n in counts.items()]
        _, passed, detail = check_screen(subs, robust, settings)
        return passed, detail

    assert run(now, Reason.OK)[0]
    passed, detail = run(now, Reason.OUTLIER_NORM)
    assert not passed and "0xd passed the screen" in detail
    assert run(before, Reason.OUTLIER_NORM)[0]
    passed, detail = run(before, Reason.OK)
    assert not passed and "above max_norm_z 20, yet it is OK, not OUTLIER_NORM" in detail
    # x10 of it is an outlier under either terms
    boosted = Recomputed({**robust.stats, "0xd": stats(120.0)}, checked=True)
    subs = [_sub(s, n, Reason.OK, 0) for s, n in counts.items()]
    settings = ValuationSettings(
        method="loo", metric="balanced_loss", standing=True, explanation_check=False, combiner=now
    )
    _, passed, detail = check_screen(subs, boosted, settings)
    assert not passed and "(its 6.25x size allowance applied) is above max_norm_z 20" in detail


def test_screen_verdicts_replay_the_second_norm_screen_of_the_terms() -> None:
    """``size_norm_z`` (off by default): a 15-image site's update at 3.5x the median norm
    (robust z 10, under max_norm_z 20) beside an honest 80-image site at 4.5x (z 14, its
    allowance 4x the median count 20). Under terms with ``size_norm_z`` 6 the small site must be
    OUTLIER_NORM and paying it fails; the large one passes either way; under terms without
    the field (off) the small site passes and OUTLIER_NORM on it is a verdict its statistics
    contradict."""
    from fedtrail.auditor.components import Recomputed, check_screen
    from fedtrail.valuation.robust import RobustStats

    on = dataclasses.asdict(dataclasses.replace(HISTORY_COMBINER, size_norm_z=6.0))
    before = {k: v for k, v in on.items() if k != "size_norm_z"}
    median, scale = 1.0, 0.25

    def stats(norm: float) -> RobustStats:
        return RobustStats(
            cosine=0.5, norm=norm, norm_z=(norm - median) / scale, median_norm=median
        )

    norms = {"0xa": 1.0, "0xb": 0.9, "0xc": 1.1, "0xd": 4.5, "0xe": 3.5}
    counts = {"0xa": 20, "0xb": 22, "0xc": 18, "0xd": 80, "0xe": 15}
    robust = Recomputed({s: stats(n) for s, n in norms.items()}, checked=True)

    def run(combiner: dict[str, Any], small: Reason) -> tuple[bool, str]:
        settings = ValuationSettings(
            method="shapley",
            metric="balanced_loss",
            standing=True,
            explanation_check=False,
            combiner=combiner,
        )
        subs = [_sub(s, n, small if s == "0xe" else Reason.OK, 0) for s, n in counts.items()]
        _, passed, detail = check_screen(subs, robust, settings)
        return passed, detail

    assert run(on, Reason.OUTLIER_NORM)[0]
    passed, detail = run(on, Reason.OK)
    assert not passed
    assert "0xe's robust norm z after its claimed count's allowance 10.0 is above " in detail
    assert "size_norm_z 6, yet it is OK, not OUTLIER_NORM" in detail
    assert "0xd" not in detail
    assert run(before, Reason.OK)[0]
    passed, detail = run(before, Reason.OUTLIER_NORM)
    assert not passed and "0xe passed the screen" in detail


def _noise_federation(tmp: Path, anvil_url: str) -> Federation:
    """Three hospitals on Anvil for 2 rounds, valued with leave-one-out and standing; the third
    sends i.i.d. Gaussian noise (std 0.002: its norm is no tiny one) instead of training."""
    chain = on_anvil(anvil_url)
    accounts = chain["accounts"]
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 10, seed=0)
    sites = accounts[1:]
    fed = build_federation(
        w3=chain["w3"],
        coordinator=accounts[0],
        sites=make_sites(
            sites,
            [splits.train.subset(parts[i]) for i in range(len(sites))],
            names=[f"hospital-{i}" for i in range(len(sites))],
            training=TrainConfig(epochs=1),
            faults=[SiteFault(), SiteFault(), SiteFault(kind="gaussian", std=0.002, seed=5)],
            accept=ThresholdLimits(),
        ),
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=splits.val,
        settings=AggregatorSettings(valuation="loo"),
    )
    for _ in range(2):
        fed.run_round()
    return fed


def test_white_noise_is_free_rider_and_an_aggregator_that_pays_it_fails_public_verify(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free-rider screen's white-noise test (``white_noise_z``) is data-free, so verify
    recomputes it: an honest aggregator marks the noise site FREE_RIDER and passes; one that
    values the round with the test off (paying the noise) fails ``reasons.free_rider``, which
    names the site."""
    honest = _noise_federation(tmp_path / "honest", anvil_url)
    noise_site = honest.sites[2].account.address
    for r in (1, 2):
        sub = next(s for s in honest.ledger.get_submissions(r) if s.site == noise_site)
        assert (sub.reason, sub.weight) == (int(Reason.FREE_RIDER), 0)
        audit = verify_round(honest.ledger, honest.store, r)
        assert not _failed(audit)
        check = next(c for c in audit.checks if c.name == "reasons.free_rider")
        assert check.detail.endswith("their explanation texts the recomputed ones (wording 1)")

    # under a named wording the rider's text is the recomputed verdict's (session 57): one that
    # states another statistic, its label kept, fails public verify naming the site
    def lie(doc: dict[str, Any]) -> None:
        entry = next(e for e in doc["sites"] if e["site"] == noise_site)
        assert entry["explanation"].startswith("free rider: white noise"), entry["explanation"]
        entry["explanation"] = re.sub(r"\d+\.\d+", "0.5", entry["explanation"], count=1)

    bad = _audit_with_log(honest, 2, lie, monkeypatch)
    monkeypatch.undo()
    assert set(bad) == {"reasons.free_rider"}, bad
    assert f"{noise_site[:10]}'s explanation 'free rider: white noise" in bad["reasons.free_rider"]

    real = service_mod.value_round

    def lenient(**kwargs: Any) -> Any:
        comb = dataclasses.replace(kwargs["combiner"], white_noise_z=0.0, block_noise_z=0.0)
        return real(**{**kwargs, "combiner": comb})

    monkeypatch.setattr(service_mod, "value_round", lenient)
    fed = _noise_federation(tmp_path / "lenient", anvil_url)
    noise_site = fed.sites[2].account.address
    sub = next(s for s in fed.ledger.get_submissions(2) if s.site == noise_site)
    assert sub.reason != int(Reason.FREE_RIDER)
    bad = _failed(verify_round(fed.ledger, fed.store, 2))
    assert "reasons.free_rider" in bad, bad
    assert f"{noise_site[:10]} is a free-rider (white noise" in bad["reasons.free_rider"]
