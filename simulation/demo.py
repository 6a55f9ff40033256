"""`fedtrail demo`: five simulated hospitals on real images (the shipped chest X-rays by default,
``--data retina`` for colour fundus photographs graded 0-4, or a user's MedMNIST file), embedded
chain and store; ``--arch``/``--image-size`` pick the model (e.g. a MONAI DenseNet121 at 64 px).

Everything runs in this process: the in-process chain (py-evm), a local content store, one
site node per hospital (the same `SiteNode` the daemon runs, its simulated fault given as hooks)
and the aggregator service, wired by :func:`fedtrail.simulation.federation.build_federation`.
Non-IID split (Dirichlet), one low-quality site (label noise), one poisoning site (sign-flipped
updates); with ``--copy-sites``, free-riders that try to reveal another site's update (too late
under commit-then-reveal: the ledger refuses the reveal, and the table shows them NOT_REVEALED);
with ``--dp-epsilon``, every hospital trains with DP-SGD under an on-chain epsilon budget.
After the rounds it verifies every round like an auditor and writes the audit report.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fedtrail.chain import connect, funded_accounts
from fedtrail.cli.common import (
    FiniteFloatRange,
    LazyChoice,
    aggregation_options,
    compression_methods,
    model_options,
    valuation_modes,
)
from fedtrail.cli.output import emit, format_option, metrics_line, render_table
from fedtrail.errors import ConfigError
from fedtrail.protocol.terms import PERSONALISATION_METHODS
from fedtrail.protocol.weights import SCORE_SCALE

if TYPE_CHECKING:  # the ledger (web3) and the faults (torch) load in seconds: imported where used
    from fedtrail.ledger import Ledger
    from fedtrail.simulation.faults import SiteFault

DP_DELTA = 1e-5
"""The delta the demo's round terms set when it runs with ``--dp-epsilon``."""


@dataclass(frozen=True, kw_only=True)
class Scenario:
    sites: int = 5
    rounds: int = 5
    noisy_sites: int = 1
    label_noise: float = 0.45
    poison_sites: int = 1
    poison: str = "sign_flip"
    shortcut_sites: int = 0
    copy_sites: int = 0
    rule: str = "weighted"
    statistics: str = "anchored_median"
    """How the global model's running statistics are combined (BatchNorm models only)."""
    valuation: str = "shapley"
    valuation_mode: str = "aggregator"
    """``"peers"``: every hospital scores the others' updates on its own validation split and
    the contract takes the median (issue 14); ``"aggregator"``: the aggregator scores."""
    metric: str = "balanced_loss"
    standing: bool = True
    compression: str = "none"
    alpha: float = 3.0
    epochs: int = 3
    seed: int = 0
    data: str = "pneumonia"
    arch: str = "smallcnn"
    image_size: int | None = None
    """Model input size; None: the data's."""
    personalise: str | None = None
    """Personalisation method the round terms ask of every hospital (None: none)."""
    personalise_steps: int = 50
    dp_epsilon: float | None = None
    """Every hospital trains with DP-SGD under an on-chain budget of this epsilon for the whole
    run, at delta 1e-5, required by the terms: each hospital's per-round target is the epsilon
    whose ``rounds`` updates compose (RDP) to ``dp_epsilon``
    (:func:`fedtrail.ml.privacy.round_target`; it depends on the hospital's image count), and the
    nodes declare under the composed rule, so the chain's total ends near ``dp_epsilon``; None:
    no differential privacy."""

    def __post_init__(self) -> None:
        if self.dp_epsilon is not None and not self.dp_epsilon > 0:
            raise ConfigError(f"dp_epsilon must be positive, got {self.dp_epsilon!r}")
        faulty = self.noisy_sites + self.poison_sites + self.shortcut_sites + self.copy_sites
        if faulty >= self.sites:
            raise ConfigError(
                f"{self.sites} sites with {self.noisy_sites} noisy, {self.poison_sites} poisoning, "
                f"{self.shortcut_sites} shortcut and {self.copy_sites} copying site(s) leaves no "
                "honest one: lower --noisy-sites/--poison-sites/--shortcut-sites/--copy-sites or "
                "raise --sites"
            )
        if not 1 <= self.sites <= 7:
            raise ConfigError("the embedded chain has funded accounts for 1..7 sites")
        from fedtrail.protocol.roundlog import VALUATION_MODES

        if self.valuation_mode not in VALUATION_MODES:
            raise ConfigError(
                f"valuation_mode must be one of {VALUATION_MODES}, got {self.valuation_mode!r}"
            )


def site_faults(scenario: Scenario) -> list[SiteFault]:
    """Honest sites first, then the copiers, then the low-quality ones, then the poisoners."""
    from fedtrail.simulation.faults import SiteFault

    n, noisy, poison = scenario.sites, scenario.noisy_sites, scenario.poison_sites
    faults = [SiteFault() for _ in range(n)]
    for i in range(n - poison - noisy - scenario.copy_sites, n - poison - noisy):
        faults[i] = SiteFault(kind="copy", seed=scenario.seed + i)
    for i in range(n - poison - noisy, n - poison):
        faults[i] = SiteFault(kind="label_noise", rate=scenario.label_noise, seed=scenario.seed + i)
    settings: dict[str, dict[str, float]] = {
        "sign_flip": {},
        "scale": {"factor": 10.0},
        "gaussian": {"std": 0.05},
        "random": {},
        "statistics": {"shift": 1000.0},
    }
    for i in range(n - poison, n):
        faults[i] = SiteFault(
            kind=scenario.poison, seed=scenario.seed + i, **settings[scenario.poison]
        )
    return faults


def run_demo(scenario: Scenario, workdir: Path, *, echo: Any = click.echo) -> dict[str, Any]:
    """Runs the scenario; returns the per-round table, the audit result and the report path.
    The table already marks the simulated faults, so the node's per-round warnings are kept out
    of it: the ``fedtrail`` logger is at ERROR while the scenario runs, and back at its own level
    afterwards (set for good, it hid every later warning in the process: a test run after a demo
    in one pytest process lost its log records)."""
    logger = logging.getLogger("fedtrail")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _run_scenario(scenario, workdir, echo=echo)
    finally:
        logger.setLevel(level)


def _run_scenario(scenario: Scenario, workdir: Path, *, echo: Any) -> dict[str, Any]:
    import torch

    from fedtrail.aggregator.service import AggregatorSettings
    from fedtrail.auditor.verify import verify_all
    from fedtrail.ml.aggregation import AggregationRule
    from fedtrail.ml.catalog import load_source
    from fedtrail.ml.datasets import partition_dirichlet
    from fedtrail.ml.privacy import round_target
    from fedtrail.ml.shortcuts import add_marker
    from fedtrail.ml.task import task_for
    from fedtrail.ml.training import TrainConfig
    from fedtrail.node.config import DataConfig, PrivacyConfig
    from fedtrail.protocol.privacy import from_micro, to_micro
    from fedtrail.simulation.federation import build_federation, make_sites
    from fedtrail.storage.codec import Compression
    from fedtrail.storage.store import LocalStore
    from fedtrail.valuation.combine import default_combiner

    torch.set_num_threads(1)  # bit-reproducible on any machine with this torch build
    started = time.perf_counter()
    w3 = connect("embedded")
    accounts = funded_accounts(w3)
    source = load_source(scenario.data)
    task = task_for(source, arch=scenario.arch, image_size=scenario.image_size)
    poisons_statistics = scenario.poison == "statistics" and scenario.poison_sites > 0
    if poisons_statistics and not task.spec.statistic_names():
        raise ConfigError(
            f"--poison statistics shifts BatchNorm running statistics, and {task.spec.arch} has "
            "none: use --arch resnet10, resnet18 or densenet121"
        )
    splits = source.splits()
    if splits.train.image_size != (task.spec.image_size,) * 2:
        splits = splits.resized(task.spec.image_size)
    echo(
        f"task: {task.spec.arch} on {task.spec.in_channels}x{task.spec.image_size}x"
        f"{task.spec.image_size} images, classes {', '.join(task.class_names)}"
    )
    tagged = task.num_classes - 1  # the shortcut sites tag their images of the last class
    parts = partition_dirichlet(
        splits.train.labels, scenario.sites, scenario.alpha, scenario.seed, min_size=50
    )
    faults = site_faults(scenario)
    shortcut_from = (
        scenario.sites - scenario.poison_sites - scenario.noisy_sites - scenario.copy_sites
    )
    shortcut = range(shortcut_from - scenario.shortcut_sites, shortcut_from)
    names = [f"hospital-{chr(ord('A') + i)}" for i in range(scenario.sites)]
    trains = [splits.train.subset(part) for part in parts]
    for i in shortcut:
        trains[i] = add_marker(trains[i], label=tagged)  # a burned-in tag on those images
    for i, name in enumerate(names):
        kind = (
            f"shortcut (corner tag on {task.class_names[tagged]} images)"
            if i in shortcut
            else faults[i].kind
        )
        echo(
            f"{name}: {len(parts[i])} images"
            + ("" if kind == "none" else f"  [simulated fault: {kind}]")
        )
    site_setups = make_sites(
        accounts[1 : 1 + scenario.sites],
        trains,
        names=names,
        training=TrainConfig(epochs=scenario.epochs, seed=scenario.seed),
        faults=faults,
        compression=Compression(method=scenario.compression),  # type: ignore[arg-type]
        model=task.spec,
        data=DataConfig(path=str(source.path), class_names=task.class_names),
    )
    targets: list[float] = []
    # A compressed DP update stays private (post-processing of the noised delta) but no one can
    # check its noise: the demo's aggregator waives that check (dp_noise_check 0) and the
    # hospitals consent (README, DP with topk8 compression).
    waive_noise_check = scenario.dp_epsilon is not None and scenario.compression != "none"
    if scenario.dp_epsilon is not None:
        # each hospital's own per-round target: its rounds compose to the budget
        for i, site in enumerate(site_setups):
            base = PrivacyConfig(enabled=True)
            assert site.train is not None  # every demo hospital trains
            targets.append(
                round_target(
                    len(site.train),
                    site.config.training,
                    scenario.dp_epsilon,
                    scenario.rounds,
                    DP_DELTA,
                    base.settings(),
                )
            )
            own = replace(base, target_epsilon=targets[-1])
            accept = site.config.accept
            if waive_noise_check:  # the sites consent to terms without the noise check
                accept = replace(accept, loosest=replace(accept.loosest, dp_noise_check=0))
            site_setups[i] = replace(site, config=replace(site.config, accept=accept, privacy=own))
    if scenario.valuation_mode == "peers":
        # Validators score on their own data: each hospital holds a shard of the val split with
        # its own case mix (the train split's skew), as noisy as its training labels.
        val_parts = partition_dirichlet(
            splits.val.labels, scenario.sites, scenario.alpha, scenario.seed + 1, min_size=10
        )
        site_setups = [
            replace(site, val=faults[i].apply_to_data(splits.val.subset(val_parts[i])))
            for i, site in enumerate(site_setups)
        ]
        echo(
            "peer scoring: every hospital scores the others' updates on its own validation "
            f"images ({', '.join(str(len(p)) for p in val_parts)})"
        )
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        sites=site_setups,
        store=LocalStore(workdir / "store"),
        folder=workdir,
        validation=splits.val,
        settings=AggregatorSettings(
            rule=AggregationRule(name=scenario.rule, statistics=scenario.statistics),
            valuation=scenario.valuation,
            valuation_mode=scenario.valuation_mode,
            metric=scenario.metric,
            standing=scenario.standing,
            explanation_check=scenario.shortcut_sites > 0,
            seed=scenario.seed,
            model=task.spec,
            class_names=task.class_names,
            personalise_steps=scenario.personalise_steps if scenario.personalise else 0,
            personalise_method=scenario.personalise or "finetune",
            dp_delta=0.0 if scenario.dp_epsilon is None else DP_DELTA,
            dp_required=scenario.dp_epsilon is not None,
            combiner=(
                replace(default_combiner(scenario.standing), dp_noise_check=0)
                if waive_noise_check
                else None
            ),
        ),
    )
    ledger, store = fed.ledger, fed.store
    if scenario.dp_epsilon is not None:
        for account in accounts[1 : 1 + scenario.sites]:
            ledger.set_privacy_budget(accounts[0], account.address, to_micro(scenario.dp_epsilon))
        echo(
            f"DP-SGD at every hospital: epsilon budget {scenario.dp_epsilon:g} each on chain, "
            f"{min(targets):.2f}-{max(targets):.2f} per round at delta {DP_DELTA:g} "
            f"({scenario.rounds} rounds compose (RDP) to {scenario.dp_epsilon:g})"
        )
        if waive_noise_check:
            echo(
                f"{scenario.compression} DP updates: the terms waive the per-update noise "
                "check (dp_noise_check 0), which no compressed update can pass"
            )
    table: list[dict[str, Any]] = []
    for _ in range(scenario.rounds):
        outcome = fed.run_round()
        if outcome is None:
            raise ConfigError(f"round {ledger.current_round()} did not close")
        round_id = outcome.round
        reputation = {s.address: s.reputation for s in ledger.get_sites()}
        rows = [
            {
                "site": v["name"],
                "samples": v["update"]["num_samples"],
                "score": v["score"] / SCORE_SCALE,
                "reason": v["reason_label"],
                "weight": v["weight_fraction"],
                "reputation": reputation[v["site"]] / SCORE_SCALE,
            }
            for v in outcome.valuations
        ]
        # committed but never revealed (a copier's reveal cannot open its own commitment)
        site_names = {s.address: s.name for s in ledger.get_sites()}
        rows += [
            {
                "site": site_names[s.site],
                "samples": 0,
                "score": 0.0,
                "reason": "NOT_REVEALED",
                "weight": 0.0,
                "reputation": reputation[s.site] / SCORE_SCALE,
            }
            for s in ledger.get_submissions(round_id, include_unrevealed=True)
            if not s.revealed
        ]
        if ledger.get_peer_round(round_id) is not None:
            _add_validator_columns(ledger, round_id, rows, site_names)
        echo(f"\nround {round_id}: {metrics_line(outcome.metrics.get('after', {}))}")
        echo(render_table(rows))
        table.append({"round": round_id, "sites": rows, "metrics": outcome.metrics})
        if scenario.personalise:
            for i in range(scenario.sites):
                fed.node(i).personalise_latest()
    privacy = None
    if scenario.dp_epsilon is not None:
        privacy = []
        for info in ledger.get_sites():
            spent = ledger.privacy(info.address)
            privacy.append(
                {
                    "site": info.name,
                    "epsilon_spent": from_micro(spent.spent_micro),
                    "epsilon_budget": from_micro(spent.budget_micro),
                }
            )
        echo("\nprivacy spent (on chain, composed accounting: the RDP-composed epsilon):")
        echo(render_table(privacy))
    personal = None
    if scenario.personalise:
        personal = _personal_rows(fed, names, trains, splits.val, task.spec, scenario)
        echo(
            f"\npersonalised models ({scenario.personalise}, {scenario.personalise_steps} "
            "steps after each round), each on a slice of the val split with its hospital's "
            "case mix:"
        )
        echo(render_table(personal))
        echo(
            f"explain one: fedtrail explain --personal {workdir / 'nodes' / names[0]} "
            f"--out {workdir / 'explain-personal'}"
        )
    # the auditor is told what the simulated sites consented to (audit verify --accept)
    audits = verify_all(ledger, store, accept=fed.nodes[0].config.accept if fed.nodes else None)
    passed = all(a.passed for a in audits)
    checks = sum(1 for a in audits for c in a.checks if c.applicable)
    not_applicable = sum(1 for a in audits for c in a.checks if not c.applicable)
    echo(
        f"\naudit verify --all: {'PASS' if passed else 'FAIL'} "
        f"({checks} checks over {len(audits)} round(s)"
        + (f"; {not_applicable} not applicable to peer rounds" if not_applicable else "")
        + ")"
    )
    for a in audits:
        for c in a.checks:
            if c.failed:
                echo(f"  FAIL round {c.round} {c.name}: {c.detail}")
    report = None
    try:
        from fedtrail.auditor.report import write_report

        report = write_report(ledger, store, workdir / "report", audits=audits)
        echo(f"audit report: {report}")
    except ImportError:
        echo("audit report: not available in this build")
    echo(
        f"ledger {ledger.address} on the embedded chain; store {workdir / 'store'}; "
        f"{time.perf_counter() - started:.0f} s"
    )
    last = (
        ledger.get_round(ledger.last_finalized_round()) if ledger.last_finalized_round() else None
    )
    return {
        "rounds": table,
        "verified": passed,
        # what the text output's "audit verify --all" line says, for machines (--format json)
        "audit": {
            "checks": checks,
            "not_applicable": not_applicable,
            "rounds": len(audits),
            "failed": [
                {"round": c.round, "name": c.name, "detail": c.detail}
                for a in audits
                for c in a.checks
                if c.failed
            ],
        },
        "report": str(report) if report else None,
        "task": task.to_json(),
        "personalised": personal,
        "privacy": privacy,
        "final_global": None
        if last is None
        else {
            "cid": last.global_cid,
            "sha256": last.global_sha256,
            "round": ledger.last_finalized_round(),
        },
    }


def _add_validator_columns(
    ledger: Ledger, round_id: int, rows: list[dict[str, Any]], names: dict[str, str]
) -> None:
    """Each hospital as a validator of a peer round: how far its score vector sat from the
    medians (``fedtrail.protocol.peers``, from the chain's votes) and its validator reputation
    after the round; '-' where it revealed no vector."""
    outcome = ledger.peer_outcome(round_id)
    by_name = {names[a]: a for a in names}
    for row in rows:
        address = by_name[row["site"]]
        distance = outcome.distances.get(address)
        row["distance"] = "-" if distance is None else distance / SCORE_SCALE
        row["val.rep"] = ledger.validator_standing(address).reputation / SCORE_SCALE


def _personal_rows(
    fed: Any,
    names: list[str],
    trains: list[Any],
    val: Any,
    spec: Any,
    scenario: Scenario,
) -> list[dict[str, Any]]:
    """Each hospital's final global and personalised model on a seeded slice of the val split
    with that hospital's class mix (what its own patients look like); balanced accuracy at
    each model's decision calibrated on that slice (in-sample for both, so comparable)."""
    import numpy as np

    from fedtrail.ml.datasets import subset_with_mix
    from fedtrail.ml.metrics import evaluate_calibrated
    from fedtrail.ml.models import load_federated
    from fedtrail.node.config import write_node_config
    from fedtrail.storage.codec import decode_model
    from fedtrail.storage.personal import load_personal

    rows = []
    k = spec.num_classes
    for i, name in enumerate(names):
        folder = fed.folder / "nodes" / name
        try:
            state, info = load_personal(folder, spec)
        except ConfigError as exc:
            rows.append({"site": name, "note": str(exc).split(" (")[0]})
            continue
        # A node folder names its task in config.toml; the simulated nodes keep theirs in
        # memory, so write it for `fedtrail explain --personal` to read.
        write_node_config(folder / "config.toml", replace(fed.sites[i].config, name=name))
        mix = np.bincount(trains[i].labels, minlength=k) / len(trains[i])
        mine = subset_with_mix(val, mix, scenario.seed + 1000 + i)
        figures: dict[str, Any] = {"site": name, "val images": len(mine)}
        made_from = fed.ledger.get_round(info.round)
        blob = fed.store.get(made_from.global_cid, made_from.global_sha256)
        shared = decode_model(blob, spec=spec)[0]
        for label, tensors in (("global", shared), ("personal", state)):
            model = spec.build()
            load_federated(model, tensors, what=f"{name}'s {label} model")
            m = evaluate_calibrated(model, mine)
            figures[f"{label} AUC"] = round(m.auc, 3)
            figures[f"{label} bal.acc"] = round(m.balanced_accuracy_calibrated, 3)
        rows.append(figures)
    return rows


@click.command()
@click.option("--sites", type=click.IntRange(2, 7), default=5, show_default=True)
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True)
@click.option(
    "--noisy-sites",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Low-quality sites (label noise).",
)
@click.option(
    "--label-noise",
    type=FiniteFloatRange(0, 1, min_open=True),
    default=0.45,
    show_default=True,
    help="Share of a low-quality site's training labels changed (0 < rate <= 1).",
)
@click.option(
    "--shortcut-sites",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Sites whose images of the last class carry a burned-in corner tag; turns on the "
    "explanation check.",
)
@click.option("--poison-sites", type=click.IntRange(0), default=1, show_default=True)
@click.option(
    "--copy-sites",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Free-riders that reveal another site's update instead of the one they committed to.",
)
@click.option(
    "--poison",
    type=click.Choice(["sign_flip", "scale", "gaussian", "random", "statistics"]),
    default="sign_flip",
    show_default=True,
)
@aggregation_options
@click.option(
    "--valuation-mode",
    type=LazyChoice(valuation_modes),
    default="aggregator",
    show_default=True,
    help="Who scores updates: the aggregator on its validation split, or 'peers': every "
    "hospital scores the others' updates on its own split, commits and reveals its score "
    "vector on chain, and the contract takes each update's median.",
)
@click.option(
    "--compression",
    type=LazyChoice(compression_methods),
    default="none",
    show_default=True,
)
@click.option(
    "--alpha",
    type=FiniteFloatRange(min=0, min_open=True),
    default=3.0,
    show_default=True,
    help="Dirichlet label skew across sites (smaller = more non-IID).",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option(
    "--data",
    default="pneumonia",
    show_default=True,
    help="A shipped dataset (pneumonia: chest X-rays, 2 classes; retina: fundus photographs, "
    "5 grades) or a MedMNIST .npz with train/val/test splits.",
)
@model_options
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Local epochs per round.",
)
@click.option(
    "--personalise",
    type=click.Choice(PERSONALISATION_METHODS),
    default=None,
    help="Every hospital also keeps a personalised model (finetune: the whole model; fedbn: "
    "its normalisation layers; fedrep: its classifier head), compared with the global model "
    "at the end on its own case mix.",
)
@click.option(
    "--personalise-steps",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="SGD steps of that personalisation after each round.",
)
@click.option(
    "--dp-epsilon",
    type=FiniteFloatRange(min=0, min_open=True),
    default=None,
    help="Every hospital trains with DP-SGD under this on-chain epsilon budget for the whole "
    "run (each hospital's rounds compose (RDP) to it at delta 1e-5, declared on chain as the "
    "composed total; the terms require DP). With --compression topk8 the terms waive the "
    "per-update noise check (dp_noise_check 0), which no compressed update can pass.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the store, node folders and report go (default: a new temp folder).",
)
@format_option()
def demo(
    sites: int,
    rounds: int,
    noisy_sites: int,
    label_noise: float,
    shortcut_sites: int,
    poison_sites: int,
    copy_sites: int,
    poison: str,
    rule: str,
    statistics: str,
    valuation: str,
    valuation_mode: str,
    compression: str,
    metric: str,
    standing: bool,
    alpha: float,
    seed: int,
    data: str,
    arch: str | None,
    image_size: int | None,
    epochs: int,
    personalise: str | None,
    personalise_steps: int,
    dp_epsilon: float | None,
    workdir: Path | None,
    fmt: str,
) -> None:
    """Simulated hospitals on real medical images, embedded chain and store (no daemons)."""
    scenario = Scenario(
        sites=sites,
        rounds=rounds,
        noisy_sites=noisy_sites,
        label_noise=label_noise,
        poison_sites=poison_sites,
        shortcut_sites=shortcut_sites,
        copy_sites=copy_sites,
        poison=poison,
        rule=rule,
        statistics=statistics,
        valuation=valuation,
        valuation_mode=valuation_mode,
        compression=compression,
        metric=metric,
        standing=standing,
        alpha=alpha,
        seed=seed,
        data=data,
        arch=arch or "smallcnn",
        image_size=image_size,
        epochs=epochs,
        personalise=personalise,
        personalise_steps=personalise_steps,
        dp_epsilon=dp_epsilon,
    )
    if workdir is not None and workdir.is_dir() and any(workdir.iterdir()):
        # an earlier run's node folders belong to its ledger: their state.json would stop the
        # first node only after the data, the chain and the sites were set up (exit 1)
        raise ConfigError(
            f"--workdir {workdir} is not empty (an earlier demo's nodes, store and report?): "
            "give a new or empty folder"
        )
    root = workdir or Path(tempfile.mkdtemp(prefix="fedtrail-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    quiet = fmt == "json"
    result = run_demo(scenario, root, echo=(lambda *a, **k: None) if quiet else click.echo)
    if quiet:
        emit(result, "json")
    if not result["verified"]:
        click.get_current_context().exit(1)
