"""`fedtrail demo`: the quick start on the embedded chain and local store (no daemons).

Until the full scenario lands it deploys the ledger in-process, registers simulated hospitals,
opens round 1 from the seeded initial model, and prints the ledger's state.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import click

from fedtrail.chain import block_timestamp, connect, funded_accounts
from fedtrail.codec import encode_model
from fedtrail.commands.chain import ledger_status, print_status
from fedtrail.ledger import Ledger
from fedtrail.models import ModelSpec, initial_model
from fedtrail.output import emit, format_option
from fedtrail.store import LocalStore


@click.command()
@click.option("--sites", type=click.IntRange(1, 7), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the embedded store keeps blobs (default: a temporary folder).",
)
@format_option()
def demo(sites: int, seed: int, workdir: Path | None, fmt: str) -> None:
    """Run the embedded demo (in-process chain and content store)."""
    root = workdir or Path(tempfile.mkdtemp(prefix="fedtrail-demo-"))
    w3 = connect("embedded")
    accounts = funded_accounts(w3)
    coordinator, site_accounts = accounts[0], accounts[1 : 1 + sites]
    ledger, _ = Ledger.deploy(w3, coordinator)
    for i, acct in enumerate(site_accounts):
        ledger.register_site(coordinator, acct.address, f"hospital-{chr(ord('A') + i)}")
    spec = ModelSpec()
    store = LocalStore(root / "store")
    blob = encode_model(initial_model(spec, seed).state_dict(), spec=spec, round=0)
    cid = store.put(blob)
    ledger.open_round(
        coordinator, cid, hashlib.sha256(blob).hexdigest(), block_timestamp(w3) + 3600
    )
    doc = ledger_status(ledger)
    if fmt == "json":
        emit(doc, "json")
    else:
        click.echo(f"embedded chain, store in {root}")
        print_status(doc)
