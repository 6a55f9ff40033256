"""The ServerApp's round driver, free of Flower types: one Flower round is one ledger round.

    open the round on the ledger (the aggregator service, its own key)
    -> one "train" exchange: every site trains, encodes and commits on chain, waits for the
       chain's clock to pass the commit deadline, stores its update and reveals it, replies
    -> check every reply against the chain and its signature: an unattributable reply (its
       signature does not recover to the site it names) is reported and ignored; a reply the
       site signed that contradicts its revealed update is handed to the service as evidence
       (``AggregatorService.submit_evidence``, kept with the service's state)
    -> the aggregator service values and finalizes the round from the chain alone, except that
       a site with signed evidence against it is scored 0 (``CONTRADICTED``) and the evidence is
       written into the round's log (``AggregatorService.run(until_round=r)``)

One exchange per round, not a commit exchange and a reveal exchange: the SuperNode starts a
fresh ClientApp process for every message (flwr 1.42, subprocess isolation), and on a loaded
2-core machine that start (flwr, torch, web3, the site's data) took longer than a 20 s commit
window, so two exchanges cost a second start per round and made the commit window the start's
hostage. In one message the ClientApp runs the node's own restart-safe steps, which already wait
for the commit deadline before revealing (as ``fedtrail node run`` does). Nothing is trusted
to the wait: the ledger refuses a reveal before the commit deadline and any commit after it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedtrail.aggregator.service import AggregatorService
from fedtrail.chain import next_block_timestamp
from fedtrail.flower.replies import InvalidReply, ReplyCheck, SiteReply, check_reply
from fedtrail.fsutil import atomic_write
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.evidence import SignedReply

log = logging.getLogger("fedtrail.flower.server")


@dataclass(frozen=True, kw_only=True)
class Received:
    """One SuperNode's answer to one exchange: its reply's fields, or why there is none."""

    node_id: int
    reply: Mapping[str, Any] | None
    error: str = ""


Exchange = Callable[[str, Mapping[str, Any], float], list[Received]]
"""``exchange(message_type, request, timeout)``: sends ``request`` as a message of that type to
every SuperNode and returns what came back within ``timeout`` seconds."""


@dataclass
class RoundReport:
    """What the Flower side of one round saw, next to the chain's record; written as
    ``flower-round-<r>.json`` in the aggregator's folder."""

    round: int
    phase: str = ""
    global_cid: str = ""
    global_sha256: str = ""
    replies: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    """The signed replies the service accepted as evidence (the site's update scored 0)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "phase": self.phase,
            "global_cid": self.global_cid,
            "global_sha256": self.global_sha256,
            "replies": self.replies,
            "ignored": self.ignored,
            "weights": {k: str(v) for k, v in self.weights.items()},
            "evidence": self.evidence,
        }


class LedgerRounds:
    """Runs ledger rounds over a Flower exchange with the aggregator's service."""

    def __init__(
        self,
        *,
        service: AggregatorService,
        exchange: Exchange,
        folder: Path,
        grace_seconds: float = 30.0,
    ) -> None:
        self.service = service
        self.ledger = service.ledger
        self.exchange = exchange
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.grace = grace_seconds
        self.sites: dict[int, str] = {}
        """SuperNode id -> the site address it first answered for."""

    def _now(self) -> int:
        return next_block_timestamp(self.ledger.w3)

    def current_or_open(self) -> int:
        """The round to run: the latest one if still open or valued (a restarted ServerApp
        resumes it), else a newly opened one."""
        current = self.ledger.current_round()
        if current and self.ledger.get_round(current).phase in (Phase.OPEN, Phase.VALUED):
            log.info(
                "round %d is still %s: resuming it",
                current,
                self.ledger.get_round(current).phase.label,
            )
            return current
        return self.service.open_next()

    def _check(
        self, round_id: int, got: list[Received], report: RoundReport
    ) -> tuple[list[tuple[int, str, ReplyCheck]], list[SignedReply]]:
        out: list[tuple[int, str, ReplyCheck]] = []
        evidence: list[SignedReply] = []
        for rec in got:
            if rec.reply is None:
                log.warning(
                    "round %d: SuperNode %d sent no reply: %s",
                    round_id,
                    rec.node_id,
                    rec.error,
                )
                report.ignored.append({"node_id": rec.node_id, "error": rec.error or "no reply"})
                continue
            try:
                reply = SiteReply.from_config(rec.reply)
            except InvalidReply as exc:
                log.warning(
                    "round %d: SuperNode %d's reply is malformed: %s",
                    round_id,
                    rec.node_id,
                    exc,
                )
                report.ignored.append({"node_id": rec.node_id, "error": str(exc)})
                continue
            sender = self.sites.setdefault(rec.node_id, reply.site)
            check = check_reply(self.ledger, reply, round_id=round_id, sender=sender)
            if check.evidence:
                log.warning(
                    "round %d: site %s signed a reply (via SuperNode %d) that contradicts its "
                    "on-chain submission in %s: evidence, its update will be scored 0",
                    round_id,
                    reply.site,
                    rec.node_id,
                    ", ".join(m for m in check.mismatches if m not in ("site", "round")),
                )
                evidence.append(
                    reply.signed(chain_id=self.ledger.chain_id, ledger=self.ledger.address)
                )
            elif not check.truthful and not check.attributable:
                log.warning(
                    "round %d: SuperNode %d's reply for site %s is unattributable (its signature "
                    "recovers to %s, not the site): ignored, never held against the site",
                    round_id,
                    rec.node_id,
                    reply.site,
                    check.signer or "nothing",
                )
                report.ignored.append(
                    {
                        "node_id": rec.node_id,
                        "site": sender,
                        "mismatches": list(check.mismatches),
                        "unattributable": True,
                    }
                )
            elif not check.truthful:
                log.warning(
                    "round %d: SuperNode %d (site %s) replied %s, which differs from the chain "
                    "in %s; reply ignored (the chain holds cid %s, sha256 %s, %d samples)",
                    round_id,
                    rec.node_id,
                    sender,
                    reply.to_config(),
                    ", ".join(check.mismatches),
                    check.chain_cid or "-",
                    check.chain_sha256 or "-",
                    check.chain_num_samples,
                )
                report.ignored.append(
                    {"node_id": rec.node_id, "site": sender, "mismatches": list(check.mismatches)}
                )
            out.append((rec.node_id, sender, check))
        return out, evidence

    def begin(self) -> tuple[int, dict[str, Any] | None]:
        """Opens (or resumes) the round to run; its id and the ``train`` request to send every
        site, or None when the round is past its commit window (nothing left for sites to do:
        :meth:`finish` values and finalizes it from the chain)."""
        round_id = self.current_or_open()
        info = self.ledger.get_round(round_id)
        if info.phase != Phase.OPEN or self._now() > info.commit_deadline:
            return round_id, None
        return round_id, {
            "round": round_id,
            "wait-seconds": float(info.reveal_deadline - self._now()),
            "start-cid": info.start_cid,
            "start-sha256": info.start_sha256,
            "ledger": self.ledger.address,
            "chain-id": self.ledger.chain_id,
        }

    def finish(self, round_id: int, got: list[Received] | None) -> RoundReport:
        """Checks the replies ``got`` (None: no exchange took place) against the chain, hands
        the signed contradicting ones to the service as evidence, lets the service value and
        finalize the round from the chain, and reports it (``flower-round-<r>.json``)."""
        report = RoundReport(round=round_id)
        checks: list[tuple[int, str, ReplyCheck]] = []
        if got is not None:
            checks, evidence = self._check(round_id, got, report)
            if evidence and self.ledger.get_round(round_id).phase == Phase.OPEN:
                accepted = self.service.submit_evidence(round_id, evidence)
                report.evidence = [e.to_json() for e in accepted]
        # Value and finalize from the chain; the only part the replies take is the signed
        # evidence above, which the service re-checks against the chain.
        self.service.run(until_round=round_id)
        info = self.ledger.get_round(round_id)
        report.phase = info.phase.label
        report.global_cid, report.global_sha256 = info.global_cid, info.global_sha256
        report.weights = {s.site: s.weight for s in self.ledger.get_submissions(round_id)}
        for node_id, sender, check in checks:
            final = check_reply(self.ledger, check.reply, round_id=round_id, sender=sender)
            report.replies.append({"node_id": node_id, **final.to_json()})
        atomic_write(
            self.folder / f"flower-round-{round_id}.json",
            json.dumps(report.to_json(), indent=2).encode(),
        )
        log.info(
            "round %d %s on chain: global %s", round_id, report.phase, report.global_cid or "-"
        )
        return report

    def run_round(self) -> RoundReport:
        """Runs one ledger round to its end (finalized or cancelled) and reports it."""
        round_id, request = self.begin()
        got = None
        if request is not None:
            wait = float(request["wait-seconds"])
            got = self.exchange("train", request, wait + self.grace)
        return self.finish(round_id, got)
