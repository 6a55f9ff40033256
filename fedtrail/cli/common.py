"""Options and helpers shared by the command groups: where the chain is, which ledger, who signs."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import click

from fedtrail.chain import DEFAULT_RPC_URL, connect, dev_account
from fedtrail.errors import ConfigError, InvalidStoreConfig
from fedtrail.keys import PASSPHRASE_ENV, keystore_address, load_keystore, passphrase_from_env
from fedtrail.protocol.codes import MAX_ROUND_ID
from fedtrail.protocol.terms import MAX_IMAGE_SIZE

if TYPE_CHECKING:  # web3, the ledger and the store load in seconds: imported where used
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from fedtrail.ledger import Deployment, Ledger, TxResult
    from fedtrail.storage.store import ContentStore

F = TypeVar("F", bound=Callable[..., Any])


class LazyChoice(click.Choice[str]):
    """A ``click.Choice`` whose names come from ``load`` on first use (parsing a value, or
    help that shows them): the registries that hold them import torch, and a command module is
    imported for every ``fedtrail --help``."""

    def __init__(self, load: Callable[[], Sequence[str]], case_sensitive: bool = True) -> None:
        self._load = load
        self._loaded: tuple[str, ...] | None = None
        super().__init__((), case_sensitive=case_sensitive)

    @property
    def choices(self) -> tuple[str, ...]:
        if self._loaded is None:
            self._loaded = tuple(self._load())
        return self._loaded

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        if value:
            self._loaded = tuple(value)


class FiniteFloatRange(click.FloatRange):
    """A ``click.FloatRange`` that also refuses NaN and infinity (a usage error): a NaN passes
    every bound of a plain range (each comparison is false), and ``--fund nan`` registered a
    site and sent nothing, ``--poll-interval nan`` polled without pause."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{rv} is not a finite number", param, ctx)
        return rv


class DeferredHelpOption(click.Option):
    """An option whose help text is made by ``help_text`` when help is shown (it names a
    constant whose module imports torch)."""

    def __init__(self, *args: Any, help_text: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._help_text = help_text

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if self.help is None:
            self.help = self._help_text()
        return super().get_help_record(ctx)


DEV_CHAIN_IDS = {31337, 1337}  # Anvil, Ganache

ROUND_ID = click.IntRange(1, MAX_ROUND_ID)
"""A round number as the contract can hold it; anything else is a usage error (exit 2)."""
DEFAULT_DEPLOYMENT = "deployment.json"


def compression_methods() -> tuple[str, ...]:
    """The update codec's compression methods (the codec loads torch)."""
    from fedtrail.storage.codec import CompressionMethod

    methods: tuple[str, ...] = get_args(CompressionMethod)
    return methods


def valuation_modes() -> tuple[str, ...]:
    """Who may score a round's updates, as a round log records it (the log loads jsonschema
    and eth_account)."""
    from fedtrail.protocol.roundlog import VALUATION_MODES

    return VALUATION_MODES


def rpc_option(func: F) -> F:
    return click.option(
        "--rpc-url",
        envvar="FEDTRAIL_RPC_URL",
        default=None,
        help="JSON-RPC endpoint of the chain (env FEDTRAIL_RPC_URL; default: the deployment "
        f"file's, else {DEFAULT_RPC_URL}).",
    )(func)


def ledger_options(func: F) -> F:
    func = click.option(
        "--contract",
        "contract",
        envvar="FEDTRAIL_CONTRACT",
        default=None,
        help="Ledger address (env FEDTRAIL_CONTRACT); overrides the deployment file.",
    )(func)
    func = click.option(
        "--deployment",
        "deployment_path",
        envvar="FEDTRAIL_DEPLOYMENT",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_DEPLOYMENT,
        show_default=True,
        help="Deployment file written by `fedtrail chain deploy` (env FEDTRAIL_DEPLOYMENT).",
    )(func)
    return rpc_option(func)


def signer_options(func: F) -> F:
    func = click.option(
        "--dev-account",
        type=click.IntRange(0, 2**31 - 1),
        default=None,
        help="Sign with account N of the public development mnemonic (Anvil/Ganache only).",
    )(func)
    return click.option(
        "--keystore",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"Encrypted keystore to sign with; passphrase from ${PASSPHRASE_ENV} or a prompt.",
    )(func)


def open_checked_store(location: str, *, reading: bool = False) -> ContentStore:
    """A store that answered: a daemon that is down is reported once, naming the endpoint.

    ``reading``: the command only reads (an audit, an explanation), so a local store folder
    that does not exist is a usage error naming it; read as an empty store, it made every
    document the chain names "missing" and failed the audit as if the aggregator had withheld
    them. A writer's folder (a node's, the aggregator's) is made on its first put."""
    from fedtrail.storage.store import IpfsStore, LocalStore, open_store

    store = open_store(location)
    if isinstance(store, IpfsStore):
        store.check()
    elif reading and isinstance(store, LocalStore) and not store.root.is_dir():
        raise InvalidStoreConfig(
            f"no local content store at {store.root}: the folder does not exist "
            "(give the folder the blobs were stored in: --store local:DIR)"
        )
    return store


def store_option(func: F) -> F:
    return click.option(
        "--store",
        "store_location",
        envvar="FEDTRAIL_STORE",
        default="http://127.0.0.1:5001",
        show_default=True,
        help="IPFS RPC API or local:/path (env FEDTRAIL_STORE).",
    )(func)


def aggregation_options(func: F) -> F:
    """--rule, --statistics, --valuation, --metric, --standing: shared by `aggregator run` and
    `demo`; the choices are the registries' names, read when a value is parsed or help is shown
    (the registries load torch)."""

    def rule_names() -> tuple[str, ...]:
        from fedtrail.ml.aggregation import RULE_NAMES

        return RULE_NAMES

    def statistics_rules() -> tuple[str, ...]:
        from fedtrail.ml.aggregation import STATISTICS_RULES

        return STATISTICS_RULES

    def valuation_methods() -> tuple[str, ...]:
        from fedtrail.valuation import METHODS

        return METHODS

    def metrics() -> tuple[str, ...]:
        from fedtrail.valuation import METRICS

        return METRICS

    def valuation_help() -> str:
        from fedtrail.valuation import AUTO_EXACT_SITES

        return f"Exact Shapley switches to Monte-Carlo above {AUTO_EXACT_SITES} sites."

    func = click.option(
        "--standing/--per-round",
        default=True,
        show_default=True,
        help="Score from values accumulated across rounds, demote-only (chained through the "
        "round logs), or each round on its own.",
    )(func)
    func = click.option(
        "--metric",
        type=LazyChoice(metrics),
        default="balanced_loss",
        show_default=True,
        help="Validation utility of the valuation (balanced_loss: class-balanced log loss "
        "after an intercept fit, which values label quality rather than label prior).",
    )(func)
    func = click.option(
        "--valuation",
        type=LazyChoice(valuation_methods),
        default="shapley",
        show_default=True,
        cls=DeferredHelpOption,
        help_text=valuation_help,
    )(func)
    func = click.option(
        "--statistics",
        type=LazyChoice(statistics_rules),
        default="anchored_median",
        show_default=True,
        help="How BatchNorm running statistics are combined: their coordinate median over the "
        "paid updates with the start model's as votes up to three (anchored_median), over the "
        "paid updates alone (median), or weighted like the weights (a site can shift a "
        "statistic without changing a weight; recorded in the terms; models without them "
        "ignore it).",
    )(func)
    return click.option(
        "--rule",
        type=LazyChoice(rule_names),
        default="weighted",
        show_default=True,
        help="Aggregation rule (robust rules still use only updates with weight > 0).",
    )(func)


def model_options(func: F) -> F:
    """``--arch`` and ``--image-size``: the model of a federation's task (the rest — channels,
    classes and their names — comes from the data)."""
    func = click.option(
        "--image-size",
        type=click.IntRange(4, MAX_IMAGE_SIZE),
        default=None,
        help="Model input size in pixels; images are resized to it (default: the data's).",
    )(func)
    return click.option(
        "--arch",
        default=None,
        help="Model architecture: smallcnn (default) or a MONAI network (densenet121, resnet10, "
        "resnet18; they suit 64-224 px).",
    )(func)


def setup_logging(logfile: Path, *, verbose: bool = False) -> None:
    """Timestamped logs to stderr and to a file in the role's folder, one printable line a
    record (:class:`~fedtrail.cli.output.PrintableFormatter`: they carry others' strings)."""
    from fedtrail.cli.output import PrintableFormatter

    fmt = PrintableFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    root = logging.getLogger("fedtrail")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(logfile)):
        handler.setFormatter(fmt)
        root.addHandler(handler)


def stop_on_signals(message: str) -> threading.Event:
    """An event set by SIGTERM/SIGINT, so a daemon finishes or abandons its step cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("fedtrail").info("signal %d: %s", signum, message)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def resolve_rpc(rpc_url: str | None, deployment: Deployment | None = None) -> str:
    """Flag or env first, then the URL the deployment file recorded, then the default."""
    if rpc_url:
        return rpc_url
    if deployment is not None and deployment.rpc_url:
        return deployment.rpc_url
    return DEFAULT_RPC_URL


def open_ledger(rpc_url: str | None, deployment_path: Path, contract: str | None) -> Ledger:
    from web3 import Web3

    from fedtrail.ledger import Deployment, Ledger

    if contract:
        if not Web3.is_address(contract):
            raise ConfigError(f"--contract {contract!r} is not an Ethereum address")
        return Ledger.connect(connect(resolve_rpc(rpc_url)), contract)
    if not deployment_path.exists():
        raise ConfigError(
            f"no ledger given: pass --contract ADDRESS or --deployment FILE "
            f"({deployment_path} does not exist)"
        )
    deployment = Deployment.from_file(deployment_path)
    return Ledger.at(connect(resolve_rpc(rpc_url, deployment)), deployment)


def load_signer(w3: Web3, keystore: Path | None, dev_account_index: int | None) -> LocalAccount:
    if keystore is not None and dev_account_index is not None:
        raise ConfigError("give either --keystore or --dev-account, not both")
    if dev_account_index is not None:
        chain_id = int(w3.eth.chain_id)
        if chain_id not in DEV_CHAIN_IDS:
            raise ConfigError(
                f"--dev-account uses public test keys; refused on chain {chain_id} "
                f"(only local development chains {sorted(DEV_CHAIN_IDS)})"
            )
        return dev_account(dev_account_index)
    if keystore is None:
        raise ConfigError("a signing key is needed: pass --keystore FILE (or --dev-account N)")
    return unlock_keystore(keystore)


def unlock_keystore(keystore: Path) -> LocalAccount:
    """The account of a keystore file, its passphrase from the environment or a prompt. A
    missing file or one that is no keystore is said first, before a passphrase is asked for."""
    keystore_address(keystore)
    return load_keystore(keystore, read_passphrase(keystore))


def open_signed_ledger(
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    keystore: Path | None,
    dev_account_index: int | None,
) -> tuple[Ledger, LocalAccount]:
    """The ledger and the signer of a command that sends a transaction (the signer options)."""
    ledger = open_ledger(rpc_url, deployment_path, contract)
    return ledger, load_signer(ledger.w3, keystore, dev_account_index)


def tx_fields(tx: TxResult) -> dict[str, Any]:
    """A mined transaction as the JSON fields every command reports."""
    return {"tx": tx.tx_hash, "block": tx.block_number, "gas_used": tx.gas_used}


def read_passphrase(keystore: Path, *, confirm: bool = False) -> str:
    from_env = passphrase_from_env()
    if from_env:
        return from_env
    if not os.isatty(0):
        raise ConfigError(
            f"no passphrase for {keystore}: set {PASSPHRASE_ENV} or run in a terminal"
        )
    value: str = click.prompt(
        f"Passphrase for {keystore}", hide_input=True, confirmation_prompt=confirm
    )
    return value
