"""Helpers for the contract tests: a deployed ledger with registered sites and the usual
steps of a round (open, commit, move past the commit deadline, reveal, value, finalize), and
of a peer round (open_peer, then validators commit and reveal score vectors)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from fedtrail.chain import advance_time, block_timestamp
from fedtrail.errors import ContractRevert
from fedtrail.ledger import Ledger, Valuation, commitment, score_commitment
from fedtrail.protocol.peers import PeerVote
from tests.fixtures.chain import ChainEnv

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
MAX_SAMPLES = 10_000
ZERO = "0x" + "00" * 20


def h(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


@contextmanager
def expect(exc_type: type[ContractRevert], error: str, **args: Any) -> Iterator[None]:
    """pytest.raises for a contract error with its exact name and (some) arguments."""
    with pytest.raises(exc_type) as info:
        yield
    err = info.value
    assert type(err) is exc_type, f"expected {exc_type.__name__}, got {type(err).__name__}"
    assert err.error == error, f"expected {error}, got {err.error}: {err}"
    for key, value in args.items():
        assert err.args_by_name[key] == value, (key, err.args_by_name)


def last_event(ledger: Ledger, name: str) -> dict[str, Any]:
    events = ledger.events(name)
    assert events, f"no {name} event"
    return events[-1].args


def by_address(addresses: list[str]) -> list[str]:
    return sorted(addresses, key=lambda a: int(a, 16))


class Fed:
    """A deployed ledger with ``n_sites`` registered sites and helpers for a round."""

    def __init__(self, env: ChainEnv, n_sites: int = 3, *, min_round_window: int = 10) -> None:
        self.env = env
        self.w3 = env.w3
        self.ledger = env.deploy(min_round_window=min_round_window)
        self.coord = env.coordinator
        self.agg = env.aggregator
        self.sites = env.sites[:n_sites]
        for i, site in enumerate(self.sites):
            self.ledger.register_site(self.coord, site.address, f"hospital-{i}", MAX_SAMPLES)

    def open(self, model: str = "g0", commit: int = 600, reveal: int = 600) -> int:
        round_id, _ = self.ledger.open_round(
            self.agg,
            CID,
            h(model),
            terms_cid=CID,
            terms_sha256=h("terms" + model),
            commit_seconds=commit,
            reveal_seconds=reveal,
        )
        return round_id

    def commit(self, round_id: int, site: LocalAccount, tag: str, n: int = 100) -> None:
        self.ledger.commit_update(site, round_id, commitment(site.address, round_id, h(tag), n))

    def reveal(self, round_id: int, site: LocalAccount, tag: str, n: int = 100) -> None:
        self.ledger.reveal_update(site, round_id, CID, h(tag), n)

    def past_commit(self, round_id: int) -> None:
        """Moves the chain clock just past the round's commit deadline."""
        deadline = self.ledger.get_round(round_id).commit_deadline
        advance_time(self.w3, max(0, deadline - block_timestamp(self.w3)) + 1)

    def past_reveal(self, round_id: int) -> None:
        deadline = self.ledger.get_round(round_id).reveal_deadline
        advance_time(self.w3, max(0, deadline - block_timestamp(self.w3)) + 1)

    def submit_all(self, round_id: int, ns: list[int] | None = None) -> None:
        """Every site commits, the commit window closes, every site reveals."""
        ns = ns or [100] * len(self.sites)
        for i, site in enumerate(self.sites):
            self.commit(round_id, site, f"u{round_id}-{i}", ns[i])
        self.past_commit(round_id)
        for i, site in enumerate(self.sites):
            self.reveal(round_id, site, f"u{round_id}-{i}", ns[i])

    def value(self, round_id: int, scores: list[int], reasons: list[int] | None = None) -> None:
        reasons = reasons or [0 if s > 0 else 1 for s in scores]
        vals = [
            Valuation(site=s.address, score=sc, reason=reasons[i])
            for i, (s, sc) in enumerate(zip(self.sites, scores, strict=False))
        ]
        self.ledger.record_valuation(self.agg, round_id, vals)

    def finalize(self, round_id: int, model: str) -> None:
        self.ledger.finalize_round(
            self.agg,
            round_id,
            global_cid=CID,
            global_sha256=h(model),
            log_cid=CID,
            log_sha256=h("log" + model),
        )

    def raw_valuation(
        self, round_id: int, sites: list[str], scores: list[int], reasons: list[int]
    ) -> None:
        """Bypasses the client's sorting and checks, to reach the contract's own."""
        call = self.ledger._fn.recordValuation(round_id, sites, scores, reasons)
        self.ledger._transact(self.agg, call)

    # ------------------------------------------------------------------ peer rounds

    def open_peer(
        self,
        quorum: int,
        model: str = "g0",
        *,
        commit: int = 600,
        reveal: int = 600,
        score_commit: int = 600,
        score_reveal: int = 600,
    ) -> int:
        round_id, _ = self.ledger.open_peer_round(
            self.agg,
            model_cid=CID,
            model_sha256=h(model),
            terms_cid=CID,
            terms_sha256=h("peer-terms" + model),
            commit_seconds=commit,
            reveal_seconds=reveal,
            score_commit_seconds=score_commit,
            score_reveal_seconds=score_reveal,
            quorum=quorum,
        )
        return round_id

    def _past(self, deadline: int) -> None:
        advance_time(self.w3, max(0, deadline - block_timestamp(self.w3)) + 1)

    def past_score_commit(self, round_id: int) -> None:
        peer = self.ledger.get_peer_round(round_id)
        assert peer is not None
        self._past(peer.score_commit_deadline)

    def past_score_reveal(self, round_id: int) -> None:
        peer = self.ledger.get_peer_round(round_id)
        assert peer is not None
        self._past(peer.score_reveal_deadline)

    def submit(self, round_id: int, sites: list[LocalAccount], ns: list[int]) -> list[str]:
        """``sites`` commit and reveal (ns samples each); the reveal window then closes.
        Returns the revealed sites in address order."""
        for site, n in zip(sites, ns, strict=True):
            self.commit(round_id, site, f"u{round_id}-{site.address}", n)
        self.past_commit(round_id)
        for site, n in zip(sites, ns, strict=True):
            self.reveal(round_id, site, f"u{round_id}-{site.address}", n)
        self.past_reveal(round_id)
        return by_address([s.address for s in sites])

    @staticmethod
    def salt(validator: LocalAccount, round_id: int) -> bytes:
        return hashlib.sha256(f"salt-{validator.address}-{round_id}".encode()).digest()

    def commit_scores(self, round_id: int, validator: LocalAccount, scores: list[int]) -> None:
        salt = self.salt(validator, round_id)
        self.ledger.commit_scores(
            validator, round_id, score_commitment(validator.address, round_id, scores, salt)
        )

    def reveal_scores(self, round_id: int, validator: LocalAccount, scores: list[int]) -> None:
        self.ledger.reveal_scores(validator, round_id, scores, self.salt(validator, round_id))

    def score(self, round_id: int, vectors: dict[str, list[int]]) -> list[PeerVote]:
        """Every validator named in ``vectors`` (address -> vector) commits, the score commit
        window closes, every one reveals. Returns the votes in validator address order."""
        accounts = {a.address: a for a in self.env.sites}
        for address, scores in vectors.items():
            self.commit_scores(round_id, accounts[address], scores)
        self.past_score_commit(round_id)
        for address, scores in vectors.items():
            self.reveal_scores(round_id, accounts[address], scores)
        return [PeerVote(validator=a, scores=tuple(vectors[a])) for a in by_address(list(vectors))]
