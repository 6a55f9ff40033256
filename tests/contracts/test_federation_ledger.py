"""FederationLedger through the typed client: every external function's success path, every
custom error with its exact name and arguments, and every event's fields."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from fedtrail.chain import advance_time, block_timestamp
from fedtrail.errors import (
    ContractRevert,
    DuplicateSubmission,
    InvalidArgument,
    InvalidValuation,
    RoundStateError,
    SiteAlreadyRegistered,
    Unauthorized,
)
from fedtrail.ledger import Ledger, Valuation, checksum
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.weights import WEIGHT_SCALE, onchain_weights
from tests.fixtures.chain import ChainEnv

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


def h(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


@contextmanager
def expect(exc_type: type[ContractRevert], error: str, **args: Any) -> Iterator[None]:
    """pytest.raises for a contract error with its exact name and (some) arguments."""
    with pytest.raises(exc_type) as info:
        yield
    err = info.value
    assert err.error == error, f"expected {error}, got {err.error}: {err}"
    for key, value in args.items():
        assert err.args_by_name[key] == value, (key, err.args_by_name)


def last_event(ledger: Ledger, name: str) -> dict[str, Any]:
    events = ledger.events(name)
    assert events, f"no {name} event"
    return events[-1].args


class Fed:
    """A deployed ledger with registered sites and helpers for the usual steps."""

    def __init__(self, env: ChainEnv, n_sites: int = 3) -> None:
        self.env = env
        self.w3 = env.w3
        self.ledger = env.deploy()
        self.coord = env.coordinator
        self.agg = env.aggregator
        self.sites = env.sites[:n_sites]
        for i, site in enumerate(self.sites):
            self.ledger.register_site(self.coord, site.address, f"hospital-{i}")

    def open(self, model: str = "g0", ttl: int = 3600) -> int:
        deadline = block_timestamp(self.w3) + ttl
        round_id, _ = self.ledger.open_round(self.agg, CID, h(model), deadline)
        return round_id

    def submit(self, round_id: int, site: LocalAccount, tag: str, n: int = 100) -> None:
        self.ledger.submit_update(site, round_id, CID, h(tag), n)

    def submit_all(self, round_id: int, ns: list[int] | None = None) -> None:
        for i, site in enumerate(self.sites):
            self.submit(round_id, site, f"u{round_id}-{i}", (ns or [100] * 99)[i])

    def value(self, round_id: int, scores: list[int], reasons: list[int] | None = None) -> None:
        vals = [
            Valuation(site=s.address, score=sc, reason=(reasons or [0] * 99)[i])
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


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded)


# ------------------------------------------------------------------ constructor and roles


def test_constructor_sets_roles_and_emits_aggregator_changed(embedded: ChainEnv) -> None:
    ledger = embedded.deploy(reputation_alpha=250_000)
    assert ledger.coordinator() == embedded.coordinator.address
    assert ledger.aggregator() == embedded.aggregator.address
    assert ledger.reputation_alpha() == 250_000
    assert ledger.current_round() == 0
    ev = last_event(ledger, "AggregatorChanged")
    assert ev["previousAggregator"] == "0x0000000000000000000000000000000000000000"
    assert ev["newAggregator"] == embedded.aggregator.address


@pytest.mark.parametrize("alpha", [0, 1_000_001])
def test_constructor_rejects_bad_reputation_alpha(embedded: ChainEnv, alpha: int) -> None:
    with expect(InvalidArgument, "InvalidParameter", what="reputationAlpha"):
        embedded.deploy(reputation_alpha=alpha)


def test_constructor_rejects_zero_aggregator(embedded: ChainEnv) -> None:
    with expect(InvalidArgument, "ZeroAddress"):
        Ledger.deploy(embedded.w3, embedded.coordinator, aggregator="0x" + "00" * 20)


def test_register_site_stores_site_and_emits(fed: Fed) -> None:
    site = fed.env.sites[5]
    fed.ledger.register_site(fed.coord, site.address, "St. Elsewhere")
    ev = last_event(fed.ledger, "SiteRegistered")
    assert ev == {"site": site.address, "name": "St. Elsewhere"}
    info = fed.ledger.get_site(site.address)
    assert info is not None and info.registered and info.name == "St. Elsewhere"
    assert fed.ledger.active_site_count() == 4


def test_register_site_errors(fed: Fed) -> None:
    site = fed.env.sites[5]
    with expect(Unauthorized, "NotCoordinator", caller=fed.agg.address):
        fed.ledger.register_site(fed.agg, site.address, "x")
    with expect(InvalidArgument, "ZeroAddress"):
        fed.ledger.register_site(fed.coord, "0x" + "00" * 20, "x")
    with expect(SiteAlreadyRegistered, "SiteAlreadyRegistered", site=fed.sites[0].address):
        fed.ledger.register_site(fed.coord, fed.sites[0].address, "again")


def test_remove_site_keeps_history_and_emits(fed: Fed) -> None:
    gone = fed.sites[0]
    fed.ledger.remove_site(fed.coord, gone.address)
    assert last_event(fed.ledger, "SiteRemoved") == {"site": gone.address}
    info = fed.ledger.get_site(gone.address)
    assert info is not None and not info.registered and info.name == "hospital-0"
    assert fed.ledger.active_site_count() == 2
    assert [s.address for s in fed.ledger.get_sites()] == [s.address for s in fed.sites]
    # a removed site may be registered again without duplicating it in the site list
    fed.ledger.register_site(fed.coord, gone.address, "back")
    assert len(fed.ledger.get_sites()) == 3


def test_remove_site_errors(fed: Fed) -> None:
    with expect(Unauthorized, "NotCoordinator", caller=fed.sites[0].address):
        fed.ledger.remove_site(fed.sites[0], fed.sites[1].address)
    with expect(Unauthorized, "UnknownSite", site=fed.env.outsider.address):
        fed.ledger.remove_site(fed.coord, fed.env.outsider.address)


def test_set_aggregator_hands_over_the_role(fed: Fed) -> None:
    new = fed.env.outsider
    fed.ledger.set_aggregator(fed.coord, new.address)
    assert last_event(fed.ledger, "AggregatorChanged") == {
        "previousAggregator": fed.agg.address,
        "newAggregator": new.address,
    }
    with expect(Unauthorized, "NotAggregator", caller=fed.agg.address):
        fed.open()
    round_id, _ = fed.ledger.open_round(new, CID, h("g0"), block_timestamp(fed.w3) + 60)
    assert round_id == 1


def test_set_aggregator_errors(fed: Fed) -> None:
    with expect(Unauthorized, "NotCoordinator", caller=fed.agg.address):
        fed.ledger.set_aggregator(fed.agg, fed.agg.address)
    with expect(InvalidArgument, "ZeroAddress"):
        fed.ledger.set_aggregator(fed.coord, "0x" + "00" * 20)


# ------------------------------------------------------------------ openRound


def test_open_round_records_start_model_and_emits(fed: Fed) -> None:
    deadline = block_timestamp(fed.w3) + 600
    round_id, _ = fed.ledger.open_round(fed.agg, CID, h("g0"), deadline)
    assert round_id == 1 and fed.ledger.current_round() == 1
    ev = last_event(fed.ledger, "RoundOpened")
    assert ev == {"round": 1, "modelCid": CID, "modelSha256": h("g0"), "deadline": deadline}
    info = fed.ledger.get_round(1)
    assert info.phase == Phase.OPEN and info.deadline == deadline
    assert info.start_cid == CID and info.start_sha256 == h("g0")
    assert info.submission_count == 0 and info.global_cid == ""


def test_open_round_errors(fed: Fed) -> None:
    now = block_timestamp(fed.w3)
    with expect(Unauthorized, "NotAggregator", caller=fed.coord.address):
        fed.ledger.open_round(fed.coord, CID, h("g0"), now + 60)
    with expect(RoundStateError, "DeadlineInPast"):
        fed.ledger.open_round(fed.agg, CID, h("g0"), now - 1)
    with expect(InvalidArgument, "InvalidParameter", what="modelCid"):
        fed.ledger.open_round(fed.agg, "", h("g0"), now + 60)
    with expect(InvalidArgument, "InvalidParameter", what="modelSha256"):
        fed.ledger.open_round(fed.agg, CID, "00" * 32, now + 60)
    fed.open()
    with expect(RoundStateError, "PreviousRoundNotClosed", round=1):
        fed.open()


def test_open_round_must_start_from_last_finalized_model(fed: Fed) -> None:
    r = fed.open("g0")
    fed.submit_all(r)
    fed.value(r, [1, 1, 1])
    fed.finalize(r, "g1")
    with expect(RoundStateError, "StartModelMismatch", expected=h("g1"), given=h("other")):
        fed.open("other")
    assert fed.open("g1") == 2


# ------------------------------------------------------------------ submitUpdate


def test_submit_update_stores_hash_and_emits(fed: Fed) -> None:
    r = fed.open()
    site = fed.sites[1]
    fed.ledger.submit_update(site, r, CID, h("a"), 321)
    ev = last_event(fed.ledger, "UpdateSubmitted")
    assert ev == {"round": r, "site": site.address, "cid": CID, "sha256": h("a"), "numSamples": 321}
    sub = fed.ledger.get_submission(r, site.address)
    assert sub is not None
    assert (sub.sha256, sub.num_samples, sub.cid, sub.weight) == (h("a"), 321, CID, 0)
    assert fed.ledger.submitter_of(r, h("a")) == site.address
    assert fed.ledger.get_round(r).submission_count == 1
    assert fed.ledger.get_submission(r, fed.sites[0].address) is None


def test_submit_update_errors(fed: Fed) -> None:
    outsider = fed.env.outsider
    with expect(Unauthorized, "UnknownSite", site=outsider.address):
        fed.ledger.submit_update(outsider, 1, CID, h("x"), 1)
    with expect(RoundStateError, "UnknownRound", round=1):
        fed.submit(1, fed.sites[0], "x")
    r = fed.open()
    with expect(InvalidArgument, "InvalidParameter", what="numSamples"):
        fed.ledger.submit_update(fed.sites[0], r, CID, h("x"), 0)
    with expect(InvalidArgument, "InvalidParameter", what="cid"):
        fed.ledger.submit_update(fed.sites[0], r, "", h("x"), 1)
    with expect(InvalidArgument, "InvalidParameter", what="sha256"):
        fed.ledger.submit_update(fed.sites[0], r, CID, "00" * 32, 1)
    fed.submit(r, fed.sites[0], "a")
    with expect(DuplicateSubmission, "AlreadySubmitted", round=r, site=fed.sites[0].address):
        fed.submit(r, fed.sites[0], "b")
    with expect(
        DuplicateSubmission,
        "DuplicateUpdate",
        round=r,
        sha256=h("a"),
        firstSubmitter=fed.sites[0].address,
    ):
        fed.submit(r, fed.sites[1], "a")


def test_submit_update_refused_for_removed_site(fed: Fed) -> None:
    r = fed.open()
    fed.ledger.remove_site(fed.coord, fed.sites[2].address)
    with expect(Unauthorized, "UnknownSite", site=fed.sites[2].address):
        fed.submit(r, fed.sites[2], "late")


def test_submit_update_after_deadline_is_refused(fed: Fed) -> None:
    r = fed.open(ttl=60)
    advance_time(fed.w3, 120)
    with expect(RoundStateError, "DeadlinePassed", round=r):
        fed.submit(r, fed.sites[0], "a")


def test_submit_update_in_valued_round_is_wrong_phase(fed: Fed) -> None:
    r = fed.open()
    fed.submit_all(r)
    fed.value(r, [1, 2, 3])
    with expect(RoundStateError, "WrongPhase", round=r, actual=Phase.VALUED, expected=Phase.OPEN):
        fed.submit(r, fed.sites[0], "again")


# ------------------------------------------------------------------ recordValuation


def test_record_valuation_fixes_weights_reputation_and_emits(fed: Fed) -> None:
    r = fed.open()
    ns = [100, 250, 50]
    fed.submit_all(r, ns)
    scores = [900_000, 400_000, 0]
    fed.value(r, scores, reasons=[0, 3, 6])
    order = sorted(range(3), key=lambda i: int(fed.sites[i].address, 16))
    expected = dict(
        zip(
            [fed.sites[i].address for i in order],
            onchain_weights([ns[i] for i in order], [scores[i] for i in order]),
            strict=True,
        )
    )
    subs = fed.ledger.get_submissions(r)
    assert [s.site for s in subs] == sorted(expected, key=lambda a: int(a, 16))
    assert {s.site: s.weight for s in subs} == expected
    assert sum(s.weight for s in subs) == WEIGHT_SCALE
    zero = next(s for s in subs if s.site == fed.sites[2].address)
    assert zero.weight == 0 and zero.score == 0 and zero.reason == 6
    assert fed.ledger.get_round(r).phase == Phase.VALUED
    valued = fed.ledger.events("UpdateValued", argument_filters={"round": r})
    assert {
        e.args["site"]: (e.args["score"], e.args["reason"], e.args["weight"], e.args["reputation"])
        for e in valued
    } == {
        fed.sites[i].address: (scores[i], [0, 3, 6][i], expected[fed.sites[i].address], scores[i])
        for i in range(3)
    }
    total = last_event(fed.ledger, "RoundValued")
    assert total == {
        "round": r,
        "totalWeightBasis": sum(n * s for n, s in zip(ns, scores, strict=True)),
    }
    site = fed.ledger.get_site(fed.sites[0].address)
    assert site is not None and site.reputation == 900_000 and site.valued_rounds == 1


def test_reputation_is_an_ema_of_scores(fed: Fed) -> None:
    alpha = fed.ledger.reputation_alpha()
    r = fed.open("g0")
    fed.submit_all(r)
    fed.value(r, [1_000_000, 500_000, 100])
    fed.finalize(r, "g1")
    r = fed.open("g1")
    fed.submit_all(r)
    fed.value(r, [0, 500_000, 1_000_000])
    reps = [fed.ledger.get_site(s.address).reputation for s in fed.sites]  # type: ignore[union-attr]
    assert reps == [
        (alpha * 0 + (10**6 - alpha) * 1_000_000) // 10**6,
        500_000,
        (alpha * 1_000_000 + (10**6 - alpha) * 100) // 10**6,
    ]


def test_record_valuation_errors(fed: Fed) -> None:
    r = fed.open()
    fed.submit(r, fed.sites[0], "a")
    fed.submit(r, fed.sites[1], "b")
    a, b, c = (s.address for s in fed.sites)
    with expect(RoundStateError, "RoundStillOpen", round=r):
        fed.raw_valuation(r, sorted([a, b], key=lambda x: int(x, 16)), [1, 1], [0, 0])
    advance_time(fed.w3, 7200)
    lo, hi = sorted([a, b], key=lambda x: int(x, 16))
    with expect(Unauthorized, "NotAggregator", caller=fed.coord.address):
        fed.ledger._transact(fed.coord, fed.ledger._fn.recordValuation(r, [lo, hi], [1, 1], [0, 0]))
    with expect(InvalidValuation, "LengthMismatch", sites=2, scores=1, reasons=2):
        fed.raw_valuation(r, [lo, hi], [1], [0, 0])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        fed.raw_valuation(r, [hi, lo], [1, 1], [0, 0])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        fed.raw_valuation(r, [lo, lo], [1, 1], [0, 0])
    with expect(InvalidValuation, "MissingScores", round=r, expected=2, given=1):
        fed.raw_valuation(r, [lo], [1], [0])
    with_c = sorted([a, c], key=lambda x: int(x, 16))
    with expect(InvalidValuation, "NotSubmitted", round=r, site=c):
        fed.raw_valuation(r, with_c, [1, 1], [0, 0])
    with expect(InvalidValuation, "ScoreOutOfRange", site=hi, score=1_000_001):
        fed.raw_valuation(r, [lo, hi], [1, 1_000_001], [0, 0])
    with expect(InvalidValuation, "ZeroTotalWeight", round=r):
        fed.raw_valuation(r, [lo, hi], [0, 0], [4, 5])
    with expect(RoundStateError, "UnknownRound", round=9):
        fed.raw_valuation(9, [lo, hi], [1, 1], [0, 0])
    fed.raw_valuation(r, [lo, hi], [1, 1], [0, 0])
    with expect(RoundStateError, "WrongPhase", round=r, actual=Phase.VALUED, expected=Phase.OPEN):
        fed.raw_valuation(r, [lo, hi], [1, 1], [0, 0])


def test_valuation_client_rejects_out_of_range_scores_before_sending() -> None:
    with pytest.raises(Exception, match="outside"):
        Valuation(site="0x" + "11" * 20, score=-1, reason=0)


# ------------------------------------------------------------------ finalizeRound / cancelRound


def test_finalize_round_records_global_model_and_emits(fed: Fed) -> None:
    r = fed.open()
    fed.submit_all(r)
    fed.value(r, [1, 1, 1])
    fed.finalize(r, "g1")
    ev = last_event(fed.ledger, "RoundFinalized")
    assert ev == {
        "round": r,
        "globalCid": CID,
        "globalSha256": h("g1"),
        "logCid": CID,
        "logSha256": h("logg1"),
    }
    info = fed.ledger.get_round(r)
    assert info.phase == Phase.FINALIZED
    assert (info.global_cid, info.global_sha256, info.log_cid, info.log_sha256) == (
        CID,
        h("g1"),
        CID,
        h("logg1"),
    )
    assert fed.ledger.last_finalized_round() == r


def test_finalize_round_errors(fed: Fed) -> None:
    with expect(RoundStateError, "UnknownRound", round=1):
        fed.finalize(1, "g1")
    r = fed.open()
    with expect(RoundStateError, "WrongPhase", round=r, actual=Phase.OPEN, expected=Phase.VALUED):
        fed.finalize(r, "g1")
    fed.submit_all(r)
    fed.value(r, [1, 1, 1])
    with expect(Unauthorized, "NotAggregator", caller=fed.coord.address):
        fed.ledger.finalize_round(
            fed.coord, r, global_cid=CID, global_sha256=h("g"), log_cid=CID, log_sha256=h("l")
        )
    for field, kwargs in [
        ("globalSha256", {"global_sha256": "00" * 32}),
        ("logSha256", {"log_sha256": "00" * 32}),
        ("globalCid", {"global_cid": ""}),
        ("logCid", {"log_cid": ""}),
    ]:
        args = {"global_cid": CID, "global_sha256": h("g"), "log_cid": CID, "log_sha256": h("l")}
        args.update(kwargs)
        with expect(InvalidArgument, "InvalidParameter", what=field):
            fed.ledger.finalize_round(fed.agg, r, **args)


def test_cancel_round_lets_the_next_round_start_from_last_final_model(fed: Fed) -> None:
    r = fed.open("g0", ttl=60)
    with expect(RoundStateError, "RoundStillOpen", round=r):
        fed.ledger.cancel_round(fed.agg, r)
    advance_time(fed.w3, 120)
    with expect(Unauthorized, "NotAggregator", caller=fed.coord.address):
        fed.ledger.cancel_round(fed.coord, r)
    fed.ledger.cancel_round(fed.agg, r)
    assert last_event(fed.ledger, "RoundCancelled") == {"round": r}
    assert fed.ledger.get_round(r).phase == Phase.CANCELLED
    with expect(
        RoundStateError, "WrongPhase", round=r, actual=Phase.CANCELLED, expected=Phase.OPEN
    ):
        fed.ledger.cancel_round(fed.agg, r)
    assert fed.open("g0") == 2


def test_get_round_of_unknown_round_raises(fed: Fed) -> None:
    with expect(RoundStateError, "UnknownRound", round=5):
        fed.ledger.get_round(5)


def test_ledger_refuses_an_address_without_the_contract(embedded: ChainEnv) -> None:
    from fedtrail.errors import ContractNotFound

    with pytest.raises(ContractNotFound, match="no contract"):
        Ledger.connect(embedded.w3, embedded.outsider.address)


# ------------------------------------------------------------------ every chain


def test_full_round_on_every_chain(any_chain: ChainEnv) -> None:
    """The same lifecycle and error mapping on the embedded chain, Anvil and Ganache."""
    fed = Fed(any_chain, n_sites=3)
    r = fed.open("g0")
    fed.submit_all(r, [10, 20, 30])
    with expect(DuplicateSubmission, "AlreadySubmitted", round=r, site=fed.sites[0].address):
        fed.submit(r, fed.sites[0], "again")
    with expect(Unauthorized, "UnknownSite", site=any_chain.outsider.address):
        fed.ledger.submit_update(any_chain.outsider, r, CID, h("o"), 1)
    fed.value(r, [500_000, 500_000, 1_000_000])
    fed.finalize(r, "g1")
    subs = fed.ledger.get_submissions(r)
    assert sum(s.weight for s in subs) == WEIGHT_SCALE
    assert [s.site for s in subs] == sorted(
        (checksum(s.address) for s in fed.sites), key=lambda a: int(a, 16)
    )
    assert fed.ledger.get_round(r).phase == Phase.FINALIZED
    assert fed.open("g1") == 2


@pytest.mark.anvil
def test_concurrent_senders_with_one_key_never_collide_on_nonces(anvil_url: str) -> None:
    """Threads (and a second client object) sign with the same key at once: every transaction
    lands, none is refused for its nonce."""
    from concurrent.futures import ThreadPoolExecutor

    from fedtrail.chain import connect, dev_account

    coord = dev_account(0)
    ledger, _ = Ledger.deploy(connect(anvil_url), coord)
    other = Ledger.connect(connect(anvil_url), ledger.address)  # a second connection, same process
    sites = [dev_account(200 + i) for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(
                lambda i: (ledger if i % 2 else other).register_site(
                    coord, sites[i].address, f"s{i}"
                ),
                range(len(sites)),
            )
        )
    assert len({r.tx_hash for r in results}) == len(sites)
    assert {s.address for s in ledger.get_sites()} == {s.address for s in sites}
