"""A round's record and its submissions are one JSON-RPC batch each over HTTP (issue 18): the
same values as one request each, a finalized round's record read once, and clear errors for a
revert, an unreachable endpoint and a malformed or partly failed batch answer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.errors import ChainUnreachable, LedgerError, RoundStateError
from fedtrail.ledger import Artifact, Ledger, commitment
from fedtrail.protocol.codes import Phase
from tests.fixtures.chain import ChainEnv, free_port

pytestmark = pytest.mark.anvil


def _round(env: ChainEnv) -> tuple[Ledger, int]:
    """A ledger with one round: two sites committed, one revealed."""
    ledger = env.deploy()
    coord, agg = env.coordinator, env.aggregator
    sites = env.sites[:2]
    for i, site in enumerate(sites):
        ledger.register_site(coord, site.address, f"s{i}", 100)
    r, _ = ledger.open_round(
        agg,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=300,
        reveal_seconds=300,
    )
    for i, site in enumerate(sites):
        ledger.commit_update(site, r, commitment(site.address, r, f"{i + 3}{i + 3}" * 32, 10))
    advance_time(env.w3, 301)
    ledger.reveal_update(sites[0], r, "QmU", "33" * 32, 10)
    return ledger, r


def _sent(w3: Web3) -> list[str]:
    """Every request the provider sends from here on (a batch as ``batch:<n>``)."""
    sent: list[str] = []
    provider: Any = w3.provider
    single, batch = provider._make_request, provider.make_batch_request
    provider._make_request = lambda method, data: sent.append(method) or single(method, data)
    provider.make_batch_request = lambda calls: sent.append(f"batch:{len(calls)}") or batch(calls)
    return sent


def _one_by_one(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "_batch", lambda calls, queries, **kwargs: None)


def test_a_round_and_its_submissions_are_one_batch_each_and_read_as_one_by_one(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, r = _round(anvil)
    sent = _sent(anvil.w3)
    info = ledger.get_round(r)
    revealed = ledger.get_submissions(r)
    every = ledger.get_submissions(r, include_unrevealed=True)
    assert sent == ["batch:3", "batch:3", "batch:3"]
    assert [s.site for s in revealed] == [anvil.sites[0].address]
    assert revealed[0].cid == "QmU" and revealed[0].commit_order == 1
    assert len(every) == 2
    _one_by_one(ledger, monkeypatch)
    sent.clear()
    assert ledger.get_round(r) == info
    assert ledger.get_submissions(r) == revealed
    assert ledger.get_submissions(r, include_unrevealed=True) == every
    assert len(sent) == 2 + 3 + 3  # view + RoundOpened; view + two event queries, twice


def test_a_sites_view_of_a_round_is_one_batch_and_reads_as_one_by_one(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``site_round`` (what a site node reads at each step) and ``get_submission`` are one
    batch each, and give what the single reads give, for a site that revealed, one that only
    committed and one with no commitment."""
    ledger, r = _round(anvil)
    revealed, committed, absent = (s.address for s in anvil.sites[:3])
    ledger.set_privacy_budget(anvil.coordinator, committed, 7_000_000)
    sent = _sent(anvil.w3)
    views = {site: ledger.site_round(r, site) for site in (revealed, committed, absent)}
    subs = {site: ledger.get_submission(r, site) for site in (revealed, committed, absent)}
    clock = next_block_timestamp(anvil.w3)
    assert sent == ["batch:11"] * 3 + ["batch:3"] * 3 + ["eth_getBlockByNumber"]
    assert all(v.peer is None for v in views.values())  # an aggregator round: no peer record
    assert ledger.get_peer_round(r) is None
    assert views[revealed].submission is not None and views[revealed].submission.cid == "QmU"
    assert views[committed].submission is not None
    assert not views[committed].submission.revealed
    assert views[committed].submission.commit_order == 2
    assert views[absent].submission is None
    assert views[committed].privacy.budget_micro == 7_000_000
    _one_by_one(ledger, monkeypatch)
    for site, view in views.items():
        assert view.info == ledger.get_round(r)
        assert view.submission == subs[site] == ledger.get_submission(r, site)
        assert view.last_finalized == ledger.last_finalized_round() == 0
        assert view.privacy == ledger.privacy(site)
        known = ledger.get_site(site)
        assert view.max_samples == (known.max_samples if known is not None else None)
        assert view.pending_timestamp <= clock <= view.pending_timestamp + 2
        alone = ledger.site_round(r, site)
        assert (alone.info, alone.submission, alone.privacy, alone.max_samples) == (
            view.info,
            view.submission,
            view.privacy,
            view.max_samples,
        )


def test_a_sites_view_without_the_pending_blocks_time_is_read_one_by_one(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending block answered without a readable timestamp is never taken as a time: the
    whole view is read again one by one."""
    ledger, r = _round(anvil)
    site = anvil.sites[0].address
    expected = ledger.site_round(r, site)
    _answer(
        ledger,
        monkeypatch,
        lambda answers: (
            [*answers[:-1], {**answers[-1], "result": {"timestamp": "soon"}}]
            if len(answers) == 11  # the view's batch; the single reads' batches as answered
            else answers
        ),
    )
    sent = _sent(anvil.w3)
    again = ledger.site_round(r, site)
    assert (again.info, again.submission, again.privacy, again.max_samples, again.peer) == (
        expected.info,
        expected.submission,
        expected.privacy,
        expected.max_samples,
        expected.peer,
    )
    assert again.pending_timestamp >= expected.pending_timestamp
    assert "eth_getBlockByNumber" in sent  # the clock asked alone


def test_a_finalized_round_is_read_once_an_open_one_every_time(anvil: ChainEnv) -> None:
    ledger, r = _round(anvil)
    sent = _sent(anvil.w3)
    ledger.get_round(r)
    ledger.get_round(r)
    assert len(sent) == 2  # open: it may still change
    advance_time(anvil.w3, 301)
    ledger.cancel_round(anvil.aggregator, r)
    first = ledger.get_round(r)
    sent.clear()
    assert first.phase == Phase.CANCELLED
    assert ledger.get_round(r) == first
    assert sent == []
    # a new client reads it again, and the same
    again = Ledger.connect(anvil.w3, ledger.address, from_block=ledger.from_block)
    assert again.get_round(r) == first


def test_the_aggregators_poll_is_one_batch_and_reads_as_one_by_one(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``round_poll`` (what the aggregator reads at each step, issue 18) is one batch: the
    current and last finalized rounds, the asked round's record and peer record, the pending
    block; the same values as the single reads. A guess that is not the current round gives
    no record; a finalized or cancelled round's record comes from the cache, not the batch."""
    ledger, r = _round(anvil)
    sent = _sent(anvil.w3)
    poll = ledger.round_poll(r)
    clock = next_block_timestamp(anvil.w3)
    assert sent == ["batch:7", "eth_getBlockByNumber"]
    assert (poll.current, poll.last_finalized) == (r, 0)
    assert poll.info == ledger.get_round(r) and poll.info.submission_count == 1
    assert poll.peer is None and ledger.get_peer_round(r) is None
    assert poll.pending_timestamp <= clock <= poll.pending_timestamp + 2
    sent.clear()
    assert ledger.round_poll(r, peer=False).peer is None
    assert ledger.round_poll().info is None
    assert sent == ["batch:6", "batch:3"]
    advance_time(anvil.w3, 301)
    ledger.cancel_round(anvil.aggregator, r)
    cancelled = ledger.get_round(r)
    r2, _ = ledger.open_round(
        anvil.aggregator,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=300,
        reveal_seconds=300,
    )
    sent.clear()
    stale = ledger.round_poll(r)
    assert sent == ["batch:4"]  # the cancelled round's record: cached
    assert (stale.current, stale.info, stale.peer) == (r2, None, None)
    fresh = ledger.round_poll(r2)
    assert fresh.info == ledger.get_round(r2) and fresh.info.phase == Phase.OPEN
    batched = {guess: ledger.round_poll(guess) for guess in (0, r, r2)}
    _one_by_one(ledger, monkeypatch)
    for guess, poll in batched.items():
        alone = ledger.round_poll(guess)
        assert (alone.current, alone.last_finalized, alone.info, alone.peer) == (
            poll.current,
            poll.last_finalized,
            poll.info,
            poll.peer,
        )
        assert abs(alone.pending_timestamp - poll.pending_timestamp) <= 2
    assert batched[r2].info is not None and batched[0].info is None
    assert ledger.get_round(r) == cancelled


def test_the_poll_reads_the_rounds_submissions_in_its_batch_when_asked(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``round_poll(submissions=True)`` (the aggregator's poll before a finalize, issue 18)
    reads the round's revealed updates in the same batch: the view and its two event queries,
    three entries more, no request more; the same submissions as :meth:`get_submissions`, one
    by one too. None when not asked or when the asked round is not the current one."""
    ledger, r = _round(anvil)
    sent = _sent(anvil.w3)
    poll = ledger.round_poll(r, submissions=True)
    assert sent == ["batch:10"]
    assert poll.submissions is not None and len(poll.submissions) == 1
    assert list(poll.submissions) == ledger.get_submissions(r)
    assert poll.info == ledger.get_round(r) and poll.peer is None and poll.peer_read
    assert ledger.round_poll(r).submissions is None
    sent.clear()
    assert ledger.round_poll(r, peer=False, submissions=True).submissions == poll.submissions
    assert sent == ["batch:9"]
    assert ledger.round_poll(r + 1, submissions=True).submissions is None  # not current
    _one_by_one(ledger, monkeypatch)
    alone = ledger.round_poll(r, submissions=True)
    assert alone.submissions == poll.submissions and alone.info == poll.info


def test_an_opened_rounds_id_and_deadlines_come_from_its_receipt(anvil: ChainEnv) -> None:
    """The id of a round just opened, and its deadlines, are read from the open's receipt
    (issue 18: an eth_getLogs after every open); a result without the receipt's logs, or with
    a RoundOpened another contract emitted, is read with eth_getLogs as before, the same."""
    ledger = anvil.deploy()
    sent = _sent(anvil.w3)
    r, tx = ledger.open_round(
        anvil.aggregator,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=300,
        reveal_seconds=400,
    )
    assert "eth_getLogs" not in sent
    sent.clear()
    opened = ledger.round_opened(tx)
    assert sent == []
    info = ledger.get_round(r)
    assert r == 1 and opened.args["round"] == r and opened.tx_hash == tx.tx_hash
    assert (opened.args["commitDeadline"], opened.args["revealDeadline"]) == (
        info.commit_deadline,
        info.reveal_deadline,
    )
    assert info.reveal_deadline - info.commit_deadline == 400
    sent.clear()
    assert ledger.round_opened(replace(tx, logs=())) == opened
    assert sent == ["eth_getLogs"]
    foreign = tuple({**log, "address": "0x" + "12" * 20} for log in tx.logs)
    sent.clear()
    assert ledger.round_opened(replace(tx, logs=foreign)) == opened
    assert sent == ["eth_getLogs"]


def test_a_revert_in_the_batch_is_the_contracts_own_error(anvil: ChainEnv) -> None:
    """getRound of an unknown round reverts inside the batch: the entry is asked again alone,
    which raises the ledger's error for it, as before."""
    ledger, r = _round(anvil)
    with pytest.raises(RoundStateError, match="does not exist"):
        ledger.get_round(r + 5)


def test_an_unreachable_endpoint_is_chain_unreachable() -> None:
    dead = Web3(HTTPProvider(f"http://127.0.0.1:{free_port()}", request_kwargs={"timeout": 2}))
    ledger = Ledger(dead, "0x" + "12" * 20, 31337, Artifact.load())
    with pytest.raises(ChainUnreachable, match="cannot read the ledger"):
        ledger.get_round(1)
    with pytest.raises(ChainUnreachable, match="cannot read the ledger"):
        ledger.get_submissions(1)


def _answer(ledger: Ledger, monkeypatch: pytest.MonkeyPatch, edit: Any) -> None:
    """The node's real batch answer, passed through ``edit`` before the ledger reads it."""
    provider: Any = ledger.w3.provider
    batch = provider.make_batch_request
    monkeypatch.setattr(provider, "make_batch_request", lambda calls: edit(batch(calls)))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda answers: answers[:2], "malformed"),
        (lambda answers: "not a list", "malformed"),
        (lambda answers: [answers[0], {"jsonrpc": "2.0", "id": 9}, answers[2]], "without result"),
        (lambda answers: [{**answers[0], "result": "0x1234"}, *answers[1:]], "unreadable view"),
        (lambda answers: [answers[0], {**answers[1], "result": "0x"}, answers[2]], "events with"),
    ],
    ids=["short", "not-a-list", "no-result", "bad-view", "bad-logs"],
)
def test_a_malformed_batch_answer_is_a_ledger_error(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch, edit: Any, match: str
) -> None:
    ledger, r = _round(anvil)
    _answer(ledger, monkeypatch, edit)
    with pytest.raises(LedgerError, match=match):
        ledger.get_round(r)


def test_an_event_entry_that_fails_is_asked_again_alone_and_its_error_raised(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One failed entry (the node refused an eth_getLogs) is never read as no events: asked
    again alone, the read either succeeds with the node's real answer or raises what failed."""
    ledger, r = _round(anvil)
    failed = {"jsonrpc": "2.0", "id": 0, "error": {"code": -32005, "message": "too many logs"}}
    _answer(
        ledger,
        monkeypatch,
        lambda answers: [answers[0], {**failed, "id": answers[1]["id"]}, answers[2]],
    )
    assert ledger.get_submissions(r)[0].cid == "QmU"  # the single reads answer
    provider: Any = ledger.w3.provider
    monkeypatch.setattr(
        provider,
        "make_request",
        lambda method, params: (
            {"jsonrpc": "2.0", "id": 1, "error": failed["error"]}
            if method == "eth_getLogs"
            else HTTPProvider.make_request(provider, method, params)
        ),
    )
    with pytest.raises(LedgerError, match="too many logs"):
        ledger.get_round(r)


def test_a_node_that_takes_no_batch_is_read_one_by_one(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, r = _round(anvil)
    expected = ledger.get_submissions(r)
    refusal = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no batch"}}
    _answer(ledger, monkeypatch, lambda answers: refusal)
    assert ledger.get_submissions(r) == expected


def test_the_embedded_chain_reads_one_by_one(embedded: ChainEnv) -> None:
    ledger = embedded.deploy()
    assert ledger._batch([ledger._fn.currentRound()], []) is None
    assert ledger.current_round() == 0


_SAMPLE = {
    "address": "0x" + "12" * 20,
    "bytes32": b"\x11" * 32,
    "bytes": b"\x01\x02",
    "string": "QmX",
    "bool": True,
}


def _sample(typ: str) -> Any:
    if typ.endswith("]"):
        return [_sample(typ[: typ.rindex("[")])] * 2
    if typ.startswith(("uint", "int")):
        return 7
    return _SAMPLE[typ]


def test_call_data_is_web3s_encoding_for_every_function(embedded: ChainEnv) -> None:
    """Views and transactions are encoded from the function's public selector and argument
    types with eth_abi: the same bytes as web3's ``Contract.encode_abi``, for every function
    of the contract."""
    from fedtrail.ledger.client import _calldata

    ledger = embedded.deploy()
    contract = ledger._contract
    checked = 0
    for entry in ledger.artifact.abi:
        if entry.get("type") != "function":
            continue
        args = [_sample(str(i["type"])) for i in entry["inputs"]]
        call = getattr(ledger._fn, entry["name"])(*args)
        assert _calldata(contract, call) == contract.encode_abi(entry["name"], args=args)
        checked += 1
    assert checked >= 30
