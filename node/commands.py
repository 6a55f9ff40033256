"""`fedtrail node ...`: the site operator's commands."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fedtrail.chain import check_rpc_url, connect
from fedtrail.cli.common import (
    DEFAULT_DEPLOYMENT,
    FiniteFloatRange,
    LazyChoice,
    compression_methods,
    ledger_options,
    model_options,
    open_checked_store,
    open_signed_ledger,
    read_passphrase,
    resolve_rpc,
    setup_logging,
    signer_options,
    stop_on_signals,
    tx_fields,
    unlock_keystore,
)
from fedtrail.cli.output import emit, format_option, reason_label
from fedtrail.errors import ConfigError
from fedtrail.hooks import launcher_step_hook
from fedtrail.keys import FAST_KDF_N, create_keystore, keystore_address
from fedtrail.protocol.codes import SANE_SITE_SAMPLES
from fedtrail.protocol.privacy import EPSILON_SCALE
from fedtrail.protocol.weights import SCORE_SCALE, WEIGHT_SCALE

if TYPE_CHECKING:  # the ledger (web3), the daemon and the codec (torch) load in seconds
    from fedtrail.ledger import Ledger
    from fedtrail.node.config import NodeConfig
    from fedtrail.node.daemon import RoundRecord
    from fedtrail.node.scoring import ScoreRecord

log = logging.getLogger("fedtrail.node")


@click.group()
def node() -> None:
    """Run a site: create its identity, train and submit updates, watch its standing."""


folder_argument = click.argument(
    "folder", type=click.Path(file_okay=False, path_type=Path), default=".", required=False
)


@node.command()
@folder_argument
@click.option("--name", required=True, help="Human-readable site name (e.g. the hospital).")
@click.option(
    "--rpc-url",
    envvar="FEDTRAIL_RPC_URL",
    default=None,
    help="Default: the deployment file's, else http://127.0.0.1:8545.",
)
@click.option(
    "--contract",
    envvar="FEDTRAIL_CONTRACT",
    default=None,
    help="Ledger address (env FEDTRAIL_CONTRACT); overrides the deployment file.",
)
@click.option(
    "--deployment",
    "deployment_path",
    envvar="FEDTRAIL_DEPLOYMENT",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Take the ledger address from a deployment file (env FEDTRAIL_DEPLOYMENT; default: "
    f"./{DEFAULT_DEPLOYMENT} when it exists and no --contract is given).",
)
@click.option(
    "--store",
    envvar="FEDTRAIL_STORE",
    default="http://127.0.0.1:5001",
    show_default=True,
    help="IPFS RPC API, or local:/path for the embedded store.",
)
@click.option(
    "--data",
    "data_path",
    default="pneumonia",
    show_default=True,
    help="A shipped dataset (pneumonia, retina), a MedMNIST .npz or an image folder; the "
    "model's channels, classes and class names are derived from it.",
)
@click.option(
    "--shard", default=None, metavar="I/N", help="Simulate site I of N on a shared file (demos)."
)
@click.option("--partition", type=click.Choice(["iid", "dirichlet", "quantity"]), default="iid")
@click.option("--compression", type=LazyChoice(compression_methods), default="none")
@model_options
@click.option("--fast-kdf", is_flag=True, hidden=True, help="Light scrypt (tests/demos only).")
@format_option()
def init(
    folder: Path,
    name: str,
    rpc_url: str | None,
    contract: str | None,
    deployment_path: Path | None,
    store: str,
    data_path: str,
    shard: str | None,
    partition: str,
    compression: str,
    arch: str | None,
    image_size: int | None,
    fast_kdf: bool,
    fmt: str,
) -> None:
    """Create a node folder: an encrypted keystore and config.toml."""
    from fedtrail.ledger import Deployment, checksum
    from fedtrail.ml.catalog import load_source
    from fedtrail.ml.task import task_for
    from fedtrail.node.config import CONFIG_NAME, DataConfig, NodeConfig, write_node_config

    cfg_path = folder / CONFIG_NAME
    if cfg_path.exists():
        raise ConfigError(f"{cfg_path} exists; this folder is already a node")
    # the address wins over the file, and then the file's URL is not read either: the rule of
    # every other ledger command (open_ledger), so one exported FEDTRAIL_* set serves them all
    deployment = None
    if not contract and deployment_path is None and Path(DEFAULT_DEPLOYMENT).is_file():
        deployment_path = Path(DEFAULT_DEPLOYMENT)  # where every other ledger command looks
    if not contract and deployment_path is not None:
        deployment = Deployment.from_file(deployment_path)
        contract = deployment.address
    rpc_url = resolve_rpc(rpc_url, deployment)
    if not contract:
        raise ConfigError(
            f"give the ledger: --contract ADDRESS or --deployment FILE (no ./{DEFAULT_DEPLOYMENT})"
        )
    contract = checksum(contract)
    from fedtrail.storage.store import open_store

    # parse only (no connection): a mistyped endpoint fails here, not at `node run`
    check_rpc_url(rpc_url)
    open_store(store)
    shard_index, shard_count = 0, 1
    if shard:
        try:
            i, n = (int(x) for x in shard.split("/"))
        except ValueError as exc:
            raise ConfigError(f"--shard must look like I/N, got {shard!r}") from exc
        if not 0 <= i < n:
            raise ConfigError(f"--shard I/N names site I of N, 0 <= I < N; got {shard!r}")
        shard_index, shard_count = i, n
    from fedtrail.storage.codec import Compression

    source = load_source(data_path)
    task = task_for(source, arch=arch, image_size=image_size)
    data = DataConfig(
        path=data_path,
        shard_index=shard_index,
        shard_count=shard_count,
        partition=partition,
        class_names=task.class_names,
    )
    if shard_count > 1:  # the partition `node run` will make: too many shards fail here
        data.load()
    config = NodeConfig(
        name=name,
        rpc_url=rpc_url,
        contract=contract,
        store=store,
        data=data,
        compression=Compression(method=compression),  # type: ignore[arg-type]
        model=task.spec,
    )
    # asked before the folder is made: a missing passphrase (exit 2) leaves nothing behind
    passphrase = read_passphrase(folder / config.keystore, confirm=True)
    folder.mkdir(parents=True, exist_ok=True)
    account = create_keystore(
        folder / config.keystore, passphrase, kdf_n=FAST_KDF_N if fast_kdf else None
    )
    write_node_config(cfg_path, config)
    if fmt == "json":
        emit(
            {
                "name": name,
                "folder": str(folder),
                "address": account.address,
                "keystore": str(folder / config.keystore),
                "config": str(cfg_path),
                "contract": contract,
                "rpc_url": rpc_url,
                "store": store,
                "arch": task.spec.arch,
                "in_channels": task.spec.in_channels,
                "image_size": task.spec.image_size,
                "num_classes": task.num_classes,
                "class_names": list(task.class_names),
            },
            "json",
        )
        return
    click.echo(f"node '{name}' created in {folder}")
    click.echo(f"  address  {account.address}")
    click.echo(f"  keystore {folder / config.keystore} (encrypted)")
    click.echo(f"  config   {cfg_path}")
    click.echo(
        f"  task     {task.spec.arch} {task.spec.in_channels}x{task.spec.image_size}x"
        f"{task.spec.image_size}, {task.num_classes} classes: {', '.join(task.class_names)}"
    )
    click.echo(
        f"Ask the coordinator to run: fedtrail node register {account.address} --name '{name}' "
        "--max-samples <size of this site's training set>"
    )


@node.command()
@click.argument("address")
@click.option("--name", default="", help="Site name recorded on chain.")
@click.option(
    "--max-samples",
    type=click.IntRange(1, SANE_SITE_SAMPLES),
    required=True,
    help="The most training samples the site may claim for one update (the ledger refuses a "
    "reveal above it; the sample count weights the site's update), 1..10**9. The coordinator "
    "sets it from what it knows of the site's data, e.g. its training-set size.",
)
@click.option(
    "--epsilon-budget",
    type=FiniteFloatRange(min=0, min_open=True),
    default=None,
    help="Also give the site this differential-privacy budget (total epsilon; see "
    "set-privacy-budget).",
)
@click.option(
    "--fund",
    type=FiniteFloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Also send this much ETH for gas (local chains).",
)
@ledger_options
@signer_options
@format_option()
def register(
    address: str,
    name: str,
    max_samples: int,
    epsilon_budget: float | None,
    fund: float,
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    keystore: Path | None,
    dev_account: int | None,
    fmt: str,
) -> None:
    """Coordinator helper: register a site's address on the ledger."""
    from fedtrail.chain import balance as balance_of
    from fedtrail.chain import fund as send_funds
    from fedtrail.ledger import checksum

    budget = None if epsilon_budget is None else _epsilon_micro(epsilon_budget)
    ledger, signer = open_signed_ledger(rpc_url, deployment_path, contract, keystore, dev_account)
    wei = int(fund * 10**18)
    if wei and balance_of(ledger.w3, signer.address) < wei:  # before registering: all or none
        raise ConfigError(f"--fund {fund}: {signer.address} holds less than {fund} ETH")
    from fedtrail.protocol.names import name_problems, shown

    others = [s.name for s in ledger.get_sites() if s.address != checksum(address)]
    problems = name_problems(name, others)
    if problems:  # before any transaction: a look-alike name misleads every reader (a59)
        raise ConfigError(f"site name '{shown(name)}' refused: " + "; ".join(problems))
    tx = ledger.register_site(signer, address, name, max_samples)
    doc: dict[str, Any] = {
        "site": checksum(address),
        "name": name,
        "max_samples": max_samples,
        **tx_fields(tx),
    }
    if fmt != "json":
        click.echo(
            f"registered {checksum(address)} as '{name}', at most {max_samples} samples per "
            f"update (tx {tx.tx_hash})"
        )
    if budget is not None:
        tx = ledger.set_privacy_budget(signer, address, budget)
        doc["privacy_budget"] = {
            "epsilon": epsilon_budget,
            "epsilon_micro": budget,
            **tx_fields(tx),
        }
        if fmt != "json":
            click.echo(
                f"privacy budget: epsilon {epsilon_budget:g} ({budget} micro-epsilon; "
                f"tx {tx.tx_hash})"
            )
    if wei:
        send_funds(ledger.w3, signer, address, wei)
        doc["funded_eth"] = fund
        if fmt != "json":
            click.echo(f"sent {fund} ETH to {checksum(address)}")
    if fmt == "json":
        emit(doc, "json")


@node.command("set-max-samples")
@click.argument("address")
@click.argument("max_samples", metavar="MAX_SAMPLES", type=click.IntRange(1, SANE_SITE_SAMPLES))
@ledger_options
@signer_options
@format_option()
def set_max_samples(
    address: str,
    max_samples: int,
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    keystore: Path | None,
    dev_account: int | None,
    fmt: str,
) -> None:
    """Coordinator helper: change the most samples a registered site may claim per update
    (1..10**9: the ledger takes up to 2**48-1, but above 10**9 a scored update can round to
    weight 0, README *Peer rounds*; it applies from the site's next reveal on)."""
    from fedtrail.ledger import checksum

    site = checksum(address)
    ledger, signer = open_signed_ledger(rpc_url, deployment_path, contract, keystore, dev_account)
    before = ledger.get_site(site)
    tx = ledger.set_max_samples(signer, site, max_samples)
    doc = {
        "site": site,
        "max_samples": max_samples,
        "previous_max_samples": before.max_samples if before is not None else None,
        **tx_fields(tx),
    }
    if fmt == "json":
        emit(doc, "json")
    else:
        click.echo(
            f"{site} may claim at most {max_samples} samples per update from its next reveal on "
            f"(was {doc['previous_max_samples']}; tx {tx.tx_hash})"
        )


@node.command("set-privacy-budget")
@click.argument("address")
@click.option(
    "--epsilon",
    type=FiniteFloatRange(min=0),
    required=True,
    help="The site's total epsilon budget (e.g. 8), stored on chain in micro-epsilon rounded "
    "up; 0 removes the budget (only while the site has spent nothing). The ledger refuses a "
    "budget below what the site already spent.",
)
@ledger_options
@signer_options
@format_option()
def set_privacy_budget(
    address: str,
    epsilon: float,
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    keystore: Path | None,
    dev_account: int | None,
    fmt: str,
) -> None:
    """Coordinator helper: set a site's differential-privacy budget. From its next reveal on,
    the site must declare each update's epsilon and its cumulative spend may not pass the
    budget."""
    from fedtrail.ledger import checksum
    from fedtrail.protocol.privacy import from_micro

    site = checksum(address)
    budget = _epsilon_micro(epsilon)
    ledger, signer = open_signed_ledger(rpc_url, deployment_path, contract, keystore, dev_account)
    before = ledger.privacy(site)
    tx = ledger.set_privacy_budget(signer, site, budget)
    doc = {
        "site": site,
        "epsilon_budget": from_micro(budget),
        "epsilon_budget_micro": budget,
        "previous_epsilon_budget_micro": before.budget_micro,
        "epsilon_spent_micro": before.spent_micro,
        **tx_fields(tx),
    }
    if fmt == "json":
        emit(doc, "json")
    elif budget == 0:
        click.echo(f"{site} has no privacy budget now (tx {tx.tx_hash})")
    else:
        click.echo(
            f"{site} may spend epsilon {from_micro(budget):g} in all ({budget} micro-epsilon; "
            f"spent so far {from_micro(before.spent_micro):g}, previous budget "
            f"{from_micro(before.budget_micro):g}; tx {tx.tx_hash})"
        )


def _epsilon_micro(epsilon: float) -> int:
    """A budget flag in the chain's micro-epsilon (rounded up); a usage error when it is not
    finite or is over the contract's limit on a budget (1,099,511.627775 epsilon)."""
    from fedtrail.protocol.privacy import MAX_PRIVACY_MICRO, InvalidPrivacy, from_micro, to_micro

    try:
        micro = to_micro(epsilon)
    except InvalidPrivacy as exc:
        raise click.BadParameter(str(exc)) from exc
    if micro > MAX_PRIVACY_MICRO:
        raise click.BadParameter(
            f"epsilon {epsilon:g} is over the ledger's limit on a budget, "
            f"{from_micro(MAX_PRIVACY_MICRO):f} (and far over any epsilon that protects anyone)"
        )
    return micro


def _epsilon_text(micro: int) -> str:
    """Micro-epsilon as exact epsilon text (as the chain's account reads it: 500000 ->
    ``0.5``)."""
    return f"{micro / EPSILON_SCALE:.6f}".rstrip("0").rstrip(".")


def _load_folder(folder: Path, **overrides: Any) -> tuple[NodeConfig, Ledger]:
    from fedtrail.ledger import Ledger
    from fedtrail.node.config import CONFIG_NAME, load_node_config

    config = load_node_config(folder / CONFIG_NAME).with_overrides(**overrides)
    if not config.contract:
        raise ConfigError(f"{folder / CONFIG_NAME} names no contract")
    ledger = Ledger.connect(connect(config.rpc_url), config.contract)
    return config, ledger


def _val_decision(rec: RoundRecord | None) -> dict[str, Any]:
    """The local validation F1 at the threshold the node decided with (the round log's, or
    0.5: records written before the node read it decided at 0.5) and that threshold. For more
    than two classes: the macro F1 of the decision ``argmax(logits + bias)`` at the round log's
    bias (no threshold), its balanced accuracy and every class's recall."""
    if rec is not None and (rec.val_classes or 2) > 2:
        return {
            "val_f1": rec.val_f1_calibrated,
            "threshold": None,
            "val_bacc": rec.val_balanced_accuracy_calibrated,
            "val_recall": rec.val_recall_calibrated,
        }
    if rec is None or rec.val_f1 is None:
        return {"val_f1": None, "threshold": None}
    if rec.val_threshold is None:
        return {"val_f1": rec.val_f1, "threshold": 0.5}
    return {"val_f1": rec.val_f1_calibrated, "threshold": rec.val_threshold}


def _scoring(rec: ScoreRecord | None) -> dict[str, Any]:
    """The site's part as a validator of a peer round: how far its scoring got (``scored``,
    ``committed``, ``revealed``, ``skipped``: see ``scoring_note``) and the scores it gave."""
    if rec is None:
        return {"scoring": "", "scores_given": None, "scoring_note": ""}
    return {
        "scoring": rec.phase,
        "scores_given": [s / SCORE_SCALE for s in rec.scores] or None,
        "scoring_note": rec.note,
    }


def _personal(rec: RoundRecord | None) -> dict[str, Any]:
    """The round's finalized global model and the site's personalised one (fine-tuned from
    it, kept in the folder) on the site's validation split: AUC and the calibrated F1 (more
    than two classes: also balanced accuracy) at the round log's decision. Empty when the
    node made no personalised model for the round. ``use``: the model with the better
    validation AUC (personal when at least as good)."""
    if rec is None or not rec.personal_sha256:
        return {}
    out: dict[str, Any] = {
        "global_val_auc": rec.global_val_auc,
        "personal_val_auc": rec.personal_val_auc,
        "global_val_f1": rec.global_val_f1_calibrated,
        "personal_val_f1": rec.personal_val_f1_calibrated,
        "use": {True: "personal", False: "global", None: None}[rec.personal_preferred],
    }
    if (rec.val_classes or 2) > 2:
        out["global_val_bacc"] = rec.global_val_balanced_accuracy_calibrated
        out["personal_val_bacc"] = rec.personal_val_balanced_accuracy_calibrated
    return out


@node.command()
@folder_argument
@click.option(
    "--rpc-url",
    envvar="FEDTRAIL_RPC_URL",
    default=None,
    help="Override the config's rpc_url (env FEDTRAIL_RPC_URL).",
)
@format_option("table", "json")
def status(folder: Path, rpc_url: str | None, fmt: str) -> None:
    """This site's rounds, submissions, scores, weights and reputation, from the chain; with
    its local validation AUC, and F1 at the decision threshold it used (the latest round log's,
    fitted by the aggregator; 0.5 without one). For more than two classes: macro AUC, macro F1
    and balanced accuracy of the decision at the log's bias, and every class's recall. Where
    the round's terms asked for personalisation: the finalized global model's and the site's
    personalised model's validation AUC and F1 (``global_val_*``, ``personal_val_*``). Its
    differential privacy from the chain: epsilon budget and cumulative spend (``privacy``),
    and per round the epsilon its update declared (``epsilon``; empty for a plain reveal).
    Beside the chain's spend, what this node counts against its budget (``counted_*``): that
    spend plus the epsilon of its DP updates that left the node uncharged (``uncharged_*``,
    by round: skipped records that keep a CID, a reveal refused or dropped with a reopened
    round's opening), which is why it may refuse a round the chain's spend alone would
    allow."""
    from fedtrail.node.daemon import NodeState
    from fedtrail.node.scoring import SCORES_NAME, ScoreState

    config, ledger = _load_folder(folder, rpc_url=rpc_url)
    address = keystore_address(folder / config.keystore)
    site = ledger.get_site(address)
    local = NodeState.load(folder / "state.json")
    scoring = ScoreState.load(folder / SCORES_NAME)
    account = ledger.privacy(address)
    spends = {s.round: s.epsilon_micro for s in ledger.privacy_spends(site=address)}
    rounds = []
    for r in range(1, ledger.current_round() + 1):
        info = ledger.get_round(r)
        sub = ledger.get_submission(r, address)
        rec = local.rounds.get(r)
        rounds.append(
            {
                "round": r,
                "phase": info.phase.label,
                "committed": sub is not None,
                "revealed": bool(sub and sub.revealed),
                "samples": sub.num_samples if sub else None,
                "score": sub.score / SCORE_SCALE if sub and info.phase.has_scores else None,
                "reason": reason_label(sub.reason) if sub and info.phase.has_scores else None,
                "weight": sub.weight / WEIGHT_SCALE if sub and info.phase.has_scores else None,
                "epsilon": spends[r] / EPSILON_SCALE if r in spends else None,
                "local_state": rec.phase if rec else "",
                "val_auc": rec.val_auc if rec else None,
                **_val_decision(rec),
                **_personal(rec),
                **(_scoring(scoring.rounds.get(r)) if scoring.rounds else {}),
            }
        )
    uncharged = local.uncharged_releases()
    counted = account.spent_micro + sum(uncharged.values())
    privacy = {
        **account.to_json(),
        "counted_micro": counted,
        "counted_epsilon": counted / EPSILON_SCALE,
        "uncharged_micro": sum(uncharged.values()),
        "uncharged_epsilon": sum(uncharged.values()) / EPSILON_SCALE,
        "uncharged_rounds": {str(r): micro / EPSILON_SCALE for r, micro in uncharged.items()},
    }
    doc = {
        "name": config.name,
        "address": address,
        "ledger": ledger.address,
        "registered": bool(site and site.registered),
        "reputation": site.reputation / SCORE_SCALE if site else 0.0,
        "valued_rounds": site.valued_rounds if site else 0,
        "privacy": privacy,
        "rounds": rounds,
    }
    standing = ledger.validator_standing(address)
    if standing.rated_rounds:
        doc["validator_reputation"] = standing.reputation / SCORE_SCALE
        doc["validator_rated_rounds"] = standing.rated_rounds
    if fmt == "json":
        emit(doc, "json")
        return
    click.echo(f"site        {doc['name']} ({address})")
    click.echo(f"ledger      {ledger.address}")
    click.echo(f"registered  {doc['registered']}")
    click.echo(f"reputation  {doc['reputation']:.4f} over {doc['valued_rounds']} valued round(s)")
    if standing.rated_rounds:
        click.echo(
            f"validator   reputation {standing.reputation / SCORE_SCALE:.4f} over "
            f"{standing.rated_rounds} rated peer round(s)"
        )
    if account.used or uncharged:
        click.echo(f"privacy     {account.describe()} (summed on chain over its rounds)")
    if uncharged:
        where = ", ".join(str(r) for r in uncharged)
        click.echo(
            f"            counted locally epsilon {_epsilon_text(counted)} "
            f"({_epsilon_text(sum(uncharged.values()))} from skipped reveals of round(s) "
            f"{where}: released, not charged on chain); the node holds this to its budget"
        )
    click.echo("")
    columns = list(dict.fromkeys(k for r in rounds for k in r))  # multi-class rows add some
    if not account.used:  # no DP: no empty epsilon column
        columns = [c for c in columns if c != "epsilon"]
    emit(rounds, "table", columns=columns)


@node.command()
@folder_argument
@click.option("--once", is_flag=True, help="Take part in one round, then exit.")
@click.option(
    "--rpc-url",
    envvar="FEDTRAIL_RPC_URL",
    default=None,
    help="Override the config's rpc_url (env FEDTRAIL_RPC_URL).",
)
@click.option(
    "--store",
    envvar="FEDTRAIL_STORE",
    default=None,
    help="Override the config's store (env FEDTRAIL_STORE).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=None,
    help="torch CPU threads (default: torch's).",
)
@click.option("-v", "--verbose", is_flag=True)
def run(
    folder: Path,
    once: bool,
    rpc_url: str | None,
    store: str | None,
    threads: int | None,
    verbose: bool,
) -> None:
    """Run the site daemon: watch for rounds, train, commit, store, reveal (restart-safe)."""
    import torch

    from fedtrail.node.daemon import NodeHooks, SiteNode

    config, ledger = _load_folder(folder, rpc_url=rpc_url, store=store)
    setup_logging(folder / "node.log", verbose=verbose)
    if threads:
        torch.set_num_threads(threads)
    account = unlock_keystore(folder / config.keystore)
    content = open_checked_store(config.store)
    train, val = config.data.load(base=folder, image_size=config.model.image_size)
    stop = stop_on_signals("finishing the current step, then stopping")
    site = SiteNode(
        ledger=ledger,
        store=content,
        account=account,
        config=replace(config),
        folder=folder,
        train=train,
        val=val,
        progress=sys.stderr.isatty(),
        stop_event=stop,
        hooks=NodeHooks(at_step=launcher_step_hook()),
    )
    done = site.run(once=once)
    log.info("exiting after %d round(s)", done)
