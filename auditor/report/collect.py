"""Everything the report shows, read once from the chain and the store into plain records.

The chain is trusted for what it stores; every blob is fetched by CID and checked against the
sha256 the chain (or the hash-checked log) records. What a log names is untrusted: heatmaps are
capped in number, bytes and pixels and must be PNGs, per image, per round and for the whole page
(:class:`ImageBudget`: one 4 MB image listed 32 times in every round's log embedded 170 MB of
base64 per round), so hostile logs cannot make the report fetch or embed without bound. A
problem with a log or an image is recorded as text, never raised: the report still shows the
rest.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fedtrail.auditor.peers import PeerTable, peer_table, read_peer_record
from fedtrail.errors import FedtrailError
from fedtrail.ledger import Ledger, RoundInfo, SiteInfo, Submission
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.names import with_former
from fedtrail.protocol.roundlog import MAX_LOG_BYTES, RoundLog
from fedtrail.storage.store import ContentStore

if TYPE_CHECKING:
    from fedtrail.auditor.privacy import PrivacyAudit
    from fedtrail.auditor.verify import RoundAudit

MAX_HEATMAPS_PER_ROUND = 32
MAX_HEATMAP_BYTES = 4 * 1024 * 1024
MAX_HEATMAP_PIXELS = 2048 * 2048
MAX_REPORT_HEATMAP_BYTES = 64 * 1024 * 1024
"""Heatmap bytes one report page embeds at most, all rounds together (an honest round's 8
heatmaps take about 0.5 MB: over a hundred rounds fit)."""
MAX_REPORT_HEATMAP_PIXELS = 128 * 1024 * 1024
"""Heatmap pixels one page embeds at most (a flat PNG of a few kilobytes can hold 4 M pixels a
browser decodes to 16 MB; an honest heatmap has 0.1 M)."""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class ImageBudget:
    """What is left of the page's heatmap allowance (bytes and pixels), or of one round's share
    of it (:meth:`share`); once an image does not fit, no later one is fetched."""

    bytes_left: int = MAX_REPORT_HEATMAP_BYTES
    pixels_left: int = MAX_REPORT_HEATMAP_PIXELS
    spent: bool = False
    round_share: bool = False
    """A round's share (:meth:`share`), not the page's allowance."""

    def share(self, rounds: int) -> ImageBudget:
        """One round's part of what is left: an equal share among the ``rounds`` rounds (this one
        included) whose heatmaps are still to be read, so that no round's images can spend
        another round's part (taken first come, first served, one round's heatmaps made the
        report show none of a later round's, verify passing: attack a109). Give back what the
        round did not use with :meth:`settle`."""
        n = max(1, rounds)
        return ImageBudget(self.bytes_left // n, self.pixels_left // n, round_share=True)

    def settle(self, part: ImageBudget, granted: ImageBudget) -> None:
        """Counts what ``part`` (made from ``granted``, a copy of :meth:`share`'s result before
        use) spent against this allowance."""
        self.bytes_left -= granted.bytes_left - part.bytes_left
        self.pixels_left -= granted.pixels_left - part.pixels_left

    def take(self, size: int, pixels: int) -> bool:
        """Whether an image of ``size`` bytes and ``pixels`` fits; if so it is counted."""
        if self.spent or size > self.bytes_left or pixels > self.pixels_left:
            self.spent = True
            return False
        self.bytes_left -= size
        self.pixels_left -= pixels
        return True

    @property
    def refusal(self) -> str:
        allowance = (
            f"the page's image allowance ({MAX_REPORT_HEATMAP_BYTES // 2**20} MB, "
            f"{MAX_REPORT_HEATMAP_PIXELS // 2**20} M pixels over all rounds"
        )
        if self.round_share:
            return f"not shown: this round's share of {allowance}, shared by its rounds) is spent"
        return f"not shown: {allowance}) is spent"


@dataclass(frozen=True)
class Heatmap:
    """One image a log names: its bytes when they passed every check, else why not."""

    caption: str
    cid: str
    png: bytes | None
    problem: str = ""


@dataclass
class RoundData:
    """A round as the chain has it, with its explanation log (or why there is none)."""

    info: RoundInfo
    submissions: list[Submission]
    log: dict[str, Any] | None = None
    log_problem: str = ""
    heatmap_method: str = ""
    heatmaps: list[Heatmap] = field(default_factory=list)
    heatmaps_dropped: int = 0
    peers: PeerTable | None = None
    """A valued peer round's score vectors, medians and validator ratings, from the chain."""

    def log_entry(self, site: str) -> dict[str, Any] | None:
        if self.log is None:
            return None
        for entry in self.log["sites"]:
            if str(entry["site"]).lower() == site.lower():
                return dict(entry)
        return None

    def metrics_after(self) -> dict[str, Any] | None:
        if self.log is None:
            return None
        after: dict[str, Any] = self.log["metrics"]["after"]
        return after


@dataclass
class Federation:
    """What the report shows, read once from the chain and the store."""

    address: str
    chain_id: int
    block: int
    coordinator: str
    aggregator: str
    sites: list[SiteInfo]
    rounds: list[RoundData]
    reputation: dict[str, list[tuple[int, int]]]
    audits: list[RoundAudit]
    privacy: PrivacyAudit | None = None
    """``fedtrail audit privacy``'s accounting, only where the federation used DP (a budget,
    or a round with a ``privacy.*`` check); None otherwise."""
    validators: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Each site rated as a validator in a peer round: (validator reputation, rated rounds)
    from the contract; empty for a federation without peer rounds."""
    former_names: dict[str, list[str]] = field(default_factory=dict)
    """Each site registered earlier under other names (``SiteRegistered`` events, oldest
    first, its current name left out): shown beside its name, since every table of the report
    names sites by their current registration (attack a64)."""

    def peer_rounds(self) -> list[PeerTable]:
        return [rd.peers for rd in self.rounds if rd.peers is not None]

    def site_name(self, address: str) -> str:
        """``address``'s registered name as shown (``fedtrail.protocol.names.shown``: escaped
        where it mixes scripts or holds characters that print as nothing), with the names it
        was registered under before (``hospital-z (formerly hospital-a)``): a coordinator
        who re-registers a paid site under another name and gives its old name to a new site
        would otherwise have the report credit the old rounds to the new name (a64)."""
        for s in self.sites:
            if s.address == address:
                return with_former(s.name, self.former_names.get(address, []))
        return ""

    def site_order(self) -> list[str]:
        """Every address seen (registered or submitting), in the aggregation order."""
        seen = {s.address for s in self.sites}
        for rd in self.rounds:
            seen.update(s.site for s in rd.submissions)
        return sorted(seen, key=lambda a: int(a, 16))


def _read_log(store: ContentStore, info: RoundInfo) -> tuple[dict[str, Any] | None, str]:
    if info.phase != Phase.FINALIZED:
        why = {
            Phase.OPEN: "round open: not valued yet, no explanation log",
            Phase.VALUED: "round valued: weights are fixed on chain, not finalized yet, "
            "no explanation log",
            Phase.CANCELLED: "round cancelled: no explanation log",
        }.get(info.phase, f"round {info.phase.label}")
        return None, why
    if not info.log_cid:
        return None, "the chain names no explanation log for this round"
    try:
        # through the typed record, which also checks what the schema leaves open
        return RoundLog.from_bytes(
            store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES)
        ).to_json(), ""
    except FedtrailError as exc:
        return None, f"explanation log {info.log_cid} unusable: {exc}"


def _lists_heatmaps(doc: dict[str, Any]) -> bool:
    """Whether a log's ``explanations`` block lists any heatmap (what :func:`read_heatmaps`
    would fetch)."""
    block = doc.get("explanations")
    return (
        isinstance(block, dict) and isinstance(block.get("images"), list) and bool(block["images"])
    )


def read_heatmaps(
    store: ContentStore, doc: dict[str, Any], budget: ImageBudget | None = None
) -> tuple[str, list[Heatmap], int]:
    """The log's optional XAI heatmaps, each fetched and checked against its sha256: the method,
    at most ``MAX_HEATMAPS_PER_ROUND`` images, and how many more the log listed. ``budget``: the
    page's allowance, shared by every round's call (default: a fresh one)."""
    budget = budget if budget is not None else ImageBudget()
    block = doc.get("explanations")
    if not isinstance(block, dict):
        return "", [], 0
    method = block.get("method")
    method_text = method if isinstance(method, str) else ""
    images = block.get("images")
    if not isinstance(images, list):
        return method_text, [], 0
    out: list[Heatmap] = []
    for i, item in enumerate(images[:MAX_HEATMAPS_PER_ROUND]):
        if not isinstance(item, dict):
            out.append(Heatmap(f"image {i + 1}", "", None, "entry is not an object"))
            continue
        caption_raw = item.get("caption")
        caption = caption_raw if isinstance(caption_raw, str) else f"image {i + 1}"
        cid, sha = item.get("cid"), item.get("sha256")
        if not isinstance(cid, str) or not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            out.append(Heatmap(caption, str(cid or ""), None, "no valid cid/sha256 given"))
            continue
        out.append(_fetch_png(store, caption, cid, sha, budget))
    return method_text, out, max(0, len(images) - MAX_HEATMAPS_PER_ROUND)


FAITHFULNESS_AREAS = (
    "deletion_auc",
    "insertion_auc",
    "random_deletion_auc",
    "random_insertion_auc",
)


def read_faithfulness(doc: dict[str, Any]) -> dict[str, float]:
    """The log's optional faithfulness areas of its heatmaps (``explanations.faithfulness``),
    only the keys that hold a finite number in [0, 1] (the aggregator's statement: the audit
    cannot recompute it without the private probe set); empty when the log has none."""
    block = doc.get("explanations")
    scores = block.get("faithfulness") if isinstance(block, dict) else None
    if not isinstance(scores, dict):
        return {}
    out: dict[str, float] = {}
    for key in FAITHFULNESS_AREAS:
        v = scores.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0:
            out[key] = float(v)
    return out


def _fetch_png(
    store: ContentStore, caption: str, cid: str, sha: str, budget: ImageBudget
) -> Heatmap:
    if budget.spent:
        return Heatmap(caption, cid, None, budget.refusal)
    try:
        blob = store.get(cid, sha, max_bytes=MAX_HEATMAP_BYTES)
    except FedtrailError as exc:
        return Heatmap(caption, cid, None, f"not shown: {exc}")
    if not blob.startswith(PNG_MAGIC):
        return Heatmap(caption, cid, None, "not shown: the blob is not a PNG image")
    try:
        from PIL import Image

        with Image.open(io.BytesIO(blob)) as img:
            if img.format != "PNG" or img.width * img.height > MAX_HEATMAP_PIXELS:
                return Heatmap(caption, cid, None, "not shown: not a PNG of a sensible size")
            # an APNG's header gives one frame's size, and a browser decodes every frame: the
            # allowance counted 1 of 2,001 (a109 apng); the writer writes one frame
            if getattr(img, "is_animated", False):
                return Heatmap(caption, cid, None, "not shown: an animated PNG")
            img.verify()
            pixels = img.width * img.height
    except Exception as exc:  # PIL raises many types for broken images
        return Heatmap(caption, cid, None, f"not shown: broken PNG ({type(exc).__name__})")
    if not budget.take(len(blob), pixels):
        return Heatmap(caption, cid, None, budget.refusal)
    return Heatmap(caption, cid, blob)


def collect(
    ledger: Ledger, store: ContentStore, audits: list[RoundAudit] | None = None
) -> Federation:
    """Reads everything the report shows (and runs ``verify_all`` when ``audits`` is None);
    refuses a ledger whose event reads start after the contract's creation."""
    ledger.check_from_block()
    if audits is None:
        from fedtrail.auditor.verify import verify_all

        audits = verify_all(ledger, store)
    rounds: list[RoundData] = []
    for info in ledger.rounds():
        rd = RoundData(info, ledger.get_submissions(info.id))
        rd.log, rd.log_problem = _read_log(store, info)
        if info.phase in (Phase.VALUED, Phase.FINALIZED):
            record = read_peer_record(ledger, info.id)
            if record is not None:
                rd.peers = peer_table(record, rd.submissions)
        rounds.append(rd)
    # the page's allowance in equal shares over the rounds with heatmaps (what a round leaves
    # goes to the later ones): one round's images cannot hide another's (a109)
    budget = ImageBudget()
    left = sum(1 for rd in rounds if rd.log is not None and _lists_heatmaps(rd.log))
    for rd in rounds:
        if rd.log is None:
            continue
        part = budget.share(left) if _lists_heatmaps(rd.log) else ImageBudget(0, 0)
        granted = replace(part)
        rd.heatmap_method, rd.heatmaps, rd.heatmaps_dropped = read_heatmaps(store, rd.log, part)
        budget.settle(part, granted)
        left -= _lists_heatmaps(rd.log)
    reputation = ledger.reputation_history()  # after a drop: UpdateWithheld's figure
    sites = sorted(ledger.get_sites(), key=lambda s: int(s.address, 16))
    validators: dict[str, tuple[int, int]] = {}
    if any(rd.peers is not None for rd in rounds):
        for s in sites:
            standing = ledger.validator_standing(s.address)
            if standing.rated_rounds:
                validators[s.address] = (standing.reputation, standing.rated_rounds)
    return Federation(
        address=ledger.address,
        chain_id=ledger.chain_id,
        block=int(ledger.w3.eth.block_number),
        coordinator=ledger.coordinator(),
        aggregator=ledger.aggregator(),
        sites=sites,
        rounds=rounds,
        reputation=reputation,
        audits=list(audits),
        privacy=read_privacy(ledger, store, audits, sites),
        validators=validators,
        former_names=former_names(ledger, sites),
    )


def former_names(ledger: Ledger, sites: list[SiteInfo]) -> dict[str, list[str]]:
    """Each site's earlier registered names (oldest first, none twice, its current one left
    out), from the ``SiteRegistered`` events; sites never renamed are left out."""
    return ledger.registrations().former_names({s.address: s.name for s in sites})


def used_dp(ledger: Ledger, audits: list[RoundAudit], sites: list[SiteInfo]) -> bool:
    """Whether the federation used differential privacy: ``audit verify`` added a
    ``privacy.*`` check to some round (its terms ask privacy or an update carries DP
    parameters), or the coordinator gave some site a budget."""
    if any(c.name.startswith("privacy.") for a in audits for c in a.checks):
        return True
    return any(ledger.privacy(s.address).budget_micro for s in sites)


def read_privacy(
    ledger: Ledger, store: ContentStore, audits: list[RoundAudit], sites: list[SiteInfo]
) -> PrivacyAudit | None:
    """``fedtrail audit privacy``'s accounting (every declared spend recomputed from the DP
    parameters in its update blob) where the federation used DP, else None."""
    if not used_dp(ledger, audits, sites):
        return None
    from fedtrail.auditor.privacy import audit_privacy

    return audit_privacy(ledger, store)


def reason_codes() -> dict[int, tuple[str, str]]:
    """Reason code -> (name, description) from the protocol's table, for codes without a log."""
    out: dict[int, tuple[str, str]] = {}
    for r in Reason:
        try:
            out[int(r)] = (r.name, r.description)
        except (KeyError, AttributeError):
            out[int(r)] = (r.name, "")
    return out
