"""The aggregator binds a DP site's declared privacy spend before valuation (attack a5).

Four sites submit by hand on the embedded chain with a ``LocalStore``: two plain updates, one
DP update that declares the spend its blob's DP parameters give, and one DP update whose site
may declare 1 micro-epsilon instead. An understated spend is scored 0 as MALFORMED with the
failed check in the log; ``audit verify`` replays that verdict and fails an aggregator that pays
the understated update, or zeroes the honest DP one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from eth_account.signers.local import LocalAccount

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import RoundAudit, verify_round
from fedtrail.chain import advance_time, connect, funded_accounts, next_block_timestamp
from fedtrail.ledger import Ledger, Submission, commitment
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.dp_noise import allowed_signal
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.privacy import declared_micro
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.privacy import DpParams
from fedtrail.protocol.roundlog import RoundLog, ValuationSettings
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.federation import Federation, SiteSetup, build_federation
from fedtrail.storage.codec import decode_model, encode_update
from fedtrail.storage.store import ContentStore, LocalStore
from fedtrail.valuation import default_combiner
from fedtrail.valuation.candidates import SpendChecker, checks_spend, revealed_candidates
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.limits import ThresholdLimits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ModelSpec()
SAMPLES = 150
PARAMS = DpParams(
    noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=32 / SAMPLES, steps=5, delta=1e-5
)
TRUE_SPEND = declared_micro(PARAMS, [], 0)  # the summed rule: this update's own epsilon
NAMES = ("plain-0", "plain-1", "dp-honest", "dp-liar")

Breach = Callable[[SpendChecker, Submission, DpParams | None], str | None]


def _federation(tmp: Path) -> tuple[Federation, dict[str, LocalAccount]]:
    w3 = connect("embedded")
    accounts = funded_accounts(w3)
    sites = dict(zip(NAMES, accounts[2:6], strict=True))
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        aggregator=accounts[1],
        sites=[SiteSetup(account=a, name=n, max_samples=SAMPLES) for n, a in sites.items()],
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=load_bundled().val,
        settings=AggregatorSettings(
            explain_method=None, round_seconds=60, reveal_seconds=30, dp_delta=1e-5
        ),
    )
    return fed, sites


def _blobs(fed: Federation, r: int) -> dict[str, bytes]:
    """Four useful updates: one local epoch each on the site's own shard of the bundled
    training split, as the attack harness trains them; the DP sites' blobs carry ``PARAMS``."""
    info = fed.ledger.get_round(r)
    start, _ = decode_model(fed.store.get(info.start_cid, info.start_sha256), spec=SPEC)
    train = load_bundled().train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).numpy()
    out = {}
    for j, name in enumerate(NAMES):
        shard = train.subset(order[j * SAMPLES : (j + 1) * SAMPLES])
        delta = train_local(
            start, shard, spec=SPEC, config=TrainConfig(epochs=1, seed=1000 * r + j)
        ).delta
        dp = PARAMS if name.startswith("dp") else None
        if dp is not None:
            delta = _with_noise(delta, seed=1000 * r + j)
        out[name] = encode_update(delta, spec=SPEC, round=r, dp=dp).blob
    return out


def _with_noise(delta: dict[str, torch.Tensor], *, seed: int) -> dict[str, torch.Tensor]:
    """``delta`` with i.i.d. Gaussian noise at the ratio ``PARAMS`` declare (its norm at most
    0.8 of the signal the noise check allows): the noise check passes and the spend rule alone
    decides (tests/aggregator/test_dp_noise.py covers the noise rule)."""
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in delta.values()))
    s = norm / (0.8 * allowed_signal(PARAMS, SAMPLES))
    gen = torch.Generator().manual_seed(seed)
    return {k: v + s * torch.randn(v.shape, generator=gen) for k, v in delta.items()}


def _round(
    fed: Federation, sites: dict[str, LocalAccount], liar_declares: int, breach: Breach | None
) -> int:
    """One round: every site commits, then reveals (the DP sites with a declared spend: the
    honest one ``TRUE_SPEND``, the liar ``liar_declares``); the aggregator values and finalizes,
    with ``breach`` in place of its spend rule when given (a dishonest aggregator)."""
    r = fed.service.open_next()
    blobs = _blobs(fed, r)
    for name, blob in blobs.items():
        sha = hashlib.sha256(blob).hexdigest()
        fed.ledger.commit_update(sites[name], r, commitment(sites[name].address, r, sha, SAMPLES))
    deadline = fed.ledger.get_round(r).commit_deadline
    advance_time(fed.ledger.w3, deadline - next_block_timestamp(fed.ledger.w3) + 1 + CLOCK_SLACK)
    declared = {"dp-honest": TRUE_SPEND, "dp-liar": liar_declares}
    for name, blob in blobs.items():
        fed.ledger.reveal_update(
            sites[name],
            r,
            fed.store.put(blob),
            hashlib.sha256(blob).hexdigest(),
            SAMPLES,
            epsilon_micro=declared.get(name),
        )
    with pytest.MonkeyPatch.context() as mp:
        if breach is not None:
            mp.setattr(SpendChecker, "breach", breach)
        assert fed.service.step() is None and fed.ledger.get_round(r).phase == Phase.VALUED
        outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    return r


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Ledger, ContentStore, dict[str, str]]]:
    """Round 1 honest; round 2 the liar declares 1 micro-epsilon (the aggregator's rule as
    shipped); round 3 the same, with an aggregator that pays it; round 4 every declaration is
    right, with an aggregator that zeroes the honest DP update; round 5 the liar again, under
    terms without the rule (``dp_spend_check`` 0: every round valued before it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fed, sites = _federation(tmp_path_factory.mktemp("dp-spend"))
        honest_dp = sites["dp-honest"].address
        original = SpendChecker.breach

        def pays(self: SpendChecker, sub: Submission, params: DpParams | None) -> str | None:
            return None

        def zeroes_honest(
            self: SpendChecker, sub: Submission, params: DpParams | None
        ) -> str | None:
            if sub.site == honest_dp:
                return "privacy spend DIFFERS: invented"
            return original(self, sub, params)

        _round(fed, sites, TRUE_SPEND, None)
        _round(fed, sites, 1, None)
        _round(fed, sites, 1, pays)
        _round(fed, sites, TRUE_SPEND, zeroes_honest)
        unbound = replace(default_combiner(True), dp_spend_check=0)
        fed.service.settings = replace(fed.service.settings, combiner=unbound)
        # the aggregator that turns the check off skips its own pre-flight (a payment change)
        fed.service._payment_changes = lambda terms: []  # type: ignore[method-assign]
        _round(fed, sites, 1, None)
        yield fed.ledger, fed.store, {n: a.address for n, a in sites.items()}
    finally:
        torch.set_num_threads(before)


def _subs(ledger: Ledger, r: int, names: dict[str, str]) -> dict[str, Submission]:
    by_site = {s.site: s for s in ledger.get_submissions(r)}
    return {n: by_site[a] for n, a in names.items()}


def _failed(audit: RoundAudit) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.applicable and not c.passed}


def test_an_honest_dp_round_is_weighted_and_passes_every_check(federation: Any) -> None:
    ledger, store, names = federation
    subs = _subs(ledger, 1, names)
    assert all(s.reason == Reason.OK and s.weight > 0 for s in subs.values())
    audit = verify_round(ledger, store, 1)
    assert _failed(audit) == {}
    scored = next(c for c in audit.checks if c.name == "privacy.scored")
    assert scored.passed and scored.detail.startswith("0 update(s)")


def test_the_aggregator_zeroes_an_understated_spend_with_a_public_reason(federation: Any) -> None:
    ledger, store, names = federation
    subs = _subs(ledger, 2, names)
    liar = subs["dp-liar"]
    assert (liar.score, liar.weight, liar.reason) == (0, 0, Reason.MALFORMED)
    assert all(subs[n].weight > 0 for n in ("plain-0", "plain-1", "dp-honest"))
    info = ledger.get_round(2)
    entry = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256)).site(liar.site)
    assert entry is not None and entry.status == "malformed"
    assert entry.explanation == (
        f"malformed: privacy spend DIFFERS: its DP parameters spend {TRUE_SPEND} micro-epsilon; "
        "declared 1"
    )
    # the aggregator's verdict is replayed: only the site's own declaration fails the audit
    failed = _failed(verify_round(ledger, store, 2))
    assert set(failed) == {"privacy.spend"}, failed


def test_verify_fails_an_aggregator_that_pays_an_understated_spend(federation: Any) -> None:
    ledger, store, names = federation
    liar = _subs(ledger, 3, names)["dp-liar"]
    assert liar.weight > 0 and liar.reason == Reason.OK  # the dishonest aggregator paid it
    failed = _failed(verify_round(ledger, store, 3))
    assert "privacy.scored" in failed and "log.status" in failed
    assert f"{liar.site[:10]} is weighted {liar.weight} with reason OK" in failed["privacy.scored"]
    assert "privacy spend DIFFERS" in failed["privacy.scored"]


def test_verify_fails_an_aggregator_that_zeroes_an_honest_dp_update(federation: Any) -> None:
    ledger, store, names = federation
    subs = _subs(ledger, 4, names)
    honest = subs["dp-honest"]
    assert (honest.weight, honest.reason) == (0, Reason.MALFORMED)
    assert subs["dp-liar"].weight > 0  # its declaration is right this round
    failed = _failed(verify_round(ledger, store, 4))
    assert "privacy.scored" in failed and "privacy.spend" not in failed
    assert f"{honest.site[:10]} is MALFORMED on chain" in failed["privacy.scored"]


def test_a_round_under_terms_before_the_rule_pays_the_understated_spend_and_replays(
    federation: Any,
) -> None:
    """Round 5's terms carry ``dp_spend_check`` 0, as every round valued before the rule
    (terms that omit it read the same): the understated spend is paid, and ``audit verify``
    replays the round as it did then: only the site's declaration (privacy.spend) fails, once
    the auditor accepts those thresholds (``--accept``: sites refuse them by default), and the
    switch from round 1's thresholds (terms.task_fixed)."""
    ledger, store, names = federation
    info = ledger.get_round(5)
    terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
    assert not checks_spend(terms)
    liar = _subs(ledger, 5, names)["dp-liar"]
    assert liar.weight > 0 and liar.reason == Reason.OK
    combiner = combiner_from(ValuationSettings.from_json(terms.valuation))
    accept = ThresholdLimits.accepting(combiner)
    failed = _failed(verify_round(ledger, store, 5, accept=accept))
    # this federation switched thresholds at round 5 (one started before the rule had them
    # from round 1): the payment settings round 1 fixed changed, which terms.task_fixed names
    assert set(failed) == {"privacy.spend", "terms.task_fixed"}, failed
    assert '"dp_spend_check":0' in failed["terms.task_fixed"], failed
    assert "terms.limits" in _failed(verify_round(ledger, store, 5))  # the default [accept]
    # a recorded set of thresholds without the key, or none at all, reads the same
    recorded = ValuationSettings.from_json(_terms(ledger, store, 2).valuation).combiner
    assert recorded is not None and recorded["dp_spend_check"] == 1
    older = {k: v for k, v in recorded.items() if k != "dp_spend_check"}
    assert not checks_spend(replace(terms, valuation={**terms.valuation, "combiner": older}))
    bare = {k: v for k, v in terms.valuation.items() if k != "combiner"}
    assert not checks_spend(replace(terms, valuation=bare))


def _terms(ledger: Ledger, store: ContentStore, r: int) -> RoundTerms:
    info = ledger.get_round(r)
    return RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))


def test_every_validator_reads_an_understated_spend_as_malformed_with_its_delta(
    federation: Any,
) -> None:
    """Peer rounds: the aggregator cannot zero an update, but every validator reads the round
    through the same ``revealed_candidates`` and so scores an understated spend 0; the delta is
    kept, so an update the validators' median weights anyway is still aggregated as the chain
    says (the aggregator's finalize and verify's replay need it)."""
    ledger, store, names = federation
    terms = _terms(ledger, store, 2)
    read = {c.site: c for _, c in revealed_candidates(ledger, store, 2, terms=terms, spec=SPEC)}
    liar = read[names["dp-liar"]]
    assert liar.status is Reason.MALFORMED and liar.delta is not None and not liar.usable
    assert liar.detail.startswith("privacy spend DIFFERS")
    others = [read[names[n]] for n in ("plain-0", "plain-1", "dp-honest")]
    assert all(c.usable for c in others)
