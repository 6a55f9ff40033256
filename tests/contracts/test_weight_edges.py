"""The contract's weights on the edge cases of the weight rule, against a reference written
from the README's words (``w_i = n_i*s_i / sum_j n_j*s_j`` as integers summing to exactly 1e18;
the remainder one unit each to the first sites, in address order, whose exact share had a
fraction) in exact rationals, and against the Python mirror ``onchain_weights``: one site,
every score 0 but one, the largest sample count a site may claim, ties, a share below one unit.
The property test beside it (test_weight_properties) draws counts up to 1e9 and never these."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest

from fedtrail.chain import advance_time
from fedtrail.ledger import MAX_SITE_SAMPLES, Ledger, Valuation, commitment
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import onchain_weights
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.anvil

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
E = 10**18
FULL = 1_000_000
M = 2**48 - 1  # README: MAX_SITE_SAMPLES


def reference(ns: list[int], ss: list[int]) -> list[int]:
    """The README's rule, from its sentence, in exact rationals."""
    total = sum(n * s for n, s in zip(ns, ss, strict=True))
    exact = [Fraction(n * s * E, total) for n, s in zip(ns, ss, strict=True)]
    out = [e.numerator // e.denominator for e in exact]
    left = E - sum(out)
    for i, e in enumerate(exact):
        if left and e.denominator != 1:
            out[i] += 1
            left -= 1
    assert left == 0
    return out


CASES: dict[str, tuple[list[int], list[int]]] = {
    "one site": ([7], [1]),
    "one site, the largest claim": ([M], [FULL]),
    "all scores 0 but one": ([100, 200, 300, 400, 500], [0, 0, 1, 0, 0]),
    "all scores 0 but the last": ([1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, FULL]),
    "every site at the largest claim and full score": ([M] * 7, [FULL] * 7),
    "three-way tie (remainder 1)": ([1, 1, 1], [FULL, FULL, FULL]),
    "seven-way tie (remainder 6)": ([5] * 7, [3] * 7),
    "ties of different products": ([2, 1, 2, 1], [1, 2, 1, 2]),
    "largest claim beside one sample": ([M, 1, 1], [FULL, 1, FULL]),
    # a positive score whose exact share is below one unit of 1e-18 may round to weight 0
    "a share below one unit": ([M, 1], [FULL, 1]),
    "scores 1 and full, mixed counts": ([1, M, 3, M - 1, 2], [1, 1, FULL, FULL, 0]),
}


@pytest.fixture(scope="module")
def ledger_and_sites(anvil_url: str) -> tuple[Ledger, ChainEnv]:
    from fedtrail.chain import connect
    from tests.fixtures.chain import _env

    env = _env("anvil", connect(anvil_url))
    ledger, _ = Ledger.deploy(env.w3, env.coordinator, aggregator=env.aggregator.address)
    for s in env.sites:
        ledger.register_site(env.coordinator, s.address, "", MAX_SITE_SAMPLES)
    return ledger, env


def test_the_readme_constant_is_the_contracts() -> None:
    assert MAX_SITE_SAMPLES == M


@pytest.mark.parametrize("case", list(CASES))
def test_contract_weights_on_edge_cases_equal_the_readme_rule(
    ledger_and_sites: tuple[Ledger, ChainEnv], case: str
) -> None:
    ledger, env = ledger_and_sites
    ns, ss = CASES[case]  # in ascending address order of the sites below
    sites = sorted(env.sites, key=lambda a: int(a.address, 16))[: len(ns)]
    last = ledger.last_finalized_round()
    model = hashlib.sha256(str(last).encode()).hexdigest()
    r, _ = ledger.open_round(
        env.aggregator,
        CID,
        model,
        terms_cid=CID,
        terms_sha256=model,
        commit_seconds=100,
        reveal_seconds=100,
    )
    digests = [hashlib.sha256(f"{r}-{i}".encode()).hexdigest() for i in range(len(ns))]
    for site, n, digest in zip(sites, ns, digests, strict=True):
        ledger.commit_update(site, r, commitment(site.address, r, digest, n))
    advance_time(env.w3, 101)
    for site, n, digest in zip(sites, ns, digests, strict=True):
        ledger.reveal_update(site, r, CID, digest, n)
    advance_time(env.w3, 100)
    ledger.record_valuation(
        env.aggregator,
        r,
        [
            Valuation(site=s.address, score=sc, reason=Reason.OK if sc else Reason.LOW_GAIN)
            for s, sc in zip(sites, ss, strict=True)
        ],
    )
    got = {s.site: s.weight for s in ledger.get_submissions(r)}
    chain = [got[s.address] for s in sites]
    events = {
        e.args["site"]: e.args["weight"]
        for e in ledger.events("UpdateValued", argument_filters={"round": r})
    }
    sha = hashlib.sha256(str(r).encode()).hexdigest()  # closed first: the next case opens one
    ledger.finalize_round(
        env.aggregator, r, global_cid=CID, global_sha256=sha, log_cid=CID, log_sha256=sha
    )
    want = reference(ns, ss)
    assert chain == want
    assert onchain_weights(ns, ss) == want
    assert sum(chain) == E
    for w, n, s in zip(chain, ns, ss, strict=True):
        exact = Fraction(n * s * E, sum(a * b for a, b in zip(ns, ss, strict=True)))
        assert abs(w - exact) < 1  # within one unit of exact (README)
        if n * s == 0:
            assert w == 0
    assert [events[s.address] for s in sites] == want
