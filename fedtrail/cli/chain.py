"""`fedtrail chain ...`: deploy the ledger and look at its state."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fedtrail.chain import connect
from fedtrail.cli.common import (
    ROUND_ID,
    FiniteFloatRange,
    ledger_options,
    load_signer,
    open_ledger,
    open_signed_ledger,
    read_passphrase,
    resolve_rpc,
    rpc_option,
    signer_options,
    tx_fields,
)
from fedtrail.cli.output import emit, format_option, reason_label
from fedtrail.errors import ConfigError
from fedtrail.fsutil import atomic_write
from fedtrail.keys import FAST_KDF_N
from fedtrail.protocol.codes import DEFAULT_MIN_ROUND_WINDOW, Phase
from fedtrail.protocol.names import with_former
from fedtrail.protocol.weights import DEFAULT_REPUTATION_ALPHA, SCORE_SCALE, WEIGHT_SCALE

if TYPE_CHECKING:  # the ledger loads web3 (about a second): imported where used
    from fedtrail.ledger import Ledger


@click.group()
def chain() -> None:
    """Deploy the FederationLedger and read its state."""


@chain.command()
@rpc_option
@signer_options
@click.option("--aggregator", default=None, help="Aggregator address (default: the deployer).")
@click.option(
    "--reputation-alpha",
    type=click.IntRange(1, 1_000_000),
    default=DEFAULT_REPUTATION_ALPHA,
    show_default=True,
    help="Reputation EMA factor over 1e6.",
)
@click.option(
    "--min-round-window",
    type=click.IntRange(1, 2**64 - 1),
    default=DEFAULT_MIN_ROUND_WINDOW,
    show_default=True,
    help="Shortest commit and reveal window (seconds) the ledger accepts from the aggregator.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="deployment.json",
    show_default=True,
    help="Where to write the deployment file.",
)
@format_option()
def deploy(
    rpc_url: str | None,
    keystore: Path | None,
    dev_account: int | None,
    aggregator: str | None,
    reputation_alpha: int,
    min_round_window: int,
    out: Path,
    fmt: str,
) -> None:
    """Deploy a new FederationLedger; the signer becomes its coordinator."""
    from fedtrail.ledger import Ledger

    if out.exists():
        raise ConfigError(f"{out} exists; choose another --out or remove it")
    rpc_url = resolve_rpc(rpc_url)
    w3 = connect(rpc_url)
    signer = load_signer(w3, keystore, dev_account)
    _, deployment = Ledger.deploy(
        w3,
        signer,
        aggregator=aggregator,
        reputation_alpha=reputation_alpha,
        min_round_window=min_round_window,
        rpc_url=rpc_url,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, deployment.to_json().encode("utf-8"), shared=True)
    if fmt == "json":
        emit({**deployment.__dict__, "deployment_file": str(out)}, fmt)
    else:
        click.echo(f"FederationLedger deployed at {deployment.address}")
        click.echo(f"  chain {deployment.chain_id}, block {deployment.block_number}")
        click.echo(f"  coordinator {deployment.coordinator}")
        click.echo(f"  aggregator  {deployment.aggregator}")
        click.echo(f"  minimum round window {deployment.min_round_window} s")
        click.echo(f"  deployment file {out}")


def _time(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else ""


def ledger_status(ledger: Ledger, round_id: int | None = None) -> dict[str, Any]:
    """Everything `chain status` shows, as one JSON-able record (each site's ``former_names``:
    the names it was registered under before, oldest first)."""
    current = ledger.current_round()
    rid = current if round_id is None else round_id
    sites = ledger.get_sites()
    former = ledger.registrations().former_names({s.address: s.name for s in sites})
    doc: dict[str, Any] = {
        "contract": ledger.address,
        "chain_id": ledger.chain_id,
        "coordinator": ledger.coordinator(),
        "pending_coordinator": ledger.pending_coordinator(),
        "aggregator": ledger.aggregator(),
        "current_round": current,
        "last_finalized_round": ledger.last_finalized_round(),
        "sites": [
            {
                "site": s.address,
                "name": s.name,
                "former_names": former.get(s.address, []),
                "registered": s.registered,
                "reputation": s.reputation / SCORE_SCALE,
                "valued_rounds": s.valued_rounds,
                "max_samples": s.max_samples,
            }
            for s in sites
        ],
        "round": None,
    }
    if rid:
        info = ledger.get_round(rid)
        doc["round"] = {
            "id": info.id,
            "phase": info.phase.label,
            "commit_deadline": _time(info.commit_deadline),
            "reveal_deadline": _time(info.reveal_deadline),
            "active_at_open": info.active_at_open,
            "submissions": info.submission_count,
            "terms_sha256": info.terms_sha256,
            "start_sha256": info.start_sha256,
            "global_sha256": info.global_sha256 if info.phase == Phase.FINALIZED else "",
            "updates": [
                {
                    "site": s.site,
                    "samples": s.num_samples,
                    "score": s.score / SCORE_SCALE if info.phase.has_scores else None,
                    "reason": reason_label(s.reason) if info.phase.has_scores else None,
                    "weight": s.weight / WEIGHT_SCALE if info.phase.has_scores else None,
                    "sha256": s.sha256,
                    "revealed": s.revealed,
                    "commit_order": s.commit_order,
                }
                for s in ledger.get_submissions(rid, include_unrevealed=True)
            ],
        }
    return doc


def print_status(doc: dict[str, Any]) -> None:
    click.echo(f"ledger      {doc['contract']} (chain {doc['chain_id']})")
    click.echo(f"coordinator {doc['coordinator']}")
    if doc.get("pending_coordinator"):
        click.echo(f"            (offered to {doc['pending_coordinator']}, not yet accepted)")
    click.echo(f"aggregator  {doc['aggregator']}")
    click.echo(f"rounds      {doc['current_round']} (last finalized {doc['last_finalized_round']})")
    click.echo("")
    click.echo("sites")
    # names as the report shows them: hidden characters escaped, earlier names beside (a64)
    sites = [{**s, "name": with_former(s["name"], s["former_names"])} for s in doc["sites"]]
    emit(sites, "table", columns=[k for k in sites[0] if k != "former_names"] if sites else None)
    rnd = doc["round"]
    if rnd:
        click.echo("")
        click.echo(
            f"round {rnd['id']}: {rnd['phase']}, commits until {rnd['commit_deadline']}, "
            f"reveals until {rnd['reveal_deadline']}, {rnd['submissions']} of "
            f"{rnd['active_at_open']} site(s) revealed"
        )
        rows = [{k: v for k, v in u.items() if k != "sha256"} for u in rnd["updates"]]
        emit(rows, "table")


@chain.command()
@ledger_options
@click.option(
    "--round", "round_id", type=ROUND_ID, default=None, help="Round to show (default: latest)."
)
@format_option()
def status(
    rpc_url: str | None, deployment_path: Path, contract: str | None, round_id: int | None, fmt: str
) -> None:
    """Show the ledger's roles, sites, and a round with its weights."""
    ledger = open_ledger(rpc_url, deployment_path, contract)
    doc = ledger_status(ledger, round_id)
    if fmt == "json":
        emit(doc, "json")
    else:
        print_status(doc)


@chain.command("transfer-coordinator")
@click.argument("new_coordinator", metavar="ADDRESS")
@ledger_options
@signer_options
@format_option()
def transfer_coordinator(
    new_coordinator: str,
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    keystore: Path | None,
    dev_account: int | None,
    fmt: str,
) -> None:
    """Coordinator: offer the role to ADDRESS, who takes it with `chain accept-coordinator`
    (until then the signer keeps it; the zero address withdraws an offer)."""
    from fedtrail.ledger import checksum

    offered = checksum(new_coordinator)
    ledger, signer = open_signed_ledger(rpc_url, deployment_path, contract, keystore, dev_account)
    tx = ledger.transfer_coordinator(signer, offered)
    pending = ledger.pending_coordinator()
    doc = {
        "coordinator": ledger.coordinator(),
        "pending_coordinator": pending,
        **tx_fields(tx),
    }
    if fmt == "json":
        emit(doc, "json")
    elif pending is None:
        click.echo(f"coordinator offer withdrawn (tx {tx.tx_hash})")
    else:
        click.echo(
            f"coordinator role offered to {pending}; it moves when that account runs "
            f"`fedtrail chain accept-coordinator` (tx {tx.tx_hash})"
        )


@chain.command("accept-coordinator")
@ledger_options
@signer_options
@format_option()
def accept_coordinator(
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    keystore: Path | None,
    dev_account: int | None,
    fmt: str,
) -> None:
    """Take the coordinator role the coordinator offered to the signer."""
    ledger, signer = open_signed_ledger(rpc_url, deployment_path, contract, keystore, dev_account)
    previous = ledger.coordinator()
    tx = ledger.accept_coordinator(signer)
    doc = {
        "coordinator": ledger.coordinator(),
        "previous_coordinator": previous,
        **tx_fields(tx),
    }
    if fmt == "json":
        emit(doc, "json")
    else:
        click.echo(f"{doc['coordinator']} is now the coordinator (was {previous}; tx {tx.tx_hash})")


@chain.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fast-kdf", is_flag=True, hidden=True, help="Light scrypt (tests/demos only).")
@format_option()
def keystore(path: Path, fast_kdf: bool, fmt: str) -> None:
    """Create an encrypted keystore for a new account (a coordinator's or an aggregator's; a
    site's comes with `fedtrail node init`). The passphrase comes from $FEDTRAIL_PASSPHRASE or
    a prompt asked twice; an existing file is never overwritten."""
    from fedtrail.keys import create_keystore

    if path.exists():
        raise ConfigError(f"{path} exists; refusing to overwrite a key")
    account = create_keystore(
        path, read_passphrase(path, confirm=True), kdf_n=FAST_KDF_N if fast_kdf else None
    )
    doc = {"address": account.address, "keystore": str(path)}
    if fmt == "json":
        emit(doc, "json")
    else:
        click.echo(f"keystore {path} (encrypted) for {account.address}")
        click.echo(
            f"fund it for gas before it deploys or aggregates: "
            f"fedtrail chain fund {account.address} --eth N"
        )


@chain.command()
@click.argument("address", metavar="ADDRESS")
@click.option(
    "--eth",
    type=FiniteFloatRange(min=0, min_open=True),
    required=True,
    help="How much ETH to send (for gas).",
)
@rpc_option
@signer_options
@format_option()
def fund(
    address: str,
    eth: float,
    rpc_url: str | None,
    keystore: Path | None,
    dev_account: int | None,
    fmt: str,
) -> None:
    """Send ETH for gas from the signer to ADDRESS (an aggregator's or coordinator's account;
    `node register --fund` does it for sites)."""
    from fedtrail.chain import balance as balance_of
    from fedtrail.chain import fund as send_funds
    from fedtrail.errors import LedgerError
    from fedtrail.ledger import checksum

    target = checksum(address)
    wei = int(eth * 10**18)
    if wei == 0:
        raise ConfigError(f"--eth {eth}: less than one wei")
    w3 = connect(resolve_rpc(rpc_url))
    signer = load_signer(w3, keystore, dev_account)
    if balance_of(w3, signer.address) < wei:
        raise ConfigError(f"--eth {eth}: {signer.address} holds less than {eth} ETH")
    send_funds(w3, signer, target, wei)
    try:  # sent: a failed read now must not read as a failed send (a rerun would pay twice)
        held = balance_of(w3, target)
        balance: int | None = held
        shown = f"balance {held / 1e18:g} ETH"
    except LedgerError as exc:
        balance, shown = None, f"balance not read: {exc}"
    doc = {"from": signer.address, "to": target, "wei": wei, "balance_wei": balance}
    if fmt == "json":
        emit(doc, "json")
    else:
        click.echo(f"sent {eth} ETH from {signer.address} to {target} ({shown})")
