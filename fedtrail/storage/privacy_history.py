"""A site's private updates read back from the chain and the store: what the ``"composed"``
accounting rule composes over (:func:`fedtrail.ml.privacy.declared_micro`).

The history of a site's reveal in round ``r`` is every ``PrivacySpent`` event of the site before
it (chain order, which is round order: a site reveals in the open round only), each with the DP
parameters in the update blob it revealed (the chain pins the blob's sha256), cancelled rounds
included: their blobs were published all the same. The spend on chain before the reveal is the
previous event's ``totalMicro`` (0 for the first). Node and auditor both compute the declared
spend through :meth:`PrivacyHistory.expected_micro`, from public data only, so a node that
restarts (or lost its state) declares what an auditor recomputes.

An earlier blob the store does not give is a store's state (``StoreError``) unless the chain
already scored that update 0 as one its round's scorers could not use either
(:data:`UNAVAILABLE_VERDICTS`): then the spend is :class:`UnavailableSpend`, a verdict every
reader whose store lacks the blob reaches from the chain alike (attack a11 ``withhold``).
"""

from __future__ import annotations

from typing import Any

from fedtrail.errors import FedtrailError, InvalidUpdate
from fedtrail.ledger import Ledger, PrivacySpend, Submission, checksum
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.privacy import declared_micro
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.privacy import SUMMED, DpParams, InvalidPrivacy
from fedtrail.protocol.terms import MAX_TERMS_BYTES, RoundTerms
from fedtrail.storage.codec import default_max_bytes, read_update_meta
from fedtrail.storage.store import NOT_GIVEN, ContentStore

__all__ = [
    "UNAVAILABLE_VERDICTS",
    "PrivacyHistory",
    "UnavailableSpend",
    "UnbackedSpend",
    "scored_unavailable",
]

UNAVAILABLE_VERDICTS: frozenset[Reason] = frozenset(
    {Reason.TAMPERED, Reason.MALFORMED, Reason.WITHHELD, Reason.PEER_REJECTED}
)
"""The reasons (posted on chain with weight 0) under which an earlier update the store does not
give backs no spend (:class:`UnavailableSpend`): the round's scorers could not use it either.
TAMPERED and MALFORMED are the aggregator's verdict (an update it could not fetch is MALFORMED,
``update not retrievable``), WITHHELD the aggregator's drop of a weighted peer update it could
not read back, PEER_REJECTED the validators' median (each scores an update it cannot read 0).
Any other reason, a weighted update (which the aggregator and the validators pinned), or a round
cancelled before it was valued (no verdict on chain) leaves a missing blob a store's state:
UNREADABLE, not binding."""


class UnbackedSpend(InvalidPrivacy):
    """An earlier spend of the site's was declared for an update whose blob (read and
    hash-checked) carries no DP parameters or cannot be decoded: the composed total cannot be
    recomputed, and every reader who holds that blob finds the same (unlike a blob missing
    from one store, a ``StoreError``)."""


class UnavailableSpend(InvalidPrivacy):
    """An earlier spend of the site's was declared for an update that this reader's store does
    not give and that its round's scorers already scored 0 as unusable on chain
    (:data:`UNAVAILABLE_VERDICTS`): the site never showed anyone the DP parameters the spend
    claims, so its composed total cannot be recomputed, and the verdict rests on the chain,
    which every reader shares, not on this store alone. A reader whose store does give the
    blob composes over it instead (so a dishonest aggregator that marks a readable update
    unavailable is caught by every auditor who reads it, in that round and in each later one)."""


class PrivacyHistory:
    """Reads sites' private reveals and the DP parameters of their blobs, each blob once.

    The spends are read from the chain once per instance (a node makes a new one for each
    decision; an auditor one for a whole audit); the parameters of a revealed blob never change,
    so ``params_cache`` may be shared between instances."""

    def __init__(
        self,
        ledger: Ledger,
        store: ContentStore,
        params_cache: dict[tuple[int, str], DpParams | None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._spends: dict[str, list[PrivacySpend]] | None = None
        self._params = {} if params_cache is None else params_cache
        self._specs: dict[int, ModelSpec] = {}

    def spends(self, site: str) -> list[PrivacySpend]:
        """``site``'s ``PrivacySpent`` events in chain order."""
        if self._spends is None:
            by_site: dict[str, list[PrivacySpend]] = {}
            for spend in self._ledger.privacy_spends():
                by_site.setdefault(spend.site, []).append(spend)
            self._spends = by_site
        return self._spends.get(checksum(site), [])

    def remember(self, round_id: int, site: str, params: DpParams | None) -> None:
        """The parameters of ``site``'s update in ``round_id`` as the caller already decoded
        them from the hash-checked blob (saves a fetch)."""
        self._params[(round_id, checksum(site))] = params

    def params(self, round_id: int, site: str) -> DpParams | None:
        """The DP parameters in ``site``'s revealed update of ``round_id`` (None: it carries
        none). Raises :class:`UnavailableSpend` when the store does not give the blob and the
        chain scored the update 0 as unusable, ``StoreError`` when it does not give the blob
        otherwise (or the round's terms), and :class:`InvalidPrivacy` when they cannot be
        read."""
        key = (round_id, checksum(site))
        if key not in self._params:
            sub = self._ledger.get_submission(round_id, site)
            if sub is None or not sub.revealed:
                raise InvalidPrivacy(f"{site} revealed no update in round {round_id}")
            spec = self._spec(round_id)
            try:
                blob = self._store.get(sub.cid, sub.sha256, max_bytes=default_max_bytes(spec))
            except NOT_GIVEN as exc:
                if scored_unavailable(sub):
                    raise UnavailableSpend(
                        f"round {round_id}'s update {sub.cid} of {site} declared a spend, was "
                        f"scored 0 as {Reason(sub.reason).name} on chain and cannot be read "
                        f"here ({exc}): the DP parameters it claims were never shown"
                    ) from None
                raise
            try:
                meta = read_update_meta(blob, spec=spec, expected_round=round_id)
            except InvalidUpdate as exc:  # the hash-checked bytes: every holder reads the same
                raise UnbackedSpend(
                    f"round {round_id}'s update {sub.cid} of {site} cannot be read: {exc}"
                ) from None
            self._params[key] = meta.dp
        return self._params[key]

    def before(self, site: str, round_id: int) -> tuple[list[PrivacySpend], int]:
        """``site``'s private reveals before round ``round_id`` and its spend on chain before
        its reveal in ``round_id`` (the last of them's total; 0 for none)."""
        earlier = [s for s in self.spends(site) if s.round < round_id]
        return earlier, earlier[-1].total_micro if earlier else 0

    def expected_micro(self, site: str, round_id: int, update: DpParams) -> int:
        """The micro-epsilon ``site`` must declare for ``update``, revealed in ``round_id``,
        under the rule ``update`` names. Raises :class:`InvalidPrivacy` (or ``StoreError``) when
        an earlier update the rule composes over cannot be read or carries no parameters."""
        earlier, total_before = self.before(site, round_id)
        if update.accounting == SUMMED:
            return declared_micro(update, [], total_before)
        history: list[DpParams] = []
        for spend in earlier:
            params = self.params(spend.round, site)
            if params is None:
                raise UnbackedSpend(
                    f"round {spend.round}'s update of {site} declared a spend but carries no DP "
                    "parameters: its composed total cannot be recomputed"
                )
            history.append(params)
        return declared_micro(update, history, total_before)

    def _spec(self, round_id: int) -> ModelSpec:
        if round_id not in self._specs:
            info = self._ledger.get_round(round_id)
            raw = self._store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
            try:
                terms = RoundTerms.from_bytes(raw)
                model: Any = terms.model_spec
                self._specs[round_id] = ModelSpec(**model)
            except (FedtrailError, TypeError, ValueError) as exc:
                raise InvalidPrivacy(f"round {round_id}'s terms name no model: {exc}") from None
        return self._specs[round_id]


def scored_unavailable(sub: Submission) -> bool:
    """Whether the chain holds a verdict that ``sub``'s scorers could not use it: weight 0 and
    a reason in :data:`UNAVAILABLE_VERDICTS` (a round cancelled before valuation posts none)."""
    return sub.weight == 0 and sub.reason in UNAVAILABLE_VERDICTS
