"""Property tests of the on-chain weight rule and reputation (hypothesis)."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtrail.chain import advance_time, connect
from fedtrail.ledger import Ledger, Valuation, commitment
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import WEIGHT_SCALE, exact_shares, next_reputation, onchain_weights
from tests.fixtures.chain import _env

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"

counts = st.integers(min_value=1, max_value=10**9)
scores = st.integers(min_value=0, max_value=1_000_000)


def _cases(max_sites: int) -> st.SearchStrategy[tuple[list[int], list[int]]]:
    return (
        st.integers(min_value=1, max_value=max_sites)
        .flatmap(
            lambda k: st.tuples(
                st.lists(counts, min_size=k, max_size=k), st.lists(scores, min_size=k, max_size=k)
            )
        )
        .filter(lambda c: any(n * s for n, s in zip(*c, strict=True)))
    )


cases = _cases(12)


@given(cases)
@settings(max_examples=500)
def test_weights_sum_exactly_and_are_within_one_unit_of_proportional(
    case: tuple[list[int], list[int]],
) -> None:
    ns, ss = case
    weights = onchain_weights(ns, ss)
    assert sum(weights) == WEIGHT_SCALE
    for w, share in zip(weights, exact_shares(ns, ss), strict=True):
        assert abs(Fraction(w) - share * WEIGHT_SCALE) < 1
        if share == 0:
            assert w == 0


class _Federation:
    """One ledger on the real Anvil node reused across hypothesis examples (a deployment per
    example would dominate the run time); every example is a new round. Anvil, not the embedded
    chain: py-evm's gas estimation made each round ~10 s there, ~0.6 s on Anvil."""

    def __init__(self, url: str) -> None:
        env = _env("anvil", connect(url))
        self.w3 = env.w3
        self.agg = env.aggregator
        self.sites = env.sites
        self.ledger, _ = Ledger.deploy(env.w3, env.coordinator, aggregator=env.aggregator.address)
        for s in self.sites:
            self.ledger.register_site(env.coordinator, s.address, "", 10**9)
        self.model = "0"
        self.reputation = {s.address: (0, 0) for s in self.sites}  # (reputation, valued_rounds)

    def round(self, ns: list[int], ss: list[int]) -> None:
        sha = hashlib.sha256(self.model.encode()).hexdigest()
        r, _ = self.ledger.open_round(
            self.agg,
            CID,
            sha,
            terms_cid=CID,
            terms_sha256=sha,
            commit_seconds=100,
            reveal_seconds=100,
        )
        chosen = self.sites[: len(ns)]
        digests = [hashlib.sha256(f"{r}-{i}".encode()).hexdigest() for i in range(len(ns))]
        for site, n, digest in zip(chosen, ns, digests, strict=True):
            self.ledger.commit_update(site, r, commitment(site.address, r, digest, n))
        advance_time(self.w3, 101)
        for site, n, digest in zip(chosen, ns, digests, strict=True):
            self.ledger.reveal_update(site, r, CID, digest, n)
        advance_time(self.w3, 100)
        self.ledger.record_valuation(
            self.agg,
            r,
            [
                Valuation(site=s.address, score=sc, reason=Reason.OK if sc else Reason.LOW_GAIN)
                for s, sc in zip(chosen, ss, strict=True)
            ],
        )
        by_addr = sorted(zip(chosen, ns, ss, strict=True), key=lambda t: int(t[0].address, 16))
        expected = onchain_weights([t[1] for t in by_addr], [t[2] for t in by_addr])
        got = {s.site: s.weight for s in self.ledger.get_submissions(r)}
        assert [got[t[0].address] for t in by_addr] == expected
        alpha = self.ledger.reputation_alpha()
        for site, _, score in by_addr:
            prev, valued = self.reputation[site.address]
            rep = next_reputation(prev, score, valued_rounds=valued, alpha=alpha)
            self.reputation[site.address] = (rep, valued + 1)
            info = self.ledger.get_site(site.address)
            assert info is not None and info.reputation == rep and 0 <= rep <= 1_000_000
        self.model = str(r)
        self.ledger.finalize_round(
            self.agg,
            r,
            global_cid=CID,
            global_sha256=hashlib.sha256(self.model.encode()).hexdigest(),
            log_cid=CID,
            log_sha256=sha,
        )


@pytest.fixture(scope="module")
def anvil_federation(anvil_url: str) -> _Federation:
    return _Federation(anvil_url)


@pytest.mark.anvil
@given(case=_cases(5))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_contract_weights_equal_the_shared_rule_and_reputation_stays_in_range(
    anvil_federation: _Federation, case: tuple[list[int], list[int]]
) -> None:
    ns, ss = case
    anvil_federation.round(ns, ss)
