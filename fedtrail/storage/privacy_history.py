"""A site's private updates read back from the chain and the store: what the ``"composed"``
accounting rule composes over (:func:`fedtrail.ml.privacy.declared_micro`).

The history of a site's reveal in round ``r`` is every ``PrivacySpent`` event of the site before
it (chain order, which is round order: a site reveals in the open round only), each with the DP
parameters in the update blob it revealed (the chain pins the blob's sha256), cancelled rounds
included: their blobs were published all the same. The spend on chain before the reveal is the
previous event's ``totalMicro`` (0 for the first). Node and auditor both compute the declared
spend through :meth:`PrivacyHistory.expected_micro`, from public data only, so a node that
restarts (or lost its state) declares what an auditor recomputes.
"""

from __future__ import annotations

from typing import Any

from fedtrail.errors import FedtrailError, InvalidUpdate
from fedtrail.ledger import Ledger, PrivacySpend, checksum
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.privacy import declared_micro
from fedtrail.protocol.privacy import SUMMED, DpParams, InvalidPrivacy
from fedtrail.protocol.terms import MAX_TERMS_BYTES, RoundTerms
from fedtrail.storage.codec import default_max_bytes, read_update_meta
from fedtrail.storage.store import ContentStore

__all__ = ["PrivacyHistory", "UnbackedSpend"]


class UnbackedSpend(InvalidPrivacy):
    """An earlier spend of the site's was declared for an update whose blob (read and
    hash-checked) carries no DP parameters or cannot be decoded: the composed total cannot be
    recomputed, and every reader who holds that blob finds the same (unlike a blob missing
    from one store, a ``StoreError``)."""


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
        none). Raises ``StoreError`` when the store does not give the blob (or the round's
        terms) and :class:`InvalidPrivacy` when they cannot be read."""
        key = (round_id, checksum(site))
        if key not in self._params:
            sub = self._ledger.get_submission(round_id, site)
            if sub is None or not sub.revealed:
                raise InvalidPrivacy(f"{site} revealed no update in round {round_id}")
            spec = self._spec(round_id)
            blob = self._store.get(sub.cid, sub.sha256, max_bytes=default_max_bytes(spec))
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
