"""The one rule binding a declared privacy spend to the DP parameters in the update's blob
(``fedtrail.storage.privacy_spend``): which verdicts score an update 0 at valuation."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fedtrail.errors import StoreError
from fedtrail.ledger import PrivacySpend
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.privacy import declared_micro
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.privacy import DpParams
from fedtrail.protocol.terms import PrivacyTerms, RoundTerms
from fedtrail.storage.privacy_history import PrivacyHistory
from fedtrail.storage.privacy_spend import BINDING, Status, check_spend, declared_by_site
from fedtrail.storage.store import LocalStore

SITE = "0x1efF47bc3a10a45D4B230B5d10E37751FE6AA718"
OTHER = "0x6813Eb9362372EEF6200f3b1dbC3f819671cBA69"
PARAMS = DpParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.2, steps=5, delta=1e-5)
TRUE = declared_micro(PARAMS, [], 0)
TERMS = PrivacyTerms(delta=1e-5)


def _history(spends: list[PrivacySpend]) -> PrivacyHistory:
    """A history over a chain holding ``spends`` and no store (the summed rule reads none)."""
    ledger: Any = SimpleNamespace(privacy_spends=lambda: list(spends))
    store: Any = None
    return PrivacyHistory(ledger, store)


def _status(
    params: DpParams | None,
    declared: int,
    privacy: PrivacyTerms | None = TERMS,
    num_samples: int = 150,
) -> str:
    verdict = check_spend(
        _history([]),
        round_id=3,
        site=SITE,
        params=params,
        declared=declared,
        privacy=privacy,
        num_samples=num_samples,
    )
    assert verdict.binding == (verdict.status in BINDING)
    return verdict.status


@pytest.mark.parametrize(
    ("params", "declared", "privacy", "n", "status"),
    [
        (PARAMS, TRUE, TERMS, 150, Status.AGREES),
        (PARAMS, TRUE - 1, TERMS, 150, Status.DIFFERS),  # understated by one micro-epsilon
        (PARAMS, TRUE + 1, TERMS, 150, Status.DIFFERS),  # exact, either way
        (PARAMS, 0, TERMS, 150, Status.DIFFERS),  # a DP update revealed plainly
        (replace(PARAMS, delta=1e-3), TRUE, TERMS, 150, Status.WRONG_DELTA),
        (PARAMS, TRUE, None, 10**6, Status.LOOSE_DELTA),  # 1e-5 > 1 / 10^6
        # a68: an expected batch below one image (0.2 * 4), or steps that are no whole epochs
        (PARAMS, TRUE, TERMS, 4, Status.IMPLAUSIBLE_SAMPLING),
        (replace(PARAMS, steps=6), TRUE, TERMS, 150, Status.IMPLAUSIBLE_SAMPLING),
        (
            replace(PARAMS, sample_rate=1e-9, steps=300),
            TRUE,
            TERMS,
            150,
            Status.IMPLAUSIBLE_SAMPLING,
        ),
        (replace(PARAMS, sample_rate=1 / 150, steps=1500), TRUE, TERMS, 150, Status.DIFFERS),
        (None, 5, TERMS, 150, Status.NO_PARAMETERS),
        (None, 0, PrivacyTerms(delta=1e-5, required=True), 150, Status.DP_REQUIRED),
        (None, 0, TERMS, 150, Status.NOT_PRIVATE),
        (None, 0, None, 150, Status.NOT_PRIVATE),
    ],
)
def test_each_verdict(
    params: DpParams | None, declared: int, privacy: PrivacyTerms | None, n: int, status: str
) -> None:
    assert _status(params, declared, privacy, n) == status


@pytest.mark.parametrize("rate", [5e-324, 1e-300])
def test_a_subnormal_or_tiny_sample_rate_is_implausible_not_a_crash(rate: float) -> None:
    """1 / 5e-324 is infinite and ``round`` of it raises: the aggregator values every update
    through this check, so one site's blob must not stop the round; the reason stays short."""
    params = replace(PARAMS, sample_rate=rate, steps=300)
    verdict = check_spend(
        _history([]), round_id=3, site=SITE, params=params, declared=TRUE, privacy=TERMS
    )
    assert verdict.status == Status.IMPLAUSIBLE_SAMPLING
    assert "less than one epoch" in verdict.detail and len(verdict.detail) < 120


def test_only_the_passing_statuses_do_not_bind() -> None:
    assert BINDING.isdisjoint(Status.PASSING) and Status.UNREADABLE not in BINDING
    assert {
        Status.DIFFERS,
        Status.NO_PARAMETERS,
        Status.WRONG_DELTA,
        Status.LOOSE_DELTA,
        Status.IMPLAUSIBLE_SAMPLING,
        Status.DP_REQUIRED,
        Status.UNBACKED_HISTORY,
        Status.UNAVAILABLE_HISTORY,
    } == BINDING


def test_the_summed_rule_is_this_updates_own_epsilon_after_earlier_spends() -> None:
    """Earlier spends on chain do not change a summed update's spend (the contract adds it)."""
    earlier = [PrivacySpend(round=1, site=SITE, epsilon_micro=7, total_micro=7)]
    verdict = check_spend(
        _history(earlier), round_id=3, site=SITE, params=PARAMS, declared=TRUE, privacy=TERMS
    )
    assert (verdict.status, verdict.recomputed, verdict.reason) == (
        Status.AGREES,
        TRUE,
        "privacy spend agrees",
    )


def test_a_composed_spend_whose_history_cannot_be_read_does_not_bind() -> None:
    """An earlier composed blob missing from this reader's store is UNREADABLE, not a verdict
    every reader shares: it is reported (``audit privacy``), not scored 0."""
    earlier = [PrivacySpend(round=1, site=SITE, epsilon_micro=7, total_micro=7)]
    ledger: Any = SimpleNamespace(
        privacy_spends=lambda: list(earlier),
        get_submission=lambda round_id, site: None,
    )
    store: Any = None
    history = PrivacyHistory(ledger, store)
    verdict = check_spend(
        history,
        round_id=3,
        site=SITE,
        params=replace(PARAMS, accounting="composed"),
        declared=1,
        privacy=TERMS,
    )
    assert verdict.status == Status.UNREADABLE and not verdict.binding


def test_a_composed_spend_over_a_spend_declared_for_a_plain_update_binds() -> None:
    """A site that once declared a spend for a plain update (scored 0 in that round) cannot
    make every later composed declaration unchecked: the history it broke is read from its
    own blob, so the verdict binds (``scripts/attacks/a11_dp_unreadable_history.py``)."""
    earlier = [PrivacySpend(round=1, site=SITE, epsilon_micro=1, total_micro=1)]
    history = _history(earlier)
    history.remember(1, SITE, None)  # round 1's blob was read: no DP parameters
    verdict = check_spend(
        history,
        round_id=2,
        site=SITE,
        params=replace(PARAMS, accounting="composed"),
        declared=1,
        privacy=TERMS,
        num_samples=150,
    )
    assert verdict.status == Status.UNBACKED_HISTORY and verdict.binding
    assert "round 1's update" in verdict.reason


def _terms_blob() -> bytes:
    spec = ModelSpec()
    return RoundTerms(
        round=1,
        aggregation_rule={"name": "weighted"},
        valuation={"method": "loo", "metric": "balanced_loss"},
        model_spec=spec.to_json(),
        spec_hash=spec.spec_hash(),
        seed=0,
        validation_sha256="0" * 64,
        validation_images=1,
        commit_seconds=600,
        reveal_seconds=600,
    ).to_bytes()


def test_a_composed_spend_over_a_spend_declared_for_an_undecodable_blob_binds(
    tmp_path: Path,
) -> None:
    """The same with garbage bytes revealed for the earlier spend: the blob is in the store
    and hash-checked, so every reader fails to decode it alike; only a missing blob (a
    store's, not the site's, state) is UNREADABLE."""
    store = LocalStore(tmp_path / "store")
    garbage = b"not an update"
    cid = store.put(garbage)
    terms = _terms_blob()
    terms_cid = store.put(terms)
    ledger: Any = SimpleNamespace(
        privacy_spends=lambda: [PrivacySpend(round=1, site=SITE, epsilon_micro=1, total_micro=1)],
        get_submission=lambda round_id, site: SimpleNamespace(
            revealed=True, cid=cid, sha256=hashlib.sha256(garbage).hexdigest()
        ),
        get_round=lambda round_id: SimpleNamespace(
            terms_cid=terms_cid, terms_sha256=hashlib.sha256(terms).hexdigest()
        ),
    )
    verdict = check_spend(
        PrivacyHistory(ledger, store),
        round_id=2,
        site=SITE,
        params=replace(PARAMS, accounting="composed"),
        declared=1,
        privacy=TERMS,
        num_samples=150,
    )
    assert verdict.status == Status.UNBACKED_HISTORY and verdict.binding
    assert "cannot be read" in verdict.detail


COMPOSED = replace(PARAMS, accounting="composed")
ROUND1 = declared_micro(COMPOSED, [], 0)  # round 1's composed spend: its own epsilon


def _earlier_round(
    tmp_path: Path, *, reason: Reason, weight: int, published: bool, declared: int = 1
) -> PrivacyHistory:
    """A history whose round 1 holds ``SITE``'s DP update (``COMPOSED``, declaring
    ``declared``), scored ``reason`` with ``weight`` on chain, its blob in the store only when
    ``published`` (otherwise revealed and never published, attack a11 ``withhold``)."""
    from fedtrail.storage.codec import encode_update

    store = LocalStore(tmp_path / "store")
    zero = {k: v * 0 for k, v in _model_delta().items()}
    blob = encode_update(zero, spec=ModelSpec(), round=1, dp=COMPOSED).blob
    cid = store.put(blob)
    if not published:
        (store.root / "blobs" / cid).unlink()
    terms = _terms_blob()
    terms_cid = store.put(terms)
    ledger: Any = SimpleNamespace(
        privacy_spends=lambda: [
            PrivacySpend(round=1, site=SITE, epsilon_micro=declared, total_micro=declared)
        ],
        get_submission=lambda round_id, site: SimpleNamespace(
            revealed=True,
            cid=cid,
            sha256=hashlib.sha256(blob).hexdigest(),
            reason=int(reason),
            weight=weight,
        ),
        get_round=lambda round_id: SimpleNamespace(
            terms_cid=terms_cid, terms_sha256=hashlib.sha256(terms).hexdigest()
        ),
    )
    return PrivacyHistory(ledger, store)


def _model_delta() -> dict[str, Any]:
    from fedtrail.ml.models import federated_state, initial_model

    return federated_state(initial_model(ModelSpec(), 0))


def _round2(history: PrivacyHistory, declared: int) -> Any:
    return check_spend(
        history,
        round_id=2,
        site=SITE,
        params=COMPOSED,
        declared=declared,
        privacy=TERMS,
        num_samples=150,
    )


@pytest.mark.parametrize(
    "reason", [Reason.MALFORMED, Reason.TAMPERED, Reason.WITHHELD, Reason.PEER_REJECTED]
)
def test_a_composed_spend_over_an_unpublished_update_the_chain_scored_unusable_binds(
    tmp_path: Path, reason: Reason
) -> None:
    """Attack a11 ``withhold``: round 1's DP update declared 1 micro-epsilon and was never
    published; its round scored it 0 as one its scorers could not use (the aggregator's
    MALFORMED ``not retrievable`` or TAMPERED; a peer round's PEER_REJECTED median or WITHHELD
    drop). A reader whose store lacks it finds that verdict on chain, as every reader does:
    EARLIER SPEND UNAVAILABLE binds, whatever the later update declares."""
    for declared in (1, 10**9):
        verdict = _round2(
            _earlier_round(tmp_path / str(declared), reason=reason, weight=0, published=False),
            declared,
        )
        assert verdict.status == Status.UNAVAILABLE_HISTORY and verdict.binding
        assert f"scored 0 as {reason.name} on chain" in verdict.detail
        assert verdict.reason.startswith("privacy spend EARLIER SPEND UNAVAILABLE: round 1's")


@pytest.mark.parametrize(
    ("reason", "weight"),
    [
        (Reason.OK, 10**17),  # weighted: the aggregator pinned it; this store lost it
        (Reason.OK, 0),  # a round cancelled before it was valued: no verdict on chain
        (Reason.LOW_GAIN, 0),  # read and scored by its worth: the aggregator pinned it
    ],
)
def test_a_missing_earlier_blob_without_an_unusable_verdict_stays_unreadable(
    tmp_path: Path, reason: Reason, weight: int
) -> None:
    """Without a verdict on chain that the round's scorers could not use the update, a blob
    missing here is this store's state, not the site's: UNREADABLE, not binding."""
    verdict = _round2(_earlier_round(tmp_path, reason=reason, weight=weight, published=False), 1)
    assert verdict.status == Status.UNREADABLE and not verdict.binding


def test_a_store_that_fails_otherwise_is_no_verdict(tmp_path: Path) -> None:
    """Only the answers the aggregator's reading of a round's own updates turns into a verdict
    (not found, hash mismatch, not a CID or a file, too large) meet the chain's: a store that
    cannot be reached is this reader's failure, UNREADABLE (and the caller may retry)."""
    history = _earlier_round(tmp_path, reason=Reason.MALFORMED, weight=0, published=False)
    store: Any = history._store

    def unreachable(cid: str, sha256: str, **kw: Any) -> bytes:
        raise StoreError(f"cannot reach the store for {cid}")

    history._specs[1] = ModelSpec()  # the terms were read before the store went away
    store.get = unreachable
    verdict = _round2(history, 1)
    assert verdict.status == Status.UNREADABLE and "cannot reach the store" in verdict.detail


def test_a_reader_that_holds_a_blob_scored_unavailable_composes_over_it(tmp_path: Path) -> None:
    """The chain's verdict binds only where the blob cannot be read: a reader that holds it
    (published after valuation; or an aggregator that called a readable update unavailable)
    recomputes the composed spend from it, so an honest declaration agrees there and a
    dishonest aggregator's later zeroing is caught by ``privacy.scored``."""
    history = _earlier_round(
        tmp_path, reason=Reason.MALFORMED, weight=0, published=True, declared=ROUND1
    )
    right = declared_micro(COMPOSED, [COMPOSED], ROUND1)
    verdict = _round2(history, right)
    assert (verdict.status, verdict.recomputed) == (Status.AGREES, right)
    assert _round2(history, 1).status == Status.DIFFERS


def test_declared_spends_are_summed_per_site_by_checksummed_address() -> None:
    spends = [
        PrivacySpend(round=2, site=SITE.lower(), epsilon_micro=3, total_micro=3),
        PrivacySpend(round=2, site=OTHER, epsilon_micro=4, total_micro=4),
        PrivacySpend(round=2, site=SITE, epsilon_micro=5, total_micro=8),
    ]
    assert declared_by_site(spends) == {SITE: 8, OTHER: 4}
