"""Attacks on a round, end to end on Anvil + IPFS: each must fail for the attacker.

Sites submit by hand (commit, then reveal after the commit deadline) so the test controls the
commit order and the bytes: three honest sites with distinct updates, and an attacker whose
address sorts *below* its victim's (the old duplicate rule kept the lowest address), committing
after the victim. The attacker's copy is what a Sybil or a colluding insider would hold; under
commit-then-reveal nobody else can see an update before the commit window closes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from eth_account.signers.local import LocalAccount

import fedtrail.aggregator.service as service_mod
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_all, verify_round
from fedtrail.chain import advance_time, connect, dev_account, next_block_timestamp
from fedtrail.ledger import Ledger, commitment
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.simulation.federation import Federation, SiteSetup, build_federation
from fedtrail.storage.codec import decode_model, encode_update
from fedtrail.storage.store import IpfsStore

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.usefixtures("one_torch_thread"),
]

SPEC = ModelSpec()
SAMPLES = 100


def _accounts() -> tuple[LocalAccount, list[LocalAccount]]:
    """(attacker, honest sites): the attacker has the lowest address, the victim (honest[0])
    the highest."""
    accounts = sorted((dev_account(i) for i in range(1, 6)), key=lambda a: int(a.address, 16))
    return accounts[0], [accounts[-1], accounts[1], accounts[2]]


def _federation(anvil_url: str, ipfs_api: str, tmp: Path) -> Federation:
    attacker, honest = _accounts()
    return build_federation(
        w3=connect(anvil_url),
        coordinator=dev_account(0),
        sites=[
            SiteSetup(account=a, name=f"site-{i}", max_samples=10 * SAMPLES)
            for i, a in enumerate([*honest, attacker])
        ],
        store=IpfsStore(ipfs_api),
        folder=tmp,
        validation=load_bundled().val,
        settings=AggregatorSettings(explain_method=None, valuation="loo"),
    )


def _honest_blobs(fed: Federation, r: int) -> list[bytes]:
    """Three distinct, useful updates: one short training run plus per-site noise."""
    info = fed.ledger.get_round(r)
    start, _ = decode_model(fed.store.get(info.start_cid, info.start_sha256), spec=SPEC)
    train = load_bundled().train
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:400]
    base = train_local(
        start, train.subset(idx.numpy()), spec=SPEC, config=TrainConfig(epochs=1, seed=0)
    ).delta
    gen = torch.Generator().manual_seed(7)
    return [
        encode_update(
            # noise shaped like the update: not a copy plus white noise (white_noise_z)
            {k: v * (1 + 0.05 * torch.randn(v.shape, generator=gen)) for k, v in base.items()},
            spec=SPEC,
            round=r,
        ).blob
        for _ in range(3)
    ]


def _commit(ledger: Ledger, site: LocalAccount, r: int, blob: bytes) -> None:
    sha = hashlib.sha256(blob).hexdigest()
    ledger.commit_update(site, r, commitment(site.address, r, sha, SAMPLES))


def _reveal_all(fed: Federation, r: int, sent: list[tuple[LocalAccount, bytes]]) -> None:
    deadline = fed.ledger.get_round(r).commit_deadline
    now = next_block_timestamp(fed.ledger.w3)
    if now <= deadline:
        advance_time(fed.ledger.w3, deadline - now + 1 + CLOCK_SLACK)
    for site, blob in sent:
        cid = fed.store.put(blob)
        fed.ledger.reveal_update(site, r, cid, hashlib.sha256(blob).hexdigest(), SAMPLES)


def _round_with_copy(fed: Federation, copy_of: Any) -> dict[str, Any]:
    """Honest sites commit, then the attacker commits ``copy_of(victim's blob)``; everyone
    reveals; the aggregator values and finalizes. The round's submissions by site."""
    attacker, honest = _accounts()
    r = fed.service.open_next()
    blobs = _honest_blobs(fed, r)
    for site, blob in zip(honest, blobs, strict=True):
        _commit(fed.ledger, site, r, blob)
    copy = copy_of(blobs[0])
    assert copy != blobs[0]
    _commit(fed.ledger, attacker, r, copy)
    _reveal_all(fed, r, [*zip(honest, blobs, strict=True), (attacker, copy)])
    assert fed.service.step() is None and fed.ledger.get_round(r).phase == Phase.VALUED
    outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    subs = {s.site: s for s in fed.ledger.get_submissions(r)}
    assert subs[attacker.address].commit_order > subs[honest[0].address].commit_order
    assert int(attacker.address, 16) < int(honest[0].address, 16)
    return subs


def _pad_header(blob: bytes) -> bytes:
    """The same tensors with 8 more spaces in the safetensors header: a new sha256."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = blob[8 : 8 + n] + b" " * 8
    return struct.pack("<Q", len(header)) + header + blob[8 + n :]


def _one_ulp(blob: bytes) -> bytes:
    """The same update with one float moved by one ulp, canonically encoded."""
    from fedtrail.storage.codec import decode_update

    delta, meta = decode_update(blob, spec=SPEC)
    name = next(iter(delta))
    t = delta[name].clone()
    flat = t.view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf")))
    return encode_update({**delta, name: t}, spec=SPEC, round=meta.round).blob


def test_a_header_padded_copy_is_malformed_and_the_victim_keeps_its_score(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    fed = _federation(anvil_url, ipfs_api, tmp_path)
    subs = _round_with_copy(fed, _pad_header)
    attacker, honest = _accounts()
    copier, victim = subs[attacker.address], subs[honest[0].address]
    assert (copier.score, copier.weight, copier.reason) == (0, 0, Reason.MALFORMED)
    assert victim.reason == Reason.OK and victim.score > 0 and victim.weight > 0
    audits = verify_all(fed.ledger, fed.store)
    assert all(a.passed for a in audits), [c for a in audits for c in a.checks if not c.passed]


def test_a_one_ulp_near_copy_is_a_duplicate_by_commit_order_not_address(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    fed = _federation(anvil_url, ipfs_api, tmp_path)
    subs = _round_with_copy(fed, _one_ulp)
    attacker, honest = _accounts()
    copier, victim = subs[attacker.address], subs[honest[0].address]
    assert (copier.score, copier.weight, copier.reason) == (0, 0, Reason.DUPLICATE)
    assert victim.reason == Reason.OK and victim.score > 0 and victim.weight > 0
    audit = verify_round(fed.ledger, fed.store, 1)
    assert audit.passed, [c for c in audit.checks if not c.passed]
    assert any(c.name == "duplicates" and c.passed for c in audit.checks)


def test_a_rule_switched_after_the_updates_fails_verify_naming_terms_rule(
    anvil_url: str, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aggregator opened the round under the weighted rule, then aggregated with the median
    and wrote that into its log: the terms committed at open give it away."""
    fed = _federation(anvil_url, ipfs_api, tmp_path)
    median = AggregationRule(name="median")
    real_aggregate, real_bytes = service_mod.aggregate, RoundLog.to_bytes

    def switched(rule: Any, deltas: Any, weights: Any, **kw: Any) -> Any:
        return real_aggregate(median, deltas, weights, **kw)

    def lying(log: RoundLog) -> bytes:
        settings = dataclasses.replace(log.settings, aggregation_rule=dataclasses.asdict(median))
        agg = dataclasses.replace(log.aggregation, rule="median")
        return real_bytes(dataclasses.replace(log, settings=settings, aggregation=agg))

    monkeypatch.setattr(service_mod, "aggregate", switched)
    monkeypatch.setattr(RoundLog, "to_bytes", lying)
    attacker, honest = _accounts()
    r = fed.service.open_next()
    blobs = _honest_blobs(fed, r)
    for site, blob in zip(honest, blobs, strict=True):
        _commit(fed.ledger, site, r, blob)
    fed.ledger.remove_site(dev_account(0), attacker.address)  # not taking part
    _reveal_all(fed, r, list(zip(honest, blobs, strict=True)))
    deadline = fed.ledger.get_round(r).reveal_deadline
    advance_time(fed.ledger.w3, deadline - next_block_timestamp(fed.ledger.w3) + 1 + CLOCK_SLACK)
    fed.service.step()
    assert fed.service.step() is not None
    audit = verify_round(fed.ledger, fed.store, r)
    bad = {c.name: c.detail for c in audit.checks if not c.passed}
    assert "terms.rule" in bad and "median" in bad["terms.rule"]
    assert not audit.passed
