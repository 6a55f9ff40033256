"""``reasons.explanation_shift``: under terms with the explanation check, public ``audit
verify`` (no validation split) fetches the committed probe set and recomputes every
EXPLANATION_SHIFT verdict. An honest round passes; an aggregator that zeroes an honest site as
EXPLANATION_SHIFT (the attack review's a22) fails by that check's name; a probe blob that is
tampered, too large, malformed or uncommitted fails it too, never crashes the audit."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.explanation_check import check_explanation_shift
from fedtrail.auditor.verify import verify_round
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import ExplanationProbe, RoundLog, ValuationSettings
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.federation import Federation
from fedtrail.storage.codec import decode_model, decode_update
from fedtrail.storage.probe import MAX_PROBE_BYTES, decode_probe, encode_probe
from fedtrail.storage.store import LocalStore
from fedtrail.valuation import explanation
from tests.auditor.test_verify import federation, on_anvil

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

CHECKED = AggregatorSettings(valuation="loo", explanation_check=True, explain_method=None)
NAME = "reasons.explanation_shift"


def _failed(audit: Any) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.failed}


@pytest.fixture(scope="module")
def fed(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """One honest round under terms with the explanation check (3 sites)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tmp = tmp_path_factory.mktemp("explained")
        return federation(tmp, rounds=1, settings=CHECKED, **on_anvil(anvil_url))
    finally:
        torch.set_num_threads(before)


def _terms(fed: Federation) -> RoundTerms:
    info = fed.ledger.get_round(1)
    return RoundTerms.from_bytes(fed.store.get(info.terms_cid, info.terms_sha256))


def test_an_honest_explanation_check_round_passes_without_the_split(fed: Federation) -> None:
    settings = ValuationSettings.from_json(_terms(fed).valuation)
    ref = settings.explanation_probe
    assert settings.explanation_check is True and ref is not None and ref.images == 32
    probe = decode_probe(fed.store.get(ref.cid, ref.sha256), channels=1, size=28)
    assert float(probe[:, :, :4, :4].min()) == 1.0  # the corner tag the check relies on
    audit = verify_round(fed.ledger, fed.store, 1)
    checks = {c.name: c for c in audit.checks}
    assert audit.passed, _failed(audit)
    assert checks[NAME].passed and "0 EXPLANATION_SHIFT verdict(s) of 3 update(s)" in (
        checks[NAME].detail
    )


def _parts(fed: Federation) -> dict[str, Any]:
    """The inputs verify hands the check for round 1, read from the chain and the store."""
    info = fed.ledger.get_round(1)
    terms = _terms(fed)
    spec = ModelSpec(**terms.model_spec)
    subs = fed.ledger.get_submissions(1)
    log = RoundLog.from_bytes(fed.store.get(info.log_cid, info.log_sha256))
    start, _ = decode_model(fed.store.get(info.start_cid, info.start_sha256), spec=spec)
    deltas = {s.site: decode_update(fed.store.get(s.cid, s.sha256), spec=spec)[0] for s in subs}
    return {
        "log": log,
        "subs": subs,
        "deltas": deltas,
        "unusable": {},
        "spec": spec,
        "settings": ValuationSettings.from_json(terms.valuation),
        "start": start,
    }


def _with_probe(parts: dict[str, Any], ref: ExplanationProbe | None) -> dict[str, Any]:
    return {**parts, "settings": dataclasses.replace(parts["settings"], explanation_probe=ref)}


def test_a_bad_or_missing_probe_blob_fails_the_check_by_name(
    fed: Federation, tmp_path: Path
) -> None:
    parts = _parts(fed)
    name, ok, detail = check_explanation_shift(fed.store, **parts)
    assert (name, ok) == (NAME, True), detail
    real = parts["settings"].explanation_probe
    # tampered: the store holds other bytes under the committed CID
    copy = LocalStore(tmp_path / "store")
    good = fed.store.get(real.cid, real.sha256)
    (tmp_path / "store" / "blobs").mkdir(parents=True)
    (tmp_path / "store" / "blobs" / real.cid).write_bytes(good[:-4] + b"\x00\x00\x80\x7f")
    name, ok, detail = check_explanation_shift(copy, **parts)
    assert (name, ok) == (NAME, False) and "cannot fetch the committed probe set" in detail
    # committed, hash-correct, but malformed / wrong shape / too large / miscounted
    huge = b"\x00" * (MAX_PROBE_BYTES + 1)
    for blob, message in [
        (b"not safetensors", "not safetensors"),
        (encode_probe(torch.zeros(2, 3, 28, 28)), "3 channel(s); the model takes 1"),
        (encode_probe(torch.zeros(2, 1, 8, 8)), "8x8; the model takes 28x28"),
        (huge, "over the"),
    ]:
        cid = fed.store.put(blob)
        ref = ExplanationProbe(cid=cid, sha256=hashlib.sha256(blob).hexdigest(), images=2)
        name, ok, detail = check_explanation_shift(fed.store, **_with_probe(parts, ref))
        assert (name, ok) == (NAME, False) and message in detail, detail
    miscounted = dataclasses.replace(real, images=31)
    name, ok, detail = check_explanation_shift(fed.store, **_with_probe(parts, miscounted))
    assert not ok and "holds 32 images, the terms say 31" in detail
    # terms that run the check without committing a probe: the verdicts are not checkable
    name, ok, detail = check_explanation_shift(fed.store, **_with_probe(parts, None))
    assert not ok and detail.startswith("not checked: ") and "explanation_probe" in detail


def test_an_honest_site_zeroed_as_explanation_shift_fails_public_verify(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a22: the service's scorer flags an honest site whatever its heatmaps show. Before, only
    ``--validation`` could catch it; now the public probe gives no shift and the check names
    the site."""
    victim: list[str] = []
    real = explanation.ExplanationScorer.flag

    def flag(self: explanation.ExplanationScorer, ctx: Any) -> Any:
        cands = real(self, ctx)
        target = max(c.site for c in cands)
        victim.append(target)
        return [
            dataclasses.replace(c, status=Reason.EXPLANATION_SHIFT, detail="moved to corners")
            if c.site == target
            else c
            for c in cands
        ]

    monkeypatch.setattr(explanation.ExplanationScorer, "flag", flag)
    fed = federation(tmp_path, rounds=1, settings=CHECKED, **on_anvil(anvil_url))
    sub = next(s for s in fed.ledger.get_submissions(1) if s.site == victim[-1])
    assert (sub.reason, sub.weight) == (int(Reason.EXPLANATION_SHIFT), 0)
    monkeypatch.setattr(explanation.ExplanationScorer, "flag", real)
    bad = _failed(verify_round(fed.ledger, fed.store, 1))
    assert set(bad) == {NAME}, bad
    assert f"{victim[-1][:10]} is EXPLANATION_SHIFT, but the public probe gives" in bad[NAME]


def test_a_paid_shift_and_a_log_reason_that_is_not_the_recomputed_one_fail(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the shift threshold at 0 (for this test only), the honest update that moved the
    most attribution into the corners counts as shifted: paid OK, it fails the check (an ally
    let through); marked EXPLANATION_SHIFT with a log entry that does not hold the recomputed
    reason, it fails too (the log's recorded components disagree)."""
    parts = _parts(fed)
    defaults = explanation.ExplanationScorer.__init__.__kwdefaults__
    assert defaults is not None
    monkeypatch.setitem(defaults, "shift_threshold", 0.0)
    _, ok, detail = check_explanation_shift(fed.store, **parts)
    assert not ok and "not EXPLANATION_SHIFT" in detail, detail
    moved = next(s for s in parts["subs"] if f"{s.site[:10]}'s update moves" in detail)
    assert moved.reason == int(Reason.OK)
    marked = [
        dataclasses.replace(s, reason=int(Reason.EXPLANATION_SHIFT), score=0)
        if s.site == moved.site
        else s
        for s in parts["subs"]
    ]
    _, ok, detail = check_explanation_shift(fed.store, **{**parts, "subs": marked})
    assert not ok and f"the log's explanation of {moved.site[:10]} is not the recomputed" in detail


def test_a_withheld_start_model_leaves_the_check_not_checked(
    fed: Federation, tmp_path: Path
) -> None:
    """The verdicts are recomputed against the start model: withheld, the check is listed as
    failed, ``not checked``, like the other checks that need it (never left out)."""
    assert isinstance(fed.store, LocalStore)
    shutil.copytree(fed.store.root, tmp_path / "store")
    (tmp_path / "store" / "blobs" / fed.ledger.get_round(1).start_cid).unlink()
    bad = _failed(verify_round(fed.ledger, LocalStore(tmp_path / "store"), 1))
    assert bad[NAME].startswith("not checked: the start model is unavailable"), bad
    assert "start_model.hash" in bad
