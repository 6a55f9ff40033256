"""Attack a11 ``withhold`` in a peer round (on Anvil + IPFS): the aggregator is a pure combiner
there, and the record that the round's scorers could not use an update is the contract's
PEER_REJECTED (the median of the validators' scores: each scores an update it cannot read 0).

Sites 2 and 3 train with DP-SGD under the composed rule; site 3 declares 1 micro-epsilon every
round and never publishes its round-1 blob (every other reader's store refuses it). Round 1: the
validators cannot read it (PEER_REJECTED). Round 2: each validator's history of site 3 holds that
round-1 spend, missing from its store and rejected on chain: ``EARLIER SPEND UNAVAILABLE`` binds,
every honest validator scores site 3's readable round-2 update 0 and the median rejects it,
while the honest DP site is weighted; ``audit verify`` fails only site 3's own declarations.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.errors import ContentNotFound
from fedtrail.ledger import Ledger
from fedtrail.node.config import PrivacyConfig
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.roundlog import RoundLog
from tests.aggregator.peer_setup import pass_deadline, peer_federation

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
]


class _Unpublished:
    """A reader's store once a site withholds its blob: ``cids`` are not retrievable here."""

    def __init__(self, store: Any, cids: set[str]) -> None:
        self._store, self._cids = store, cids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get(self, cid: str, sha256: str, **kwargs: Any) -> bytes:
        if cid in self._cids:
            raise ContentNotFound(f"{cid} is not retrievable (never published)")
        return bytes(self._store.get(cid, sha256, **kwargs))


def test_validators_reject_a_composed_spend_over_a_blob_never_published(
    anvil_url: str,
    ipfs_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=4, dp_delta=1e-5)
    ledger, service = fed.ledger, fed.service
    dp = PrivacyConfig(enabled=True)
    nodes = [fed.nodes[0], fed.nodes[1], fed.node(2, privacy=dp), fed.node(3, privacy=dp)]
    honest_dp, withholder = nodes[2].address, nodes[3].address
    withheld: set[str] = set()
    unpublished = _Unpublished(fed.store, withheld)
    for n in nodes[:3]:  # every reader but the withholder's own node
        n.store = n.scorer.store = unpublished  # type: ignore[assignment]
    service.store = unpublished  # type: ignore[assignment]
    reveal = Ledger.reveal_update

    def declares_one(self: Ledger, signer: Any, *args: Any, **kwargs: Any) -> Any:
        if signer.address == withholder:
            kwargs["epsilon_micro"] = 1
        return reveal(self, signer, *args, **kwargs)

    monkeypatch.setattr(Ledger, "reveal_update", declares_one)
    caplog.set_level(logging.WARNING)

    for expected in (1, 2):
        r = service.open_next()
        assert r == expected
        info, peer = ledger.get_round(r), ledger.get_peer_round(r)
        assert peer is not None
        for n in nodes:
            n.participate(r)
        pass_deadline(ledger, info.commit_deadline)
        for n in nodes:
            n.participate(r)
        sub = ledger.get_submission(r, withholder)
        assert sub is not None and sub.revealed
        if r == 1:
            withheld.add(sub.cid)  # revealed, never published
        assert {s.site: s.epsilon_micro for s in ledger.privacy_spends(r)}[withholder] == 1
        pass_deadline(ledger, info.reveal_deadline)
        for n in nodes:
            n.scorer.score(r)
        pass_deadline(ledger, peer.score_commit_deadline)
        for n in nodes:
            n.scorer.score(r)
        assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
        outcome = service.step()
        assert outcome is not None and outcome.phase == Phase.FINALIZED

        subs = {s.site: s for s in ledger.get_submissions(r)}
        assert (subs[withholder].weight, subs[withholder].reason) == (0, Reason.PEER_REJECTED)
        assert subs[honest_dp].weight > 0 and subs[honest_dp].reason == Reason.OK
        # no honest update is scored 0 for its spend (one may be rejected for its worth)
        assert not [m for m in caplog.messages if "privacy spend" in m and withholder not in m]
        order = sorted(subs, key=lambda a: int(a, 16))
        for vote in ledger.peer_votes(r):
            if vote.validator != withholder:
                assert vote.scores[order.index(withholder)] == 0
        final = ledger.get_round(r)
        entry = RoundLog.from_bytes(fed.store.get(final.log_cid, final.log_sha256)).site(withholder)
        assert entry is not None and entry.status == "malformed"  # the aggregator's reading
        # why each other validator scored it 0 (a peer round's log states the median, not the
        # reason); the withholder's own scorer reads its blob and logs DIFFERS
        mine = f"round {r}: {withholder}'s update"
        why = [
            rec.getMessage()
            for rec in caplog.records
            if rec.name == "fedtrail.node.scoring" and rec.getMessage().startswith(mine)
        ]
        if r == 1:
            assert sum("update not retrievable" in w for w in why) == 3, why
        else:
            assert (
                sum(
                    "scored 0: privacy spend EARLIER SPEND UNAVAILABLE: round 1's update" in w
                    and "scored 0 as PEER_REJECTED on chain" in w
                    for w in why
                )
                == 3
            ), why
        audit = verify_round(ledger, unpublished, r)  # type: ignore[arg-type]
        failed = {c.name: c.detail for c in audit.checks if c.applicable and not c.passed}
        assert set(failed) == {"privacy.spend"}, failed
        assert withholder[:10] in failed["privacy.spend"]
        assert honest_dp[:10] not in failed["privacy.spend"]
