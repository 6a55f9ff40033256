"""``sites.registry`` (attack a65) as ``scripts/independent/reader.py`` implements it from the
README (*Registry changes inside a round*) against ``audit verify``'s ``_check_registry`` over
``RegistryHistory``, on the same random registry histories: participants at ``RoundOpened``,
moves after it up to the (score) reveal deadline inclusive, declines, peer vectors, and the
boundaries (the opening block's later logs, a block stamped exactly at a deadline). A misreading
(moves bounded by the commit deadline, or participants counted at the first move) must disagree
somewhere, so the comparison can fail."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType
from typing import Any

from eth_utils import to_checksum_address

from fedtrail.auditor.verify import _check_registry
from fedtrail.ledger import RoundInfo, SiteInfo, Submission
from fedtrail.ledger.records import (
    PeerRoundInfo,
    Registrations,
    RegistryHistory,
    decline_commitment,
)
from fedtrail.protocol.codes import Decline, Phase
from fedtrail.protocol.peers import PeerVote

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"
ROUND = 7
TERMS = "ab" * 32
SITES = [to_checksum_address(f"0x{i:02x}" + "5a" * 19) for i in (0x11, 0x2F, 0x93, 0xC4, 0xE0)]


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _reader()


class FakeLedger:
    def __init__(self, peer: PeerRoundInfo | None, voted: list[str]) -> None:
        self.peer, self.voted = peer, voted

    def get_peer_round(self, round_id: int) -> PeerRoundInfo | None:
        return self.peer

    def peer_votes(self, round_id: int) -> list[PeerVote]:
        return [PeerVote(validator=v, scores=()) for v in self.voted]


def _case(rng: random.Random) -> dict[str, Any]:
    """A random history around a round opened at (5, k) with blocks stamped 10 s apart."""
    opened = (5, rng.randrange(0, 4))
    events: list[tuple[tuple[int, int], str, str, int | None]] = []
    used: set[tuple[int, int]] = {opened}
    for site in SITES[:4]:  # four sites registered early
        pos = (1, len(events))
        used.add(pos)
        events.append((pos, "registered", site, None))
    for _ in range(rng.randrange(0, 6)):
        pos = (rng.randrange(2, 13), rng.randrange(0, 5))
        if pos in used:
            continue
        used.add(pos)
        kind = rng.choice(["registered", "removed", "cap", "budget"])
        value = None if kind in ("registered", "removed") else rng.randrange(1, 10**6)
        events.append((pos, kind, rng.choice(SITES), value))
    reveal_dl = rng.choice([60, 70, 75, 80, 90])  # block b is stamped 10 * b
    peer = rng.random() < 0.4
    score_dl = reveal_dl + rng.choice([0, 10, 20, 30]) if peer else None
    subs = []
    for site in SITES:
        roll = rng.random()
        if roll < 0.15:
            continue  # never committed
        revealed = roll > 0.45
        declines = not revealed and rng.random() < 0.4
        commitment = (
            decline_commitment(site, ROUND, TERMS, rng.choice(list(Decline)))
            if declines
            else f"{rng.getrandbits(256):064x}"
        )
        weight = rng.choice([0, 10**17]) if revealed else 0
        subs.append(
            Submission(
                round=ROUND,
                site=site,
                cid="",
                sha256="",
                num_samples=1,
                score=0,
                reason=0,
                weight=weight,
                commitment=commitment,
                commit_order=0,
                revealed=revealed,
            )
        )
    voted = [s for s in SITES if rng.random() < 0.6] if peer else []
    phase = rng.choice([Phase.FINALIZED, Phase.FINALIZED, Phase.CANCELLED])
    return {
        "opened": opened,
        "events": sorted(events),
        "reveal_dl": reveal_dl,
        "peer": peer,
        "score_dl": score_dl,
        "subs": subs,
        "voted": voted,
        "phase": phase,
    }


def _product(case: dict[str, Any]) -> bool:
    events = case["events"]
    history = RegistryHistory(
        registrations=Registrations(
            events=tuple((p, s, "n") for p, k, s, _ in events if k == "registered"), finalized={}
        ),
        changes=tuple((p, k, s, v) for p, k, s, v in events if k != "registered"),
        opened={ROUND: case["opened"]},
        valued={},
        stamps={p[0]: 10 * p[0] for p, k, _, _ in events if k != "registered"},
    )
    peer = (
        PeerRoundInfo(
            score_commit_deadline=case["reveal_dl"],
            score_reveal_deadline=case["score_dl"],
            quorum=1,
            commit_count=0,
            vote_count=0,
        )
        if case["peer"]
        else None
    )
    info = RoundInfo(
        id=ROUND,
        phase=case["phase"],
        commit_deadline=case["reveal_dl"] - 30,
        reveal_deadline=case["reveal_dl"],
        opened_at=50,
        active_at_open=4,
        submission_count=0,
        start_cid="",
        start_sha256="",
        terms_cid="",
        terms_sha256=TERMS,
        global_cid="",
        global_sha256="",
        log_cid="",
        log_sha256="",
    )
    registry = [
        SiteInfo(
            address=s,
            name="n",
            max_samples=1,
            reputation=0,
            active_from=1,
            registered=True,
            valued_rounds=0,
        )
        for s in SITES
    ]
    ledger: Any = FakeLedger(peer, case["voted"])
    _, passed, _ = _check_registry(ledger, info, case["subs"], registry, history)
    return passed


def _independent(case: dict[str, Any], bound: str = "reveal") -> bool:
    subs = case["subs"]
    reveal_dl = case["reveal_dl"] if bound == "reveal" else case["reveal_dl"] - 30
    until = max(reveal_dl, case["score_dl"] or 0)
    ok, _ = R.registry_rule(
        case["opened"],
        [(p, k, s.lower(), v) for p, k, s, v in case["events"]],
        {b: 10 * b for b in range(0, 14)},
        reveal_dl,
        until,
        {s.site.lower() for s in subs if s.revealed},
        {
            s.site.lower()
            for s in subs
            if not s.revealed
            and R.is_decline(bytes.fromhex(s.commitment), s.site, ROUND, bytes.fromhex(TERMS))
        },
        {v.lower() for v in case["voted"]},
        int(case["phase"]),
        any(s.revealed and s.weight > 0 for s in subs),
        case["peer"],
    )
    return bool(ok)


def test_the_readers_rule_gives_verifys_verdict() -> None:
    rng = random.Random(176)
    cases = [_case(rng) for _ in range(600)]
    verdicts = [_product(c) for c in cases]
    mine = [_independent(c) for c in cases]
    assert [i for i, (a, b) in enumerate(zip(verdicts, mine, strict=True)) if a != b] == []
    assert 10 <= verdicts.count(False) <= 590, verdicts.count(False)  # both verdicts occur
    # a misreading (moves counted only up to the commit deadline) disagrees somewhere
    assert any(_independent(c, bound="commit") != v for c, v in zip(cases, verdicts, strict=True))
