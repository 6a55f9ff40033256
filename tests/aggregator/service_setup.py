"""An embedded-chain aggregator with ``n`` registered sites ``site-<i>`` (100 samples each), the
setup the service's read and polling tests share."""

from __future__ import annotations

from pathlib import Path

from eth_account.signers.local import LocalAccount

from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.ml.datasets import load_bundled
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv

__all__ = ["service_with_sites"]


def service_with_sites(
    embedded: ChainEnv,
    store: LocalStore,
    n: int,
    settings: AggregatorSettings,
    folder: Path,
) -> tuple[AggregatorService, list[LocalAccount]]:
    ledger = embedded.deploy()
    sites = list(embedded.sites[:n])
    for i, acct in enumerate(sites):
        ledger.register_site(embedded.coordinator, acct.address, f"site-{i}", 100)
    service = AggregatorService(
        ledger=ledger,
        store=store,
        account=embedded.aggregator,
        validation=load_bundled().val,
        settings=settings,
        folder=folder,
    )
    return service, sites
