"""Review of h-300's left-out pass (session 62, h-307): cases where ``audit verify`` and the
independent reader might settle an unreadable update at weight 0 differently."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_all
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.peers import address_key
from tests.aggregator.peer_setup import pass_deadline
from tests.aggregator.test_peer_rounds import _quiet_screen_federation, _reader_results


def _copy_round(fed: Any) -> tuple[int, Any, list[Any]]:
    """The rounding edge (big: the largest count, scored full; small: 1 sample scored 1;
    third: 200 samples scored half), except that small reveals big's sha256 (an exact copy by
    the duplicate rule, which compares revealed hashes) under a CID whose bytes are another
    blob: nobody can read small's update (the store's bytes do not hash to it)."""
    import hashlib
    import secrets

    import torch

    from fedtrail.chain import dev_account
    from fedtrail.ledger import commitment
    from fedtrail.ledger.records import score_commitment
    from fedtrail.protocol.codes import MAX_SITE_SAMPLES
    from fedtrail.protocol.weights import SCORE_SCALE
    from fedtrail.storage.codec import encode_update

    ledger, service, store = fed.ledger, fed.service, fed.store
    accounts = sorted((dev_account(2 + i) for i in range(3)), key=lambda a: address_key(a.address))
    big, small, third = accounts
    ledger.set_max_samples(fed.coordinator, big.address, MAX_SITE_SAMPLES)
    r = service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    gen = torch.Generator().manual_seed(23)

    def blob_of() -> bytes:
        delta = {
            name: (0.01 * torch.randn(shape, generator=gen)).to(getattr(torch, dtype))
            for name, (shape, dtype) in service.spec.tensor_layout().items()
        }
        return encode_update(delta, spec=service.spec, round=r).blob

    big_blob, other_blob, third_blob = blob_of(), blob_of(), blob_of()
    big_sha = hashlib.sha256(big_blob).hexdigest()
    reveals = [
        (big, store.put(big_blob), big_sha, MAX_SITE_SAMPLES),
        (small, store.put(other_blob), big_sha, 1),  # big's hash, another blob's CID
        (third, store.put(third_blob), hashlib.sha256(third_blob).hexdigest(), 200),
    ]
    for site, _, sha, n in reveals:
        ledger.commit_update(site, r, commitment(site.address, r, sha, n))
    pass_deadline(ledger, info.commit_deadline)
    for site, cid, sha, n in reveals:
        ledger.reveal_update(site, r, cid, sha, n)
    pass_deadline(ledger, info.reveal_deadline)
    want = {big.address: SCORE_SCALE, small.address: 1, third.address: SCORE_SCALE // 2}
    sites = [site.address for site in accounts]
    salts = {v.address: secrets.token_bytes(32) for v in accounts}
    vectors = {v.address: [0 if s == v.address else want[s] for s in sites] for v in accounts}
    for v in accounts:
        ledger.commit_scores(
            v, r, score_commitment(v.address, r, vectors[v.address], salts[v.address])
        )
    pass_deadline(ledger, peer.score_commit_deadline)
    for v in accounts:
        ledger.reveal_scores(v, r, vectors[v.address], salts[v.address])
    return r, peer, accounts


def test_an_unreadable_exact_copy_at_weight_0_is_settled_alike_by_verify_and_the_reader(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """h-307, attack (3) on h-300's pass: the small update (reason OK, weight 0 from rounding,
    a positive median) reveals big's sha256, so the duplicate rule names it a copy of big, and
    nobody can read it. The honest aggregator can neither drop it (``NotWeighted``) nor read
    it, and finalizes; ``audit verify`` passes the round (its screen leaves the unread input at
    weight 0 out, copy or not), and the reader must too: before h-307 it took copies out of its
    left-out set (the screen takes no copy) and failed the update's ``update.<site>`` alone."""
    fed = _quiet_screen_federation(tmp_path, anvil_url, ipfs_api)
    r, peer, (_, small, _) = _copy_round(fed)
    with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
        outcome = fed.service.step()
        for _ in range(3):
            if outcome is not None and outcome.phase != Phase.VALUED:
                break
            pass_deadline(fed.ledger, peer.score_reveal_deadline)
            outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED, (outcome, caplog.text)
    after = {s.site: s for s in fed.ledger.get_submissions(r)}
    assert after[small.address].weight == 0 and after[small.address].score > 0
    assert after[small.address].reason == Reason.OK
    (audit,) = [a for a in verify_all(fed.ledger, fed.store) if a.round == r]  # type: ignore[arg-type]
    failed = [(c.name, c.detail[:200]) for c in audit.checks if c.failed]
    assert not failed, failed
    verify_says = next(c for c in audit.checks if c.name == f"update.{small.address[:10]}")
    assert "do not match" in verify_says.detail, verify_says.detail  # nobody reads it
    results = _reader_results(fed, anvil_url, ipfs_api)
    (row,) = [
        x
        for (q, name), x in results.items()
        if q == r and name.startswith("update.") and "sha256 MISMATCH" in x["detail"]
    ]
    assert row["result"] == "PASS", row["detail"]
    fails = [(k, x["detail"][:200]) for k, x in results.items() if x["result"] == "FAIL"]
    assert not fails, fails


def _near_copy_round(fed: Any, *, sparse_first: bool = False) -> tuple[int, Any, list[Any], str]:
    """The rounding edge (big: the largest count, scored full; small: 1 sample scored 1, weight
    0; third: 200 samples scored half), where third sends a near copy of small's update (its
    entries times 1 + 1e-6): small committed first, so small is the original. With
    ``sparse_first`` third's copy is small's update with every third entry of each tensor set
    to 0, committed before small's (under ``either_order`` the earlier sparse one is the copy:
    a99). Returns the round, its peer record, the accounts in address order and small's CID."""
    import hashlib
    import secrets

    import torch

    from fedtrail.chain import dev_account
    from fedtrail.ledger import commitment
    from fedtrail.ledger.records import score_commitment
    from fedtrail.protocol.codes import MAX_SITE_SAMPLES
    from fedtrail.protocol.weights import SCORE_SCALE
    from fedtrail.storage.codec import encode_update

    ledger, service, store = fed.ledger, fed.service, fed.store
    accounts = sorted((dev_account(2 + i) for i in range(3)), key=lambda a: address_key(a.address))
    big, small, third = accounts
    ledger.set_max_samples(fed.coordinator, big.address, MAX_SITE_SAMPLES)
    r = service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    gen = torch.Generator().manual_seed(29)
    layout = service.spec.tensor_layout().items()
    big_delta = {
        n: (0.01 * torch.randn(s, generator=gen)).to(getattr(torch, d)) for n, (s, d) in layout
    }
    small_delta = {
        n: (0.01 * torch.randn(s, generator=gen)).to(getattr(torch, d)) for n, (s, d) in layout
    }
    near = {n: (t.double() * (1 + 1e-6)).to(t.dtype) for n, t in small_delta.items()}
    if sparse_first:
        near = {
            n: torch.where(torch.arange(t.numel()).reshape(t.shape) % 3 == 0, 0, t).to(t.dtype)
            for n, t in small_delta.items()
        }
    reveals = []
    for site, n, delta in ((big, MAX_SITE_SAMPLES, big_delta), (small, 1, small_delta)):
        blob = encode_update(delta, spec=service.spec, round=r).blob
        reveals.append((site, store.put(blob), hashlib.sha256(blob).hexdigest(), n))
    blob = encode_update(near, spec=service.spec, round=r).blob
    reveals.append((third, store.put(blob), hashlib.sha256(blob).hexdigest(), 200))
    if sparse_first:  # third commits its copy before small commits the original
        reveals = [reveals[0], reveals[2], reveals[1]]
    assert len({sha for _, _, sha, _ in reveals}) == 3  # a near copy, not the same bytes
    for site, _, sha, n in reveals:
        ledger.commit_update(site, r, commitment(site.address, r, sha, n))
    pass_deadline(ledger, info.commit_deadline)
    for site, cid, sha, n in reveals:
        ledger.reveal_update(site, r, cid, sha, n)
    pass_deadline(ledger, info.reveal_deadline)
    want = {big.address: SCORE_SCALE, small.address: 1, third.address: SCORE_SCALE // 2}
    sites = [site.address for site in accounts]
    salts = {v.address: secrets.token_bytes(32) for v in accounts}
    vectors = {v.address: [0 if s == v.address else want[s] for s in sites] for v in accounts}
    for v in accounts:
        ledger.commit_scores(
            v, r, score_commitment(v.address, r, vectors[v.address], salts[v.address])
        )
    pass_deadline(ledger, peer.score_commit_deadline)
    for v in accounts:
        ledger.reveal_scores(v, r, vectors[v.address], salts[v.address])
    return r, peer, accounts, next(cid for site, cid, _, _ in reveals if site == small)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="h-307, open, and no fix on chain and store alone (h-310): h-300's pass of "
    "update.<site> for an unreadable input at weight 0 lets its site withhold an update a "
    "weighted one copied, after the finalize (only log.status, the aggregator's claim, fails) "
    "or once scored (nothing fails); the honest round h-300 closed (h-297, the withheld input "
    "committed before a weighted one) gives every reader the same evidence, so failing this "
    "fails that: test_a_laundered_copy_and_an_honest_round_give_every_reader_the_same_evidence",
)
def test_a_weighted_copy_of_an_original_withheld_at_weight_0_fails_more_than_the_log(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """h-307, attack (1) on h-300: small (weight 0 from rounding, a positive median) and third
    (weighted, 200 samples) collude: third sends a near copy of small's update (small commits
    first: the original) and the validators weight it. While everything reads, ``audit verify``
    fails ``duplicates`` (a weighted copy). Once the round is finalized small withholds its
    blob, which costs it nothing (paid nothing either way): ``update.<small>`` now passes as
    left out of the public screen (h-300), nothing can make third a copy, and the only failure
    left is ``log.status`` on the status the aggregator's log gave third ("duplicate", as it
    read it): an aggregator in the collusion writes "ok" there and the round passes verify and
    the reader. Wanted: a check that does not rest on the log still fails. h-307's fix (pass an
    unread input at weight 0 only where no weighted input was committed after it) is not made
    (h-310): the honest round h-300 closed has that order, and with the blob gone it is the
    same evidence as this one (withheld once scored instead, even the honest log passes it:
    ``test_a_laundered_copy_and_an_honest_round_give_every_reader_the_same_evidence``), so the
    fix fails it again (h-297: a site at weight 0 that commits early and withholds fails an
    honest round); and under ``either_order`` a sparse copy committed *before* its original is
    the copy too (a99: the xfail below), so a fix would also have to fail every such round
    where an earlier weighted input has an exact 0 entry."""
    from tests.aggregator.test_peer_rounds import _Withholding

    fed = _quiet_screen_federation(tmp_path, anvil_url, ipfs_api)
    r, peer, (_, small, third), gone = _near_copy_round(fed)
    with caplog.at_level(logging.INFO, logger="fedtrail.aggregator"):
        outcome = fed.service.step()
        for _ in range(3):
            if outcome is not None and outcome.phase != Phase.VALUED:
                break
            pass_deadline(fed.ledger, peer.score_reveal_deadline)
            outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED, (outcome, caplog.text)
    after = {s.site: s for s in fed.ledger.get_submissions(r)}
    assert (after[small.address].reason, after[small.address].weight) == (Reason.OK, 0)
    assert after[small.address].score > 0 and after[third.address].weight > 0
    (seen,) = [a for a in verify_all(fed.ledger, fed.store) if a.round == r]  # type: ignore[arg-type]
    assert [c.name for c in seen.checks if c.failed] == ["duplicates"]  # the copy, weighted
    store = _Withholding(fed.store, gone)  # small withholds once the round is finalized
    (audit,) = [a for a in verify_all(fed.ledger, store) if a.round == r]  # type: ignore[arg-type]
    failed = [c.name for c in audit.checks if c.failed and c.name != "log.status"]
    results = _reader_results(fed, anvil_url, ipfs_api, gone)
    fails = [k for k, x in results.items() if x["result"] == "FAIL" and k[1] != "log.status"]
    assert failed and fails, (failed, fails)


def test_terms_naming_a_reference_rule_this_release_does_not_know_fail_verify_and_the_reader(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """h-307, attack (3): a round whose terms name a ``valuation.references`` this release does
    not know (an aggregator and validators of another release, or in collusion: here the known
    rules are patched while the round runs) is refused by every reader of this release; ``audit
    verify`` fails it (``terms.valuation``, and the log's schema), and the independent reader
    must too: before h-307 it read the terms as the rule before and passed the round."""
    from fedtrail.protocol import roundlog
    from tests.aggregator.test_peer_rounds import _finalize, _scored_peer_round

    fed = _quiet_screen_federation(tmp_path, anvil_url, ipfs_api)
    with monkeypatch.context() as patched:
        patched.setattr(roundlog, "REFERENCE_RULES", ("weighted", "weighted-v2"))
        fed.service.settings = replace(fed.service.settings, references="weighted-v2")
        r, _, peer = _scored_peer_round(fed)
        _finalize(fed, r, peer, caplog)
    (audit,) = [a for a in verify_all(fed.ledger, fed.store) if a.round == r]  # type: ignore[arg-type]
    failed = sorted(c.name for c in audit.checks if c.failed)
    results = _reader_results(fed, anvil_url, ipfs_api)
    fails = sorted(k[1] for k, x in results.items() if x["result"] == "FAIL" and k[0] == r)
    assert "terms.valuation" in failed, failed
    assert "terms.canonical" in fails, fails
    assert "weighted-v2" in results[(r, "terms.canonical")]["detail"]


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="h-310, open: as above, with the copy sparse and committed before its original "
    "(under either_order the earlier sparse update is the copy, a99); h-307's fix (fail "
    "update.<site> only where a weighted input was committed after it) does not reach it",
)
def test_a_sparse_copy_committed_before_an_original_withheld_at_weight_0_fails_more_than_the_log(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """h-310: h-307's attack (1) the other way round. Third commits a sparse copy of small's
    update (every third entry 0) *before* small commits it; under ``either_order`` (terms
    written now) the earlier sparse update is the copy of the later dense one, so while
    everything reads ``audit verify`` fails ``duplicates`` (third weighted). Once small
    withholds after the finalize, only ``log.status`` fails, as in the test above; a fix must
    reach this order too (a rule on commit order alone passes small here: no weighted input
    was committed after it)."""
    from tests.aggregator.test_peer_rounds import _finalize, _Withholding

    fed = _quiet_screen_federation(tmp_path, anvil_url, ipfs_api)
    r, peer, (_, small, third), gone = _near_copy_round(fed, sparse_first=True)
    _finalize(fed, r, peer, caplog)
    after = {s.site: s for s in fed.ledger.get_submissions(r)}
    assert (after[small.address].reason, after[small.address].weight) == (Reason.OK, 0)
    assert after[small.address].score > 0 and after[third.address].weight > 0
    assert after[third.address].commit_order < after[small.address].commit_order
    assert not [s for s in after.values() if s.commit_order > after[small.address].commit_order]
    (seen,) = [a for a in verify_all(fed.ledger, fed.store) if a.round == r]  # type: ignore[arg-type]
    assert [c.name for c in seen.checks if c.failed] == ["duplicates"]  # the copy, weighted
    store = _Withholding(fed.store, gone)  # small withholds once the round is finalized
    (audit,) = [a for a in verify_all(fed.ledger, store) if a.round == r]  # type: ignore[arg-type]
    failed = [c.name for c in audit.checks if c.failed and c.name != "log.status"]
    results = _reader_results(fed, anvil_url, ipfs_api, gone)
    fails = [k for k, x in results.items() if x["result"] == "FAIL" and k[1] != "log.status"]
    assert failed and fails, (failed, fails)


def test_a_laundered_copy_and_an_honest_round_give_every_reader_the_same_evidence(
    anvil_url: str, ipfs_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """h-310: why the xfail above stays open. Round 1 is h-297's honest round (stop 61, closed
    by h-300): third's weighted update is its own, the small one (weight 0 from rounding, a
    positive median) is withheld once scored, the honest service leaves it out and finalizes.
    Round 2 is the laundering: third sends a near copy of small's update, the validators weight
    it, and small withholds once scored (not after the finalize: then the honest service cannot
    read it either, so its log calls third "ok" and no aggregator need collude). In both the
    withheld update is committed before a weighted one (the stop 61 fixture's order). With
    small's blob gone, the chain and the store give ``audit verify`` and the independent reader
    the same evidence in both rounds: both pass everything, ``update.<small>`` "left out" in
    each; given the blob, round 2 fails ``duplicates``. So any rule on chain and store that
    fails round 2 fails round 1 too: h-307's fix (fail ``update.<site>`` where a weighted input
    was committed after it) fails this honest round and reopens h-297 for a site at weight 0
    that commits early and withholds; and under ``either_order`` (terms written now) a sparse
    copy committed *before* its original is the copy too (a99,
    ``tests/fedtrail/protocol/test_duplicates.py``), so closing the hole means failing every
    such round while another weighted input has an exact 0 entry."""
    from tests.aggregator.test_peer_rounds import _finalize, _left_out_and_finalized, _Withholding

    fed = _quiet_screen_federation(tmp_path, anvil_url, ipfs_api)
    ledger = fed.ledger
    r1, small, _ = _left_out_and_finalized(fed, caplog)
    gone1 = next(s.cid for s in ledger.get_submissions(r1) if s.site == small.address)
    r2, peer2, (_, small2, third), gone2 = _near_copy_round(fed)
    assert small2.address == small.address
    store = _Withholding(fed.store, gone1, gone2)  # small withholds its round-2 update, scored
    fed.service.store = store  # type: ignore[assignment]
    for node in fed.nodes:
        node.store = node.scorer.store = store
    _finalize(fed, r2, peer2, caplog)
    for r in (r1, r2):
        subs = {s.site: s for s in ledger.get_submissions(r)}
        assert (subs[small.address].reason, subs[small.address].weight) == (Reason.OK, 0)
        assert subs[small.address].score > 0 and subs[third.address].weight > 0
        assert subs[small.address].commit_order < subs[third.address].commit_order
    audits = {a.round: a for a in verify_all(ledger, store)}  # type: ignore[arg-type]
    failed = [
        (a.round, c.name, c.detail[:200]) for a in audits.values() for c in a.checks if c.failed
    ]
    assert not failed, failed
    name = f"update.{small.address[:10]}"
    for r in (r1, r2):
        (row,) = [c for c in audits[r].checks if c.name == name]
        assert row.passed and "left out" in row.detail, (r, row.detail)
    updates = [
        sorted(c.name for c in audits[r].checks if c.name.startswith("update.")) for r in (r1, r2)
    ]
    assert updates[0] == updates[1] and len(updates[0]) == 3, updates
    results = _reader_results(fed, anvil_url, ipfs_api, gone1, gone2)
    fails = [(k, x["detail"][:200]) for k, x in results.items() if x["result"] == "FAIL"]
    assert not fails, fails
    for r in (r1, r2):
        rows = [x for (q, n), x in results.items() if q == r and n.startswith("update.")]
        assert [x["result"] for x in rows if "left out" in x["detail"]] == ["PASS"], (r, rows)
    # what tells them apart leaves with small's blob: given it, round 2's copy is found
    (given,) = [a for a in verify_all(ledger, fed.store) if a.round == r2]  # type: ignore[arg-type]
    dup = next(c for c in given.checks if c.name == "duplicates")
    assert dup.failed and third.address[:10] in dup.detail, dup.detail
