"""``audit verify --validation`` replays a round valued under ``valuation.project_shift`` (each
update valued with its uniform logit shift removed) bit for bit, and fails ``components.
recomputed`` when a logged value is altered or when the aggregator valued without the option
its terms name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fedtrail.aggregator.service as service_mod
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_round
from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol import roundlog
from fedtrail.protocol.roundlog import RoundLog, ValuationSettings
from fedtrail.protocol.terms import RoundTerms
from tests.auditor.test_verify import federation, on_anvil

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = AggregatorSettings(valuation="loo", project_shift=True)


def _shifted(tmp: Path, anvil_url: str, **kwargs: Any) -> Any:
    return federation(tmp, rounds=1, settings=SETTINGS, **on_anvil(anvil_url), **kwargs)


def _bad(audit: Any) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.failed}


@pytest.mark.anvil
def test_verify_replays_a_round_valued_with_the_shift_projected(
    tmp_path: Path, anvil_url: str
) -> None:
    fed = _shifted(tmp_path, anvil_url)
    info = fed.ledger.get_round(1)
    terms = RoundTerms.from_bytes(fed.store.get(info.terms_cid, info.terms_sha256))
    assert ValuationSettings.from_json(terms.valuation).project_shift is True
    audit = verify_round(fed.ledger, fed.store, 1, validation=load_bundled().val)
    assert audit.passed, _bad(audit)
    checks = {c.name: c.detail for c in audit.checks}
    assert "largest score difference 0" in checks["scores.recomputed"]  # same machine: exact
    assert "largest value difference 0 " in checks["components.recomputed"]


def _alter_value(doc: dict[str, Any]) -> None:
    entry = doc["sites"][0]
    entry["components"]["value"] = entry["components"]["value"] * 2 + 0.01


@pytest.mark.anvil
def test_verify_fails_a_logged_value_altered(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aggregator writes one site's game value altered in its log (weights and scores
    the chain's): the replay names it."""

    def lying(log: RoundLog) -> bytes:
        doc = log.to_json()
        _alter_value(doc)
        return roundlog.to_bytes(doc)

    with monkeypatch.context() as patch:
        patch.setattr(RoundLog, "to_bytes", lying)
        fed = _shifted(tmp_path, anvil_url)
    info = fed.ledger.get_round(1)
    terms = RoundTerms.from_bytes(fed.store.get(info.terms_cid, info.terms_sha256))
    assert ValuationSettings.from_json(terms.valuation).project_shift is True
    audit = verify_round(fed.ledger, fed.store, 1, validation=load_bundled().val)
    bad = _bad(audit)
    assert "components.recomputed" in bad, bad
    assert "value" in bad["components.recomputed"] and "re-run" in bad["components.recomputed"]


@pytest.mark.anvil
def test_verify_fails_a_round_valued_without_the_option_its_terms_name(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aggregator commits ``project_shift`` in the terms but values the updates as
    submitted: the replay (with the option) gets other values, so the log's fail."""
    real = service_mod.value_round

    def unprojected(**kwargs: Any) -> Any:
        return real(**{**kwargs, "project_shift": False})

    with monkeypatch.context() as patch:
        patch.setattr(service_mod, "value_round", unprojected)
        fed = _shifted(tmp_path, anvil_url)
    info = fed.ledger.get_round(1)
    log = RoundLog.from_bytes(fed.store.get(info.log_cid, info.log_sha256))
    assert log.settings.valuation.project_shift is True  # the log repeats the terms
    audit = verify_round(fed.ledger, fed.store, 1, validation=load_bundled().val)
    bad = _bad(audit)
    assert "components.recomputed" in bad, bad
    assert "re-run" in bad["components.recomputed"]
