"""``terms.declined`` weighing a ``windows`` decline (h-296's leftover of a132/a133): nodes
decline a peer round whose score windows on chain are not its terms' (a132), terms naming
score windows under a round opened as an aggregator round (a133), and a peer round opened
under terms that say the aggregator values it. The check confirmed a ``windows`` decline only
for the commit and reveal windows, so such a decline in a round that paid the others was
noted, not confirmed. A ``windows`` decline where every window on chain is the terms' stays
noted: the reason is the site's word, and any site may decline any round (a false reason
must not fail the aggregator's round, or one site could fail every round)."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from fedtrail.auditor.verify import _check_declined
from fedtrail.ledger import Submission, decline_commitment
from fedtrail.ledger.records import PeerRoundInfo, RoundInfo, SiteInfo
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.protocol.codes import Decline, Phase
from fedtrail.protocol.terms import RoundTerms
from fedtrail.valuation.limits import ThresholdLimits

OPENED, COMMIT, REVEAL = 1_000, 3_600, 3_600
TERMS_SHA = "ab" * 32
PAID, DECLINER = "0x" + "11" * 20, "0x" + "22" * 20


class _Chain:
    """The two reads ``terms.declined`` makes of the ledger."""

    def __init__(self, peer: PeerRoundInfo | None) -> None:
        self.peer = peer
        self.peer_reads = 0

    def get_sites(self) -> list[SiteInfo]:
        return [SiteInfo(a, True, n, 0, 0, 100, 1) for a, n in ((PAID, "a"), (DECLINER, "b"))]

    def get_peer_round(self, round_id: int) -> PeerRoundInfo | None:
        self.peer_reads += 1
        return self.peer


def _terms(score_windows: tuple[int, int] | None) -> RoundTerms:
    return RoundTerms(
        round=1,
        aggregation_rule=asdict(AggregationRule()),
        valuation={"method": "shapley", "metric": "loss", "standing": True}
        if score_windows is None
        else {"mode": "peers", "method": "shapley", "metric": "loss", "standing": True},
        model_spec={},
        spec_hash="00" * 32,
        seed=0,
        validation_sha256="cd" * 32,
        validation_images=10,
        commit_seconds=COMMIT,
        reveal_seconds=REVEAL,
        score_commit_seconds=None if score_windows is None else score_windows[0],
        score_reveal_seconds=None if score_windows is None else score_windows[1],
    )


def _declined(
    terms: RoundTerms, peer: tuple[int, int] | None, reason: Decline = Decline.WINDOWS
) -> tuple[bool, str, int]:
    """``terms.declined`` of a finalized round that paid one site while the other declined
    with ``reason``; ``peer``: the chain's score windows (None: an aggregator round)."""
    reveal_deadline = OPENED + COMMIT + REVEAL
    info = RoundInfo(
        id=1,
        phase=Phase.FINALIZED,
        commit_deadline=OPENED + COMMIT,
        reveal_deadline=reveal_deadline,
        opened_at=OPENED,
        active_at_open=2,
        submission_count=1,
        start_cid="",
        start_sha256="",
        terms_cid="",
        terms_sha256=TERMS_SHA,
        global_cid="",
        global_sha256="",
        log_cid="",
        log_sha256="",
    )
    record = None
    if peer is not None:
        record = PeerRoundInfo(
            score_commit_deadline=reveal_deadline + peer[0],
            score_reveal_deadline=reveal_deadline + peer[0] + peer[1],
            quorum=1,
            commit_count=1,
            vote_count=1,
        )
    paid = Submission(1, PAID, "cid", "ef" * 32, 10, 1, 0, 10**18, "00" * 32, 1, True)
    decline = decline_commitment(DECLINER, 1, TERMS_SHA, reason)
    declined = Submission(1, DECLINER, "", "", 0, 0, 0, 0, decline, 2, False)
    chain = _Chain(record)
    name, passed, detail = _check_declined(
        chain,  # type: ignore[arg-type]
        info,
        terms,
        ThresholdLimits(),
        [paid, declined],
        chain.get_sites(),
    )
    assert name == "terms.declined"
    return passed, detail, chain.peer_reads


@pytest.mark.parametrize(
    ("terms", "peer", "why"),
    [
        # a132: the terms' score windows 600 s / 600 s, the chain's 10 s / 10 s
        (_terms((600, 600)), (10, 10), "the chain's score windows are 10 s / 10 s"),
        # a133: score windows promised, the round opened on chain as an aggregator round
        (_terms((600, 600)), None, "the chain opened no peer round"),
        # its reverse: a peer round on chain, terms that say the aggregator values it
        (_terms(None), (600, 600), "the terms name none"),
    ],
    ids=["a132-score-windows", "a133-no-peer-round", "peer-round-under-aggregator-terms"],
)
def test_a_windows_decline_the_chain_bears_out_is_confirmed(
    terms: RoundTerms, peer: tuple[int, int] | None, why: str
) -> None:
    passed, detail, _ = _declined(terms, peer)
    assert not passed, detail
    assert "this audit's [accept] refuses them too" in detail and why in detail, detail


@pytest.mark.parametrize(
    ("terms", "peer"),
    [(_terms((600, 600)), (600, 600)), (_terms(None), None)],
    ids=["peer-round-as-promised", "aggregator-round-as-promised"],
)
def test_a_windows_decline_the_chain_does_not_bear_out_is_only_noted(
    terms: RoundTerms, peer: tuple[int, int] | None
) -> None:
    passed, detail, _ = _declined(terms, peer)
    assert passed and detail.startswith("noted, not failed"), detail


def test_the_peer_record_is_read_only_to_weigh_a_windows_decline() -> None:
    *_, reads = _declined(_terms(None), None, Decline.PRIVACY)
    assert reads == 0


def test_a_peer_round_under_aggregator_terms_is_stated_once() -> None:
    """The check of a peer round under terms that promise no peer scoring has one home
    (``valuation_mode_difference``): it was also a branch of ``window_differences``' score
    window comparison, so the confirmed reason stated it twice."""
    passed, detail, _ = _declined(_terms(None), (600, 600))
    assert not passed, detail
    assert detail.count("opened a peer round") == 1, detail
