"""`fedtrail audit privacy`: every site's privacy budget and declared spends, checked.

The chain keeps what each site *declared*: its epsilon budget, one ``PrivacySpent`` per private
reveal and the cumulative spend (the sum of the declarations, in micro-epsilon). What a site
declares is its own word; the DP parameters inside each update blob (pinned on chain by the
update's sha256) are what the spend must follow from, under the accounting rule they name
(``DpParams.accounting``): ``"summed"`` (absent: every blob from before the field), the
update's own epsilon; ``"composed"``, the increment of the RDP composition of the site's earlier
private updates (their blobs, read back) and this one, so the chain's total is the composed
epsilon rounded up (``fedtrail.ml.privacy.declared_micro`` through
``fedtrail.storage.privacy_history.PrivacyHistory``, the code the node declares with). With a
store, this audit reads every revealed update, recomputes its spend under its rule and compares
it with the declaration, exactly under both rules (the composed rule is as exact as the summed
one: a node that follows it never differs, and a tolerance for overstating would let a site
bank spend it could later leave undeclared): an update with DP parameters revealed without its
spend, or with another one, a
declared spend without parameters, parameters accounted at another delta than the round's
terms fix, an update without parameters in a round whose terms require DP, or a blob that
cannot be read all fail. Per site it also checks the account against the events and the
budget, and shows the tighter RDP-composed epsilon of its updates next to the chain's sum.

Not checked here: whether ``sample_rate`` and ``steps`` are the ones the site really trained
with (the blob does not carry the batch size); ``audit verify``'s ``privacy.spend`` checks
them against the on-chain sample count as far as it can.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fedtrail.errors import ConfigError, FedtrailError, StoreError
from fedtrail.ledger import Ledger
from fedtrail.protocol.privacy import DpParams, from_micro
from fedtrail.protocol.terms import MAX_TERMS_BYTES, PrivacyTerms, RoundTerms
from fedtrail.storage.privacy_history import PrivacyHistory
from fedtrail.storage.privacy_spend import Status, check_spend
from fedtrail.storage.store import ContentStore

__all__ = ["PrivacyAudit", "SitePrivacy", "Status", "UpdateSpend", "audit_privacy"]


@dataclass(frozen=True)
class UpdateSpend:
    """One revealed update: its declared spend (0 for a plain reveal) and the site's total
    after it (None for a plain reveal), and what the blob says."""

    round: int
    site: str
    declared_micro: int
    total_micro: int | None
    params: DpParams | None
    recomputed_micro: int | None
    status: str
    detail: str = ""

    @property
    def accounting(self) -> str | None:
        """The rule the update's DP parameters name (None: it carries none)."""
        return None if self.params is None else self.params.accounting

    @property
    def ok(self) -> bool:
        return self.status in Status.PASSING

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "site": self.site,
            "declared_micro": self.declared_micro,
            "declared_epsilon": from_micro(self.declared_micro),
            "total_micro": self.total_micro,
            "recomputed_micro": self.recomputed_micro,
            "recomputed_epsilon": (
                None if self.recomputed_micro is None else from_micro(self.recomputed_micro)
            ),
            "params": None if self.params is None else self.params.to_json(),
            "accounting": self.accounting,
            "status": self.status,
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class SitePrivacy:
    """A site's account: budget and spend as the contract keeps them (micro-epsilon), the sum
    of its ``PrivacySpent`` events, and the RDP-composed epsilon of the DP parameters read
    from its updates, at the delta of its latest one (None when none were read). ``problems``
    empty means it passes."""

    site: str
    name: str
    budget_micro: int
    spent_micro: int
    events_micro: int
    composed_epsilon: float | None
    problems: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "name": self.name,
            "budget_micro": self.budget_micro,
            "budget_epsilon": from_micro(self.budget_micro) if self.budget_micro else None,
            "spent_micro": self.spent_micro,
            "spent_epsilon": from_micro(self.spent_micro),
            "events_micro": self.events_micro,
            "rdp_composed_epsilon": self.composed_epsilon,
            "ok": not self.problems,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class PrivacyAudit:
    """The whole federation's privacy accounting; ``read_blobs`` says whether the declared
    spends were checked against the updates or only shown."""

    sites: tuple[SitePrivacy, ...]
    updates: tuple[UpdateSpend, ...]
    read_blobs: bool

    @property
    def problems(self) -> list[str]:
        out = [f"{s.site}: {p}" for s in self.sites for p in s.problems]
        out += [
            f"round {u.round} {u.site}: {u.status}" + (f" ({u.detail})" if u.detail else "")
            for u in self.updates
            if not u.ok
        ]
        return out

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "read_blobs": self.read_blobs,
            "sites": [s.to_json() for s in self.sites],
            "updates": [u.to_json() for u in self.updates],
            "problems": self.problems,
        }


def audit_privacy(ledger: Ledger, store: ContentStore | None) -> PrivacyAudit:
    """Every site's account and every revealed update's spend; with ``store``, each spend is
    recomputed from the DP parameters in the update blob (None: declarations only). Refuses a
    ledger whose event reads start after the contract's creation (hidden spends)."""
    ledger.check_from_block()
    spends = {(s.round, s.site): s for s in ledger.privacy_spends()}
    history = None if store is None else PrivacyHistory(ledger, store)
    updates: list[UpdateSpend] = []
    for round_id in range(1, ledger.current_round() + 1):
        subs = ledger.get_submissions(round_id)
        reader = (
            _RoundReader(ledger, store, round_id, history)
            if store is not None and history is not None and subs
            else None
        )
        for sub in subs:
            spend = spends.get((round_id, sub.site))
            declared = spend.epsilon_micro if spend else 0
            total = spend.total_micro if spend else None
            if reader is None:
                updates.append(
                    UpdateSpend(round_id, sub.site, declared, total, None, None, Status.NOT_READ)
                )
                continue
            updates.append(
                reader.check(sub.site, sub.cid, sub.sha256, declared, total, sub.num_samples)
            )
    sites = tuple(_site(ledger, info.address, info.name, updates) for info in ledger.get_sites())
    return PrivacyAudit(sites=sites, updates=tuple(updates), read_blobs=store is not None)


def _site(ledger: Ledger, site: str, name: str, updates: list[UpdateSpend]) -> SitePrivacy:
    account = ledger.privacy(site)
    mine = [u for u in updates if u.site == site]
    events = sum(u.declared_micro for u in mine)
    problems: list[str] = []
    if events != account.spent_micro:
        problems.append(
            f"the account's spend {account.spent_micro} is not the sum of its PrivacySpent "
            f"events {events}"
        )
    if account.budget_micro and account.spent_micro > account.budget_micro:
        problems.append(
            f"spent {account.spent_micro} micro-epsilon, over its budget {account.budget_micro}"
        )
    params = [u.params for u in sorted(mine, key=lambda u: u.round) if u.params is not None]
    composed: float | None = None
    if params:
        from fedtrail.ml.privacy import epsilon_composed_at

        # at the delta of its latest update, as the composed rule charges it: RDP composes
        # whatever delta each update named (terms may change the delta between rounds)
        composed = epsilon_composed_at(params, params[-1].delta)
    return SitePrivacy(
        site=site,
        name=name,
        budget_micro=account.budget_micro,
        spent_micro=account.spent_micro,
        events_micro=events,
        composed_epsilon=composed,
        problems=tuple(problems),
    )


class _RoundReader:
    """Reads one round's update blobs with the model spec of the round's committed terms."""

    def __init__(
        self, ledger: Ledger, store: ContentStore, round_id: int, history: PrivacyHistory
    ) -> None:
        self.store = store
        self.history = history
        self.round_id = round_id
        self.spec: Any = None
        self.limit = 0
        self.why = ""
        self.privacy: PrivacyTerms | None = None
        from fedtrail.ml.models import ModelSpec
        from fedtrail.storage.codec import read_limit

        info = ledger.get_round(round_id)
        try:
            terms = RoundTerms.from_bytes(
                store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
            )
            spec = ModelSpec(**terms.model_spec)
            self.privacy = terms.privacy
        except (FedtrailError, TypeError, ValueError) as exc:
            self.why = f"cannot read round {round_id}'s terms {info.terms_cid}: {exc}"
            return
        # the spec is the aggregator's: decoding a few-byte topk8 update expands it to the
        # spec's dense size (a 1.9 KB update to 785 MB), so it is bounded as verify bounds it
        try:
            limit = read_limit(spec)
        except ConfigError as exc:
            self.why = (
                f"round {round_id}'s terms: the model spec cannot be decoded: {exc} (model.size)"
            )
            return
        self.spec, self.limit = spec, limit

    def check(
        self,
        site: str,
        cid: str,
        sha256: str,
        declared: int,
        total: int | None,
        num_samples: int = 0,
    ) -> UpdateSpend:
        def result(
            status: str,
            detail: str = "",
            params: DpParams | None = None,
            recomputed: int | None = None,
        ) -> UpdateSpend:
            return UpdateSpend(
                self.round_id, site, declared, total, params, recomputed, status, detail
            )

        if self.spec is None:
            return result(Status.UNREADABLE, self.why)
        try:
            params = self._params(cid, sha256)
        except StoreError as exc:
            return result(Status.UNREADABLE, f"cannot fetch {cid}: {exc}")
        except FedtrailError as exc:  # InvalidUpdate, InvalidPrivacy: the blob's own fault
            return result(Status.UNREADABLE, f"{cid} is not a valid update: {exc}")
        # the rule the aggregator scores by (fedtrail.storage.privacy_spend), reported here
        verdict = check_spend(
            self.history,
            round_id=self.round_id,
            site=site,
            params=params,
            declared=declared,
            privacy=self.privacy,
            num_samples=num_samples,
        )
        return result(verdict.status, verdict.detail, verdict.params, verdict.recomputed)

    def _params(self, cid: str, sha256: str) -> DpParams | None:
        from fedtrail.storage.codec import decode_update

        blob = self.store.get(cid, sha256, max_bytes=self.limit)
        _, meta = decode_update(
            blob, spec=self.spec, max_bytes=self.limit, expected_round=self.round_id
        )
        return meta.dp


def count_by_status(updates: tuple[UpdateSpend, ...]) -> dict[str, int]:
    """How many updates ended in each status (for the summary line)."""
    out: dict[str, int] = defaultdict(int)
    for u in updates:
        out[u.status] += 1
    return dict(out)
