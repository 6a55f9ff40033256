"""A federation whose rounds its sites score, run by hand with the ledger client (issue 14).

No aggregator service and no validation split: the helpers play every part. Round 1 is an
aggregator round (the aggregator values it, as before); a fourth site registers after it; later
rounds are peer rounds: the three hospitals reveal hand-made updates (stored in the given store,
IPFS in the tests), then the four registered sites (the hospitals and the fourth, which sends no
update of its own) commit and reveal
hand-made score vectors, anyone records the peer valuation (the contract's medians), and the
aggregator aggregates with the on-chain weights and finalizes with a log that carries the votes.
``edit`` lets a test forge the log the aggregator writes and hashes on chain.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from eth_account.signers.local import LocalAccount

from fedtrail.chain import advance_time, block_timestamp, dev_account
from fedtrail.ledger import Valuation, commitment
from fedtrail.ledger.records import score_commitment
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import InvalidVotes, PeerVote, address_key, peer_explanation
from fedtrail.protocol.terms import RoundTerms
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.storage.codec import encode_update
from fedtrail.storage.store import ContentStore
from fedtrail.valuation.combine import Combiner
from tests.auditor.report.federation import (
    SPEC,
    VALIDATION,
    Fed,
    finalize,
    initial,
    new_federation,
    open_round,
    put,
    submit_all,
)

PEER_VALUATION: dict[str, Any] = {
    "method": "loo",
    "metric": "auc",
    "mode": "peers",
    "quorum": 3,
    "combiner": asdict(Combiner()),
}
WINDOW = 3600
SCORE_COMMIT, SCORE_REVEAL = 600, 900
EXTRA_VALIDATOR = 4
"""Development account of the registered site that submits no update but validates."""
READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"
"""The independent reader, written from README *The public rules, exactly*."""


@dataclass
class PeerFed:
    """The hand-run federation: its keys, the current global model and each peer round's
    revealed vectors (ascending validator order)."""

    fed: Fed
    validators: list[LocalAccount]
    model: tuple[str, str]
    votes: dict[int, list[PeerVote]] = field(default_factory=dict)


def new_peer_federation(tmp: Path, rpc_url: str, store: ContentStore) -> PeerFed:
    """Three hospitals and a fourth registered validator on a fresh ledger at ``rpc_url``, then
    round 1, an aggregator round valued and finalized as before peer scoring existed."""
    fed = new_federation(tmp, rpc_url)
    fed.store = store  # type: ignore[assignment]  # the helpers only put and get
    model = initial(fed)
    r1 = open_round(fed, model)
    submit_all(fed, r1, seed=1)
    fed.ledger.record_valuation(
        fed.coordinator,
        r1,
        [Valuation(s.address, 600_000 + 100_000 * i, 0) for i, s in enumerate(fed.sites)],
    )
    model = finalize(fed, r1, model, None)
    extra = dev_account(EXTRA_VALIDATOR)  # registered after round 1: it had no update to send
    fed.ledger.register_site(fed.coordinator, extra.address, "validator without data", 10_000)
    return PeerFed(fed, [*fed.sites, extra], model)


def open_peer_round(pf: PeerFed, chain_quorum: int | None = None) -> int:
    """Opens a peer round under terms with the module's quorum and score windows; with
    ``chain_quorum`` the aggregator opens it on chain with another quorum than its terms say."""
    fed = pf.fed
    terms = RoundTerms(
        round=fed.ledger.current_round() + 1,
        aggregation_rule=asdict(AggregationRule()),
        valuation=PEER_VALUATION,
        model_spec=asdict(SPEC),
        spec_hash=SPEC.spec_hash(),
        seed=0,
        validation_sha256=VALIDATION["sha256"],
        validation_images=VALIDATION["images"],
        commit_seconds=WINDOW,
        reveal_seconds=WINDOW,
        score_commit_seconds=SCORE_COMMIT,
        score_reveal_seconds=SCORE_REVEAL,
    )
    ref = put(fed.store, terms.to_bytes())
    fed.terms[terms.round] = ref
    opened = fed.ledger.open_peer_round(
        fed.coordinator,
        model_cid=pf.model[0],
        model_sha256=pf.model[1],
        terms_cid=ref[0],
        terms_sha256=ref[1],
        commit_seconds=WINDOW,
        reveal_seconds=WINDOW,
        score_commit_seconds=SCORE_COMMIT,
        score_reveal_seconds=SCORE_REVEAL,
        quorum=PEER_VALUATION["quorum"] if chain_quorum is None else chain_quorum,
    )
    round_id = opened[0] if isinstance(opened, tuple) else opened
    assert round_id == terms.round
    return int(round_id)


def submit(
    pf: PeerFed,
    round_id: int,
    *,
    seed: int,
    tamper: str | None = None,
    scales: dict[str, float] | None = None,
    samples: dict[str, int] | None = None,
) -> dict[str, tuple[str, str]]:
    """Every hospital commits to a hand-made update and reveals it; ``tamper``: the address of
    one that reveals the CID of another blob under its update's sha256, so nobody can read its
    update (the auditor's fetch: TAMPERED); ``scales``: address -> the scale of that hospital's
    random entries (default 0.01); ``samples``: address -> the sample count it claims (default
    100, 150, 200 in registration order; within its registered limit). Returns {that CID: the
    update's (cid, sha256)}."""
    fed = pf.fed
    gen = torch.Generator().manual_seed(seed)
    reveals = []
    swapped: dict[str, tuple[str, str]] = {}
    for i, site in enumerate(fed.sites):
        scale = (scales or {}).get(site.address, 0.01)
        delta = {
            name: scale * torch.randn(shape, generator=gen)
            for name, (shape, _) in SPEC.tensor_layout().items()
        }
        cid, sha = put(fed.store, encode_update(delta, spec=SPEC, round=round_id).blob)
        if site.address == tamper:
            other = put(fed.store, f"not the update of round {round_id}".encode())[0]
            swapped[other] = (cid, sha)
            cid = other
        n = (samples or {}).get(site.address, 100 + 50 * i)
        fed.ledger.commit_update(site, round_id, commitment(site.address, round_id, sha, n))
        reveals.append((site, cid, sha, n))
    info = fed.ledger.get_round(round_id)
    advance_time(fed.ledger.w3, info.commit_deadline - block_timestamp(fed.ledger.w3) + 1)
    for site, cid, sha, n in reveals:
        fed.ledger.reveal_update(site, round_id, cid, sha, n)
    return swapped


def hand_vectors(
    pf: PeerFed, round_id: int, unreadable: str | None = None, unread: Sequence[str] = ()
) -> dict[str, tuple[int, ...]]:
    """Each validator's vector over the revealed updates (address order): a base score per
    update plus a validator's own offset (at most ``SCORE_SCALE``); a hospital's entry for its
    own update is 0, and so is every entry for the ``unreadable`` update and those of
    ``unread``."""
    sites = sorted((s.site for s in pf.fed.ledger.get_submissions(round_id)), key=address_key)
    base = [500_000 + 90_000 * i + 7_000 * round_id for i in range(len(sites))]
    out: dict[str, tuple[int, ...]] = {}
    for k, v in enumerate(pf.validators):
        out[v.address] = tuple(
            0 if site in (v.address, unreadable, *unread) else min(b + 13_000 * k, SCORE_SCALE)
            for site, b in zip(sites, base, strict=True)
        )
    return out


def score_round(
    pf: PeerFed,
    round_id: int,
    during: Callable[[int], None] | None = None,
    unreadable: str | None = None,
    unread: Sequence[str] = (),
    vectors: Callable[[list[str]], dict[str, tuple[int, ...]]] | None = None,
) -> list[PeerVote]:
    """Every validator commits its hand-made vector after the reveal deadline, reveals it after
    the score commit deadline, and the last validator records the peer valuation. ``during``
    runs once the update reveal window closed, before any score is committed; ``vectors``,
    given the revealed updates (address order), returns every validator's vector instead of
    :func:`hand_vectors`'."""
    ledger = pf.fed.ledger
    w3 = ledger.w3
    info = ledger.get_round(round_id)
    if vectors is None:
        chosen = hand_vectors(pf, round_id, unreadable, unread)
    else:
        chosen = vectors(
            sorted((s.site for s in ledger.get_submissions(round_id)), key=address_key)
        )
    advance_time(w3, info.reveal_deadline - block_timestamp(w3) + 1)
    if during is not None:
        during(round_id)
    salts = {}
    for v in pf.validators:
        salts[v.address] = secrets.token_bytes(32)
        ledger.commit_scores(
            v,
            round_id,
            score_commitment(v.address, round_id, chosen[v.address], salts[v.address]),
        )
    advance_time(w3, SCORE_COMMIT + 1)
    for v in pf.validators:
        ledger.reveal_scores(v, round_id, list(chosen[v.address]), salts[v.address])
    votes = sorted(
        (PeerVote(validator=a, scores=s) for a, s in chosen.items()),
        key=lambda x: address_key(x.validator),
    )
    sites = sorted((s.site for s in ledger.get_submissions(round_id)), key=address_key)
    ledger.record_peer_valuation(pf.validators[-1], round_id, sites, votes)
    pf.votes[round_id] = votes
    return votes


def peer_round(
    pf: PeerFed,
    *,
    seed: int,
    edit: Callable[[dict[str, Any]], None] | None = None,
    during: Callable[[int], None] | None = None,
    chain_quorum: int | None = None,
    tamper: str | None = None,
    scales: dict[str, float] | None = None,
    valued: Callable[[int], None] | None = None,
    unread: Sequence[str] = (),
    samples: dict[str, int] | None = None,
    vectors: Callable[[list[str]], dict[str, tuple[int, ...]]] | None = None,
) -> int:
    """One peer round from opening to finalize; ``edit`` forges the log before it is hashed,
    ``during`` runs between the update reveals and the score commitments, ``chain_quorum``
    opens it with another quorum than the terms', ``tamper`` names a hospital whose revealed
    update nobody can read (every validator scores it 0), ``scales`` as :func:`submit`'s,
    ``valued`` runs once the round is valued, before it is finalized (the aggregator's drops);
    every validator scores the updates of ``unread`` 0 too (as updates it could not read);
    ``samples`` as :func:`submit`'s, ``vectors`` as :func:`score_round`'s."""
    fed = pf.fed
    round_id = open_peer_round(pf, chain_quorum)
    swapped = submit(pf, round_id, seed=seed, tamper=tamper, scales=scales, samples=samples)
    votes = score_round(pf, round_id, during, tamper, unread, vectors)
    if valued is not None:
        valued(round_id)

    def peer_log(doc: dict[str, Any]) -> None:
        doc["settings"]["valuation"] = dict(PEER_VALUATION)
        said = _explanations(fed, round_id, votes)
        for entry in doc["sites"]:
            entry["reason_label"] = Reason(entry["reason"]).name
            # the sentence an aggregator writes (peers.median compares it since session 56)
            entry["explanation"] = said.get(
                address_key(entry["site"]), "median of the other validators' scores"
            )
            entry["components"] = {}  # the aggregator's statistics have no place here
            if entry["site"] == tamper:  # how the aggregator read it (log.status)
                entry["status"] = "tampered"
        doc["peers"] = {
            "votes": [{"validator": v.validator, "scores": list(v.scores)} for v in votes]
        }
        if edit is not None:
            edit(doc)

    store = fed.store
    if swapped:  # the hand-run aggregation decodes every update, the unreadable one weighted 0
        fed.store = _Swapped(store, swapped)  # type: ignore[assignment]
    try:
        pf.model = finalize(fed, round_id, pf.model, None, peer_log)
    finally:
        fed.store = store
    return round_id


def _explanations(fed: Any, round_id: int, votes: Sequence[PeerVote]) -> dict[int, str]:
    """Each revealed update's peer-round explanation, by address key, as the aggregator writes
    it from the chain (none when the votes give no outcome)."""
    try:
        outcome = fed.ledger.peer_outcome(round_id)
    except InvalidVotes:
        return {}
    reasons = {address_key(s.site): s.reason for s in fed.ledger.get_submissions(round_id)}
    gated = len(votes) - len(outcome.counted)
    return {
        address_key(site): peer_explanation(
            count=count,
            median=median,
            gated=gated,
            withheld=reasons.get(address_key(site)) == Reason.WITHHELD,
        )
        for site, median, count in zip(
            outcome.sites, outcome.peer_medians, outcome.peer_counts, strict=True
        )
    }


class _Swapped:
    """The store, except that a swapped CID reads the update it stands in for (so the hand-run
    aggregation can decode every update; the unreadable one has weight 0)."""

    def __init__(self, store: Any, swapped: dict[str, tuple[str, str]]) -> None:
        self.store, self.swapped = store, swapped

    def put(self, blob: bytes) -> str:
        return str(self.store.put(blob))

    def get(self, cid: str, sha256: str, **kwargs: Any) -> bytes:
        return bytes(self.store.get(*self.swapped.get(cid, (cid, sha256)), **kwargs))


def reader_results(pf: PeerFed, rpc_url: str, ipfs_api: str) -> dict[tuple[int, str], Any]:
    """scripts/independent/reader.py (written from README) over the whole ledger: each result
    keyed by (round, check)."""
    spec = importlib.util.spec_from_file_location("independent_reader_peer_federation", READER)
    assert spec is not None and spec.loader is not None
    reader: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    reader.RESULTS.clear()
    argv = ["--rpc-url", rpc_url, "--contract", pf.fed.ledger.address, "--ipfs", "ipfs:" + ipfs_api]
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(argv)
    return {(x["round"], x["check"]): x for x in reader.RESULTS}
