"""The aggregator checks that a DP update carries the noise its parameters add (attack a24).

Four sites submit by hand on the embedded chain with a ``LocalStore``: two plain updates, one
DP update carrying Gaussian noise at the ratio its parameters declare, and one plain update
that declares the same parameters and the spend they give (the liar). The liar is scored 0 as
MALFORMED with the failed check in the log; ``audit verify`` replays that verdict
(``privacy.noise``) and fails an aggregator that pays the liar, or zeroes the honest DP site.
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
from fedtrail.ml.dp_noise import allowed_signal, noise_breach
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.privacy import declared_micro
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.privacy import DpParams
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.federation import Federation, SiteSetup, build_federation
from fedtrail.storage.codec import decode_model, encode_update
from fedtrail.storage.store import ContentStore, LocalStore
from fedtrail.valuation.candidates import checks_noise, noise_rule, revealed_candidates

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ModelSpec()
SAMPLES = 150
PARAMS = DpParams(  # what a node with [privacy] noise_multiplier = 2 plans for 150 images
    noise_multiplier=2.0, max_grad_norm=1.0, sample_rate=128 / SAMPLES, steps=1, delta=1e-5
)
SPEND = declared_micro(PARAMS, [], 0)
NAMES = ("plain-0", "plain-1", "dp-honest", "dp-liar")

Rule = Callable[[dict[str, torch.Tensor], DpParams | None, int, str], str | None]


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
    """One local epoch each on the site's own shard; the honest DP site adds i.i.d. Gaussian
    noise at the declared ratio (its signal at most 0.8 of what the check allows), the liar
    none."""
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
        if name == "dp-honest":
            norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in delta.values()))
            s = norm / (0.8 * allowed_signal(PARAMS, SAMPLES))
            gen = torch.Generator().manual_seed(r)
            delta = {k: v + s * torch.randn(v.shape, generator=gen) for k, v in delta.items()}
        dp = PARAMS if name.startswith("dp") else None
        out[name] = encode_update(delta, spec=SPEC, round=r, dp=dp).blob
    return out


def _round(fed: Federation, sites: dict[str, LocalAccount], rule: Rule | None) -> int:
    """One round; the aggregator reads the updates with ``rule`` in place of the noise check
    when given (a dishonest aggregator)."""
    r = fed.service.open_next()
    blobs = _blobs(fed, r)
    for name, blob in blobs.items():
        sha = hashlib.sha256(blob).hexdigest()
        fed.ledger.commit_update(sites[name], r, commitment(sites[name].address, r, sha, SAMPLES))
    deadline = fed.ledger.get_round(r).commit_deadline
    advance_time(fed.ledger.w3, deadline - next_block_timestamp(fed.ledger.w3) + 1 + CLOCK_SLACK)
    for name, blob in blobs.items():
        fed.ledger.reveal_update(
            sites[name],
            r,
            fed.store.put(blob),
            hashlib.sha256(blob).hexdigest(),
            SAMPLES,
            epsilon_micro=SPEND if name.startswith("dp") else None,
        )
    with pytest.MonkeyPatch.context() as mp:
        if rule is not None:
            mp.setattr("fedtrail.valuation.candidates.noise_breach", rule)
        assert fed.service.step() is None and fed.ledger.get_round(r).phase == Phase.VALUED
        outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    return r


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Ledger, ContentStore, dict[str, str]]]:
    """Round 1 as shipped; round 2 an aggregator that pays every update (no noise check);
    round 3 one that calls the honest DP update noiseless."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fed, sites = _federation(tmp_path_factory.mktemp("dp-noise"))

        def pays(*_: Any) -> str | None:
            return None

        def zeroes_honest(
            delta: dict[str, torch.Tensor],
            params: DpParams | None,
            n: int,
            method: str,
            rule: int = 1,
        ) -> str | None:
            # every DP update that carries its noise (the honest one) called noiseless
            why = noise_breach(delta, params, n, method, rule)
            return "privacy noise MISSING: invented" if why is None and params else why

        _round(fed, sites, None)
        _round(fed, sites, pays)
        _round(fed, sites, zeroes_honest)
        yield fed.ledger, fed.store, {n: a.address for n, a in sites.items()}
    finally:
        torch.set_num_threads(before)


def _subs(ledger: Ledger, r: int, names: dict[str, str]) -> dict[str, Submission]:
    by_site = {s.site: s for s in ledger.get_submissions(r)}
    return {n: by_site[a] for n, a in names.items()}


def _failed(audit: RoundAudit) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.applicable and not c.passed}


def _explanation(store: ContentStore, ledger: Ledger, r: int, site: str) -> str:
    info = ledger.get_round(r)
    log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256))
    return next(e.explanation for e in log.sites if e.site == site)


def test_the_noiseless_dp_update_is_malformed_and_the_round_verifies(federation: Any) -> None:
    ledger, store, names = federation
    subs = _subs(ledger, 1, names)
    assert subs["dp-liar"].reason == Reason.MALFORMED and subs["dp-liar"].weight == 0
    assert subs["dp-honest"].reason == Reason.OK and subs["dp-honest"].weight > 0
    assert all(subs[n].weight > 0 for n in ("plain-0", "plain-1"))
    assert "privacy noise MISSING" in _explanation(store, ledger, 1, names["dp-liar"])
    audit = verify_round(ledger, store, 1)
    assert _failed(audit) == {}
    noise = next(c for c in audit.checks if c.name == "privacy.noise")
    assert noise.passed and noise.detail.startswith("1 DP update(s)")


def test_an_aggregator_that_pays_the_noiseless_update_fails_privacy_noise(
    federation: Any,
) -> None:
    ledger, store, names = federation
    assert _subs(ledger, 2, names)["dp-liar"].weight > 0
    failed = _failed(verify_round(ledger, store, 2))
    assert "privacy.noise" in failed and names["dp-liar"][:10] in failed["privacy.noise"]
    assert "privacy.scored" not in failed  # its declared spend is the one its parameters give


def test_an_aggregator_that_zeroes_the_honest_dp_update_fails_privacy_noise(
    federation: Any,
) -> None:
    ledger, store, names = federation
    subs = _subs(ledger, 3, names)
    assert subs["dp-honest"].reason == Reason.MALFORMED and subs["dp-honest"].weight == 0
    failed = _failed(verify_round(ledger, store, 3))
    assert "carries the noise" in failed["privacy.noise"], failed
    assert names["dp-honest"][:10] in failed["privacy.noise"]


def test_every_validator_reads_a_noiseless_dp_update_as_malformed_with_its_delta(
    federation: Any,
) -> None:
    """Peer rounds: every validator reads the round through the same ``revealed_candidates``,
    so it scores the noiseless update 0 too; the delta is kept, as for a contradicted spend."""
    ledger, store, names = federation
    info = ledger.get_round(1)
    terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
    assert checks_noise(terms)
    read = {c.site: c for _, c in revealed_candidates(ledger, store, 1, terms=terms, spec=SPEC)}
    liar = read[names["dp-liar"]]
    assert liar.status is Reason.MALFORMED and liar.delta is not None and not liar.usable
    assert liar.detail.startswith("privacy noise MISSING")
    assert all(read[names[n]].usable for n in ("plain-0", "plain-1", "dp-honest"))
    older = {k: v for k, v in terms.valuation["combiner"].items() if k != "dp_noise_check"}
    before = replace(terms, valuation={**terms.valuation, "combiner": older})
    assert not checks_noise(before)  # terms written before the rule read as off
    again = {c.site: c for _, c in revealed_candidates(ledger, store, 1, terms=before, spec=SPEC)}
    assert again[names["dp-liar"]].usable


def test_terms_keep_the_noise_rule_they_were_written_with(federation: Any) -> None:
    """Terms written since session 52 carry ``dp_noise_check`` 2 (the credited count, a97);
    terms with 1 (before it) replay at the claimed count, and the noiseless update lacks its
    noise under both."""
    ledger, store, names = federation
    info = ledger.get_round(1)
    terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
    assert terms.valuation["combiner"]["dp_noise_check"] == 2 and noise_rule(terms) == 2
    combiner = {**terms.valuation["combiner"], "dp_noise_check": 1}
    older = replace(terms, valuation={**terms.valuation, "combiner": combiner})
    assert noise_rule(older) == 1
    for written in (terms, older):
        read = {
            c.site: c for _, c in revealed_candidates(ledger, store, 1, terms=written, spec=SPEC)
        }
        assert read[names["dp-liar"]].status is Reason.MALFORMED
        assert read[names["dp-honest"]].usable
