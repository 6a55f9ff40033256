"""`fedtrail aggregator ...`: run the aggregation service."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from fedtrail.aggregator.clock import STALL_SECONDS, ClockWatch
from fedtrail.chain import MAX_POLL_INTERVAL
from fedtrail.cli.common import (
    ROUND_ID,
    FiniteFloatRange,
    LazyChoice,
    aggregation_options,
    ledger_options,
    load_signer,
    model_options,
    open_checked_store,
    open_ledger,
    setup_logging,
    signer_options,
    stop_on_signals,
    store_option,
    valuation_modes,
)
from fedtrail.cli.output import metrics_line, printable
from fedtrail.errors import ConfigError
from fedtrail.hooks import launcher_step_hook
from fedtrail.protocol.codes import MAX_ROUND_WINDOW
from fedtrail.protocol.terms import DEFAULT_VALIDATOR_GAME, PERSONALISATION_METHODS, VALIDATOR_GAMES
from fedtrail.protocol.weights import SCORE_SCALE

if TYPE_CHECKING:  # the service, the valuation and the ML load torch: imported where used
    from fedtrail.aggregator.service import AggregatorSettings, RoundOutcome
    from fedtrail.ledger.client import Ledger
    from fedtrail.ml.models import ModelSpec
    from fedtrail.protocol.roundlog import ValuationSettings
    from fedtrail.storage.store import ContentStore

log = logging.getLogger("fedtrail.aggregator")


@click.group()
def aggregator() -> None:
    """Open rounds, value every update on chain, aggregate, finalize."""


def _large_games() -> tuple[str, ...]:
    from fedtrail.valuation import LARGE_GAMES

    return ("none", *LARGE_GAMES)


def _initial_salt(choice: str, ledger: Ledger, store: ContentStore, seed: int) -> str:
    """``--initial-salt``: 'seeded' (:func:`~fedtrail.protocol.terms.seeded_salt`), 64 hex
    digits as given, or 'random' (:func:`~fedtrail.aggregator.service.fresh_or_recorded_salt`:
    the latest round's salt when its terms carry one, else 32 fresh bytes)."""
    from fedtrail.aggregator.service import fresh_or_recorded_salt
    from fedtrail.protocol.terms import seeded_salt, valid_salt

    if choice == "seeded":
        return seeded_salt(seed)
    if choice == "random":
        return fresh_or_recorded_salt(ledger, store)
    if not valid_salt(choice):
        raise click.BadParameter(
            "give 'random', 'seeded' or 64 lowercase hex digits", param_hint="--initial-salt"
        )
    return choice


def default_consent_warnings(settings: AggregatorSettings) -> list[str]:
    """What in ``settings`` sites refuse under their default ``[accept]`` table (they skip
    those rounds, and auditors need the same widened table), one warning each."""
    from fedtrail.valuation.limits import ThresholdLimits, statistics_refusal

    defaults = ThresholdLimits()
    out = []
    combiner = settings.combiner
    outside = (
        []
        if combiner is None
        else [
            *(f"{b} [stricter]" for b in defaults.breaches(combiner)),
            *(f"{b} [looser]" for b in defaults.loosest.breaches(combiner)),
        ]
    )
    if outside:
        out.append(
            "thresholds outside what sites accept by default: " + "; ".join(outside) + "; sites "
            "skip these rounds unless their config.toml's [accept] (stricter) or "
            "[accept.loosest] (looser) takes them, and auditors need the same table (audit "
            "verify --accept)"
        )
    payment = defaults.payment_breaches(settings.rule, _offered_valuation(settings))
    if payment:
        out.append(
            "payment settings outside what sites accept by default: " + "; ".join(payment) + "; "
            "sites skip these rounds unless their config.toml's [accept] takes them, and "
            "auditors need the same table (audit verify --accept)"
        )
    running = bool(settings.model.statistic_names())
    if statistics_refusal(defaults, settings.rule, running_statistics=running):
        out.append(
            f"running statistics combined by {settings.rule.statistics!r}: sites skip these "
            "rounds unless their config.toml's [accept] statistics takes it, and auditors need "
            "the same table (audit verify --accept); one site can shift its statistics to "
            "collapse the model"
        )
    # a peer round's score commit window (default: the reveal window, as the service opens it)
    peers = settings.valuation_mode == "peers"
    scored = (settings.score_commit_seconds or settings.reveal_seconds) if peers else None
    if scored is not None and scored < defaults.min_commit_seconds:
        out.append(
            f"a score commit window of {scored} s: sites decline peer rounds whose score "
            f"window is shorter than their [accept] min_commit_seconds "
            f"({defaults.min_commit_seconds} s by default) on chain, and auditors fail it in "
            "terms.windows unless given the same table (audit verify --accept)"
        )
    if settings.round_seconds < defaults.min_commit_seconds:
        out.append(
            f"a commit window of {settings.round_seconds} s: sites decline rounds whose window "
            f"is shorter than their [accept] min_commit_seconds ({defaults.min_commit_seconds} "
            "s by default) on chain, and later rounds may not be shorter than round 1's; "
            "auditors fail it in terms.windows unless given the same table (audit verify "
            "--accept)"
        )
    reveals = [settings.reveal_seconds]
    if peers:
        reveals.append(settings.score_reveal_seconds or settings.reveal_seconds)
    if min(reveals) < defaults.min_reveal_seconds:
        out.append(
            f"a reveal window of {min(reveals)} s: sites decline rounds whose reveal (or score "
            f"reveal) window is shorter than their [accept] min_reveal_seconds "
            f"({defaults.min_reveal_seconds} s by default) on chain; auditors fail it in "
            "terms.windows unless given the same table (audit verify --accept)"
        )
    return out


def _settings(
    params: Mapping[str, Any],
    *,
    model: ModelSpec,
    class_names: tuple[str, ...],
    initial_salt: str,
) -> AggregatorSettings:
    """The service's settings from ``aggregator run``'s parameters (by name)."""
    from fedtrail.aggregator.service import AggregatorSettings
    from fedtrail.ml.aggregation import AggregationRule
    from fedtrail.valuation import default_combiner

    p = params
    large_game, validator_game = p["large_game"], p["validator_game"]
    return AggregatorSettings(
        rule=AggregationRule(name=p["rule"], statistics=p["statistics"]),
        valuation=p["valuation"],
        metric=p["metric"],
        standing=p["standing"],
        combiner=replace(
            default_combiner(p["standing"]),
            max_sample_ratio=p["max_sample_ratio"],
            size_norm_z=p["size_norm_z"],
            size_norm_count=p["size_norm_count"],
        ),
        explanation_check=p["explanation_check"],
        round_seconds=p["round_seconds"],
        reveal_seconds=p["reveal_seconds"],
        poll_interval=p["poll_interval"],
        seed=p["seed"],
        initial_salt=initial_salt,
        large_game=None if large_game == "none" else large_game,
        model=model,
        class_names=class_names,
        personalise_steps=p["personalise_steps"],
        personalise_lr=p["personalise_lr"],
        personalise_method=p["personalise_method"],
        dp_delta=p["dp_delta"] or 0.0,
        dp_required=p["dp_required"],
        project_shift=p["project_shift"],
        valuation_mode=p["valuation_mode"],
        validator_game=None if validator_game == "none" else validator_game,
        public_screen=p["public_screen"],
        peer_quorum=p["peer_quorum"],
        score_commit_seconds=p["score_commit_seconds"],
        score_reveal_seconds=p["score_reveal_seconds"],
    )


def _other_settings(
    name: str,
    param: click.Parameter,
    params: Mapping[str, Any],
    default: object,
    own: AggregatorSettings,
    settings_of: Callable[[Mapping[str, Any]], AggregatorSettings],
) -> tuple[AggregatorSettings, ...]:
    """The settings ``params`` make with ``param`` at its default, or where it is at its
    default, at each of its other values (the other side of a flag, every other choice, a
    number moved in its range): the fields where their terms differ are the ones that flag
    sets. Those equal to ``own`` (a flag no setting reads) and those the settings refuse are
    left out."""
    value = params[name]
    if value != default:
        values: list[object] = [default]
    elif isinstance(param.type, click.Choice):
        values = [c for c in param.type.choices if c != value]
    elif isinstance(value, bool):
        values = [not value]
    elif isinstance(value, int | float):
        values = []
        near = (
            (value + 1, value - 1) if isinstance(value, int) else (value * 2, value / 2, value + 1)
        )
        for moved in near:
            try:
                values.append(param.type.convert(moved, param, None))
            except click.BadParameter:
                continue
    else:
        values = []
    out = []
    for other in values:
        try:
            settings = settings_of({**params, name: other})
        except ConfigError:
            continue
        if settings != own:
            out.append(settings)
    return tuple(out)


def _as_given(param: click.Parameter, value: object) -> str:
    """``param`` as its operator gave it: ``--max-sample-ratio 10.0``, ``--per-round``."""
    if isinstance(param, click.Option) and param.is_flag and isinstance(value, bool):
        if param.secondary_opts and not value:
            return param.secondary_opts[0]
        return param.opts[0] if value else f"{param.opts[0]} off"
    return f"{param.opts[0]} {value}"


def _offered_valuation(settings: AggregatorSettings) -> ValuationSettings:
    """The valuation block ``settings`` write into round 1's terms (the terms' own function),
    with placeholders for what only the open round decides: the peer quorum (the sites active
    then) and the explanation probe set (published at open)."""
    from fedtrail.protocol.roundlog import ExplanationProbe

    pending = ExplanationProbe(cid="published-at-open", sha256="0" * 64, images=1)
    peers = settings.valuation_mode == "peers"
    check = settings.explanation_check and not peers
    return settings.valuation_terms(
        1, quorum=1 if peers else None, probe=pending if check else None
    )


@aggregator.command()
@ledger_options
@signer_options
@store_option
@click.option(
    "--validation",
    default="pneumonia",
    show_default=True,
    help="Data whose val split scores updates: a shipped dataset (pneumonia, retina) or a "
    "MedMNIST .npz; the task (channels, classes, class names) is derived from it.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=None,
    help="Close this many rounds in this run, then exit (default 1).",
)
@click.option(
    "--until-round",
    type=ROUND_ID,
    default=None,
    help="Exit once the ledger's round N is closed (counted on chain: restarts don't overshoot).",
)
@aggregation_options
@click.option(
    "--explanation-check",
    is_flag=True,
    help="Score 0 (EXPLANATION_SHIFT) updates whose models look at corner tags.",
)
@click.option(
    "--round-seconds",
    type=click.IntRange(1, MAX_ROUND_WINDOW),
    default=600,
    show_default=True,
    help="Commit window of each round (chain seconds; at least the ledger's minimum).",
)
@click.option(
    "--reveal-seconds",
    type=click.IntRange(1, MAX_ROUND_WINDOW),
    default=120,
    show_default=True,
    help="Reveal window after the commit deadline (chain seconds; at least the ledger's minimum).",
)
@click.option(
    "--max-sample-ratio",
    type=FiniteFloatRange(1.0, min_open=True),
    default=10.0,
    show_default=True,
    help="IMPLAUSIBLE_SAMPLES above this many times the median count of the round's other "
    "updates (raise it for a federation of very unequal hospitals; recorded in the round terms).",
)
@click.option(
    "--size-norm-z",
    type=FiniteFloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="The second norm screen (opt-in; 0: off): OUTLIER_NORM above this robust norm z once "
    "an update's claimed count's allowance is taken off (5-8 measured; recorded in the round "
    "terms as size_norm_z; sites take a value above 0 only through their config.toml's "
    "[accept]).",
)
@click.option(
    "--size-norm-count",
    type=FiniteFloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="With --size-norm-z: the largest median count its allowance is judged against (your "
    "typical site's count, so colluders inflating their claims cannot take an honest large "
    "site's allowance away; 0: the round's median claim alone; recorded in the round terms as "
    "size_norm_count).",
)
@click.option(
    "--poll-interval",
    type=FiniteFloatRange(min=0, min_open=True, max=MAX_POLL_INTERVAL),
    default=2.0,
    show_default=True,
)
@click.option(
    "--clock-stall-seconds",
    type=FiniteFloatRange(min=1.0),
    default=STALL_SECONDS,
    show_default=True,
    help="Warn once when the chain's clock has stood still this many wall-clock seconds while "
    "a round waits on its deadline (a dev chain that mines only on transactions).",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option(
    "--initial-salt",
    default="random",
    show_default=True,
    help="The round terms' initial_salt, folded into the round-1 start model's seed with the "
    "chain id and the contract: 'random' (32 bytes from os.urandom; a restart reuses the "
    "latest round's), 'seeded' (derived from --seed: reproducible, but a twin deployment with "
    "the same seed shares the start model) or 64 lowercase hex digits.",
)
@click.option(
    "--large-game",
    type=LazyChoice(_large_games),
    default="budget_shapley",
    show_default=True,
    help="Game above 10 screened updates instead of Monte-Carlo Shapley, recorded in the round "
    "terms (budget_shapley: Shapley on real coalition models within a fixed budget of "
    "evaluations, stratified by coalition size above 12 updates and each update alone from "
    "76, a 100-site round in seconds; none: Monte-Carlo at every size, minutes a round at 100 "
    "sites; budget_shapley2: the budget game sampled toward small coalitions, which does not "
    "pay an update good alone and harmful in every coalition (attack a141), about twice the "
    "evaluations from 76 updates; budget_shapley3: budget_shapley2 below 76 updates, from 76 "
    "each update alone and in two pairs with the larger coalitions fitted from the slopes, a "
    "loss metric only; linear_shapley: first-order, cheaper still, weaker against "
    "oversized updates). A "
    "ledger keeps its round 1's game unless this is given.",
)
@click.option(
    "--valuation-mode",
    type=LazyChoice(valuation_modes),
    default="aggregator",
    show_default=True,
    help="Who scores updates: the aggregator on its validation split, or 'peers': every site "
    "scores the others' updates on its own split and the contract takes each update's median "
    "(recorded in the round terms; the aggregator then only combines).",
)
@click.option(
    "--validator-game",
    type=click.Choice(["none", *VALIDATOR_GAMES]),
    default=DEFAULT_VALIDATOR_GAME,
    show_default=True,
    help="Peer rounds: the game every validator plays on its split (linear_shapley: 2 coalition "
    "models and a gradient pass; loo: n + 2 models; none: --valuation's game, ~300 models over "
    "9 peers; recorded in the round terms).",
)
@click.option(
    "--public-screen/--validators-screen",
    default=None,
    help="Peer rounds with --standing: the free-rider screen (no validation data) runs once a "
    "round here instead of by every validator; the updates it marks are dropped on chain "
    "(dropScreened) and audit verify recomputes it (round terms valuation.public_screen). "
    "Default: on in a new federation, round 1's choice on a ledger whose round 1 was a peer "
    "round (a ledger started without it keeps every validator's screen); --validators-screen: "
    "every validator screens (the default before session 57).",
)
@click.option(
    "--peer-quorum",
    type=click.IntRange(1),
    default=None,
    help="Peer rounds: revealed score vectors needed (default: a majority of the sites active "
    "at open).",
)
@click.option(
    "--score-commit-seconds",
    type=click.IntRange(1, MAX_ROUND_WINDOW),
    default=None,
    help="Peer rounds: score commit window after the reveal deadline (default: the reveal window).",
)
@click.option(
    "--score-reveal-seconds",
    type=click.IntRange(1, MAX_ROUND_WINDOW),
    default=None,
    help="Peer rounds: score reveal window after it (default: the reveal window).",
)
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".fedtrail/aggregator"),
    show_default=True,
    help="Where valuation records and the log file go.",
)
@click.option(
    "--personalise-steps",
    type=click.IntRange(0, 10_000),
    default=0,
    show_default=True,
    help="Sites personalise each finalized global model with this many SGD steps on their own "
    "data and keep the result (recorded in the round terms; 0: off).",
)
@click.option(
    "--personalise-lr",
    type=FiniteFloatRange(min=0, min_open=True, max=10.0),
    default=0.01,
    show_default=True,
    help="Learning rate of that personalisation.",
)
@click.option(
    "--personalise-method",
    type=click.Choice(PERSONALISATION_METHODS),
    default="finetune",
    show_default=True,
    help="What each site makes its own: finetune (the whole model, from each global model), "
    "fedbn (its normalisation layers, kept from round to round) or fedrep (its classifier "
    "head, kept from round to round).",
)
@click.option(
    "--dp-delta",
    type=FiniteFloatRange(min=0, min_open=True, max=1, max_open=True),
    default=None,
    help="Differential privacy: the delta every site accounts its DP-SGD epsilon at (recorded "
    "in the round terms, e.g. 1e-5); unset: the terms ask for none.",
)
@click.option(
    "--dp-required",
    is_flag=True,
    help="Every update must be DP-trained (needs --dp-delta; an update without DP parameters "
    "fails the audit's privacy.required).",
)
@click.option(
    "--project-shift/--no-project-shift",
    default=None,
    help="The validation game values every update with its first-order uniform logit shift "
    "removed (round terms valuation.project_shift, fixed from round 1): for sites that train "
    "with DP-SGD, where it measured the noisy sites' share below FedAvg's; worse without DP. "
    "Default: on exactly when --dp-required.",
)
@model_options
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="torch CPU threads.")
def run(
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    keystore: Path | None,
    dev_account: int | None,
    store_location: str,
    validation: str,
    rounds: int | None,
    until_round: int | None,
    rule: str,
    statistics: str,
    valuation: str,
    metric: str,
    standing: bool,
    explanation_check: bool,
    round_seconds: int,
    reveal_seconds: int,
    max_sample_ratio: float,
    size_norm_z: float,
    size_norm_count: float,
    poll_interval: float,
    clock_stall_seconds: float,
    seed: int,
    initial_salt: str,
    large_game: str,
    valuation_mode: str,
    validator_game: str,
    public_screen: bool | None,
    peer_quorum: int | None,
    score_commit_seconds: int | None,
    score_reveal_seconds: int | None,
    folder: Path,
    personalise_steps: int,
    personalise_lr: float,
    personalise_method: str,
    dp_delta: float | None,
    dp_required: bool,
    project_shift: bool | None,
    arch: str | None,
    image_size: int | None,
    threads: int | None,
) -> None:
    """Run rounds until --rounds are closed (or the ledger's --until-round); resumes from the
    chain after a restart."""
    import torch

    from fedtrail.aggregator.service import AggregatorService
    from fedtrail.ml.catalog import load_source
    from fedtrail.ml.task import task_for

    if rounds is not None and until_round is not None:
        raise click.UsageError("give --rounds or --until-round, not both")
    if rounds is None and until_round is None:
        rounds = 1
    if dp_required and dp_delta is None:
        raise click.UsageError("--dp-required needs --dp-delta")

    folder.mkdir(parents=True, exist_ok=True)
    setup_logging(folder / "aggregator.log")
    if threads:
        torch.set_num_threads(threads)
    ledger = open_ledger(rpc_url, deployment_path, contract)
    account = load_signer(ledger.w3, keystore, dev_account)
    if account.address != ledger.aggregator():
        raise ConfigError(
            f"{account.address} is not this ledger's aggregator ({ledger.aggregator()})"
        )
    store = open_checked_store(store_location)
    source = load_source(validation)
    task = task_for(source, arch=arch, image_size=image_size)
    val = source.splits().val
    if val.image_size != (task.spec.image_size, task.spec.image_size):
        val = val.resized(task.spec.image_size)
    stop = stop_on_signals("stopping after the current step")
    salt = _initial_salt(initial_salt, ledger, store, seed)
    ctx = click.get_current_context()
    # a value from a config's defaults (click's default_map) is given as much as a flag is
    given = {
        p.name: p
        for p in ctx.command.params
        if p.name in ctx.params and ctx.get_parameter_source(p.name) != ParameterSource.DEFAULT
    }
    unset = {name: p.type_cast_value(ctx, p.get_default(ctx)) for name, p in given.items()}

    def settings_of(params: Mapping[str, Any]) -> AggregatorSettings:
        return _settings(params, model=task.spec, class_names=task.class_names, initial_salt=salt)

    # continuing a ledger, the service takes round 1's payment settings where these settings
    # offer what the defaults offer, never the fields of a flag given here (at its default
    # too: each flag with its other values shows which fields it sets), and refuses the
    # given ones that change them
    own = settings_of(ctx.params)
    settings = replace(
        own,
        defaults=settings_of({**ctx.params, **unset}),
        given=tuple(
            (_as_given(p, ctx.params[name]), others)
            for name, p in given.items()
            if (others := _other_settings(name, p, ctx.params, unset[name], own, settings_of))
        ),
    )
    for warning in default_consent_warnings(settings):
        log.warning("%s", warning)
    service = AggregatorService(
        ledger=ledger,
        store=store,
        account=account,
        validation=val,
        settings=settings,
        folder=folder,
        stop_event=stop,
        at_step=launcher_step_hook(),
        clock_watch=ClockWatch(stall_seconds=clock_stall_seconds),
    )

    def report(outcome: RoundOutcome) -> None:
        click.echo(f"round {outcome.round}: {outcome.phase.label}")
        for v in outcome.valuations:
            name = printable(v["name"] or v["site"])  # chosen by the coordinator
            click.echo(
                f"  {name:<16} samples {v['update']['num_samples']:>5}  "
                f"score {v['score'] / SCORE_SCALE:.3f}  {v['reason_label']:<18} "
                f"weight {v['weight_fraction']:.3f}"
            )
        if outcome.metrics:
            click.echo(f"  {metrics_line(outcome.metrics['after'])}")

    service.run(rounds=rounds, until_round=until_round, on_round=report)
