"""`fedtrail explain`: heatmaps of a global model's decisions, for clinicians: PNG overlays, each
method's faithfulness on the images, and (``--html``) one self-contained page of it all."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fedtrail.cli.common import (
    ROUND_ID,
    DeferredHelpOption,
    LazyChoice,
    ledger_options,
    model_options,
    open_checked_store,
    open_ledger,
    store_option,
)
from fedtrail.cli.output import emit, format_option
from fedtrail.errors import ConfigError, StoreError
from fedtrail.fsutil import atomic_write

if TYPE_CHECKING:  # the ML, the codec and the round log load torch: imported where used
    from fedtrail.ledger import RoundInfo
    from fedtrail.ml.datasets import ImageDataset
    from fedtrail.ml.task import Task
    from fedtrail.protocol.roundlog import RoundLog
    from fedtrail.storage.store import ContentStore


def _explain_methods() -> tuple[str, ...]:
    """The explanation methods' registry (fedtrail.ml.explain loads torch and captum)."""
    from fedtrail.ml.explain import METHODS

    return METHODS


def _methods_help() -> str:
    return f"Several methods, comma-separated (e.g. {','.join(_explain_methods()[:2])})."


@dataclass(frozen=True)
class Decision:
    """The decision rule the overlays use: the intercept a round log records (the aggregator
    fitted it on its validation split), or None for the plain decision (0.5 for two classes,
    the most probable class for more); ``source`` says which, in words."""

    bias: tuple[float, ...] | None
    source: str
    classes: int = 2

    @property
    def threshold(self) -> float | None:
        """Probability of class 1 above which class 1 is predicted (two classes only)."""
        if self.classes != 2:
            return None
        from fedtrail.ml.metrics import decision_threshold

        return 0.5 if self.bias is None else decision_threshold(self.bias)

    @property
    def rule(self) -> str:
        if self.threshold is not None:
            return f"threshold {self.threshold:.3f}"
        return "argmax(logits)" if self.bias is None else "argmax(logits + bias)"


def _plain(classes: int) -> str:
    return "default 0.5" if classes == 2 else "default argmax"


def _round_log(
    store: ContentStore, round_id: int, log_cid: str, log_sha256: str
) -> tuple[RoundLog | None, str]:
    """Round ``round_id``'s log (its bytes checked against the on-chain sha256), or None and
    why not."""
    from fedtrail.protocol.roundlog import MAX_LOG_BYTES, InvalidLog, RoundLog

    try:
        return RoundLog.from_bytes(store.get(log_cid, log_sha256, max_bytes=MAX_LOG_BYTES)), ""
    except (StoreError, InvalidLog) as exc:
        return None, f"round {round_id}'s log is unusable: {exc}"


def _decision(log: RoundLog | None, round_id: int, why_not: str, classes: int) -> Decision:
    """The calibrated decision a round log records, or the default when there is none."""
    if log is None:
        return Decision(None, f"{_plain(classes)}: {why_not}", classes)
    from fedtrail.ml.metrics import calibration_problems

    # a log whose bias and threshold disagree reads one way to audit log and the report and
    # another here: verify fails it (log.agrees, a83), and its bias is not a decision to
    # caption a clinician's images with (a111)
    problems = calibration_problems(log)
    if problems:
        return Decision(
            None,
            f"{_plain(classes)}: round {round_id}'s log is not used, its metrics disagree with "
            f"themselves ({'; '.join(problems)}; audit verify fails its log.agrees)",
            classes,
        )
    bias = log.metrics.after.decision_bias(classes)
    if bias is None:
        return Decision(
            None, f"{_plain(classes)}: round {round_id}'s log records no threshold", classes
        )
    return Decision(
        bias, f"fitted on the aggregator's validation split, round {round_id}'s log", classes
    )


def _task_from(model_spec: Mapping[str, Any], class_names: Sequence[str], where: str) -> Task:
    """A task from a document's model spec and class names (none recorded: numbered)."""
    from fedtrail.ml.task import Task

    classes = int(model_spec.get("num_classes", 2))
    names = list(class_names) or [f"class {i}" for i in range(classes)]
    return Task.from_parts(model_spec, names, where)


def _task_of(log: RoundLog) -> Task:
    """The task a round log repeats from its terms (logs older than class names: numbered)."""
    return _task_from(log.settings.model_spec, log.settings.class_names, f"round {log.round}'s log")


def _committed_task(store: ContentStore, info: RoundInfo, log: RoundLog | None) -> tuple[Task, str]:
    """The task round ``info``'s model is read with: the one its terms committed at open (read
    by the on-chain CID and sha256, their spec hash that of their model spec), never the log's,
    which is the aggregator's word after the fact; and a note, empty unless the log names
    another task (then the terms' is used and the note says what differs). A round opened
    without terms (none on chain) is read with its log's task, and the note says so."""
    from fedtrail.ml.models import ModelSpec
    from fedtrail.protocol.terms import MAX_TERMS_BYTES, InvalidTerms, RoundTerms

    if not info.terms_cid:
        if log is None:
            raise ConfigError(f"round {info.id} has neither terms nor a usable log: no task")
        return _task_of(log), f"round {info.id} has no committed terms: the task is its log's"
    where = f"round {info.id}'s terms"
    try:
        terms = RoundTerms.from_bytes(
            store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
        )
    except (StoreError, InvalidTerms) as exc:
        raise ConfigError(f"{where} are unusable: {exc}") from None
    task = _task_from(terms.model_spec, terms.class_names, where)
    try:
        bound = ModelSpec(**terms.model_spec).spec_hash() == terms.spec_hash
    except (TypeError, ValueError, ConfigError):
        bound = False
    if not bound:
        raise ConfigError(f"{where}' spec_hash is not the hash of their model spec")
    if log is None:
        return task, ""
    try:
        logged = _task_of(log)
    except ConfigError as exc:
        return task, f"the log's task is not a valid one ({exc}): the terms' is used"
    diffs = task.differences(logged, mine="terms", theirs="log")
    if log.settings.spec_hash != terms.spec_hash:
        diffs.append(
            f"spec hash: {terms.spec_hash[:16]}… (terms) vs {log.settings.spec_hash[:16]}… (log)"
        )
    if not diffs:
        return task, ""
    return task, (
        f"the log's task differs from the committed terms' ({'; '.join(diffs)}): the terms' is used"
    )


def _source_for(task: Task, validation: str | None) -> str:
    """``--validation``, or the shipped dataset whose class names are the task's."""
    from fedtrail.ml.catalog import shipped_datasets

    if validation is not None:
        return validation
    for name, shipped in shipped_datasets().items():
        if shipped.class_names == task.class_names:
            return name
    raise ConfigError(
        "the model's task names its classes "
        f"{list(task.class_names)}, which no shipped dataset has: give --images or --validation"
    )


def _images(
    task: Task, images: Path | None, validation: str | None, per_class: int
) -> ImageDataset:
    """The images to explain, resized to the task's model and checked against it."""
    from fedtrail.ml.catalog import load_source
    from fedtrail.ml.datasets import load_image_folder, load_medmnist_npz
    from fedtrail.ml.explain import probe_set

    if images is not None:
        if images.is_dir():
            data = load_image_folder(images)
        elif images.suffix == ".npz":
            data = load_medmnist_npz(images).test
        else:
            raise ConfigError("--images must be an image folder (one sub-folder per class) or .npz")
        what = f"--images {images}"
    else:
        source = _source_for(task, validation)
        data = probe_set(load_source(source).splits().val, per_class)
        what = f"the validation split of {source}"
    size = task.spec.image_size
    if data.image_size != (size, size):
        data = data.resized(size)
    task.check_data(data, what)
    return data


def _methods(method: str | None, methods: str | None, html: bool) -> tuple[str, ...]:
    """The methods to run: ``--methods``, else ``--method``, else all (``--html``) or integrated
    gradients."""
    from fedtrail.ml.explain import METHODS

    if methods is not None:
        if method is not None:
            raise click.UsageError("give --method or --methods, not both")
        names = tuple(m.strip() for m in methods.split(",") if m.strip())
        unknown = [m for m in names if m not in METHODS]
        if not names or unknown or len(set(names)) != len(names):
            raise click.UsageError(
                f"--methods must name distinct methods among {', '.join(METHODS)}; got {methods!r}"
            )
        return names
    if method is not None:
        return (method,)
    return METHODS if html else ("integrated_gradients",)


@click.command()
@click.option(
    "--round",
    "round_id",
    type=ROUND_ID,
    default=None,
    help="Explain the global model finalized in this round (default: the latest).",
)
@click.option("--cid", default=None, help="Explain the model blob with this CID instead...")
@click.option("--sha256", "sha256", default=None, help="...verified against this sha256.")
@click.option(
    "--personal",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    metavar="NODE_FOLDER",
    help="Explain this site's personalised model (personal.safetensors in the node folder, "
    "with the task of its config.toml) instead of a global model; no store or chain needed.",
)
@click.option(
    "--method",
    type=LazyChoice(_explain_methods),
    default=None,
    help="One explanation method [default: integrated_gradients; with --html: all].",
)
@click.option(
    "--methods",
    default=None,
    cls=DeferredHelpOption,
    help_text=_methods_help,
)
@click.option(
    "--html",
    is_flag=True,
    help="Also write index.html in --out: one self-contained page with every image, its "
    "decision and truth, each method's overlay side by side, and each method's faithfulness.",
)
@click.option(
    "--images",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Image folder (one sub-folder per class) or MedMNIST .npz (its test split).",
)
@click.option(
    "--validation",
    default=None,
    help="Without --images: the probe set of this data's val split (a shipped dataset or a "
    ".npz; default: the shipped dataset whose class names are the model's).",
)
@click.option("--per-class", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=32, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@store_option
@ledger_options
@model_options
@format_option()
def explain(
    round_id: int | None,
    cid: str | None,
    sha256: str | None,
    personal: Path | None,
    method: str | None,
    methods: str | None,
    html: bool,
    images: Path | None,
    validation: str | None,
    per_class: int,
    limit: int,
    out: Path,
    store_location: str,
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    arch: str | None,
    image_size: int | None,
    fmt: str,
) -> None:
    """Heatmap overlays (PNG) of a global model's predictions, with confidence in the caption,
    and each method's faithfulness on these images (deletion/insertion AUC vs random order).

    A round's model decides at the threshold its round log records (fitted by the aggregator
    on its validation split); a model named by CID, or a log without one, at 0.5. The output
    says which. A round's model is read with the task its committed terms fix (model spec and
    class names; the output notes a log that names another); a model named by CID
    with the task of ``--validation`` (default pneumonia) and ``--arch``/``--image-size``.
    A site's personalised model (``--personal``) with its node's task, at the decision its node
    calibrated for it on the site's validation split (without one: the round log's)."""
    import numpy as np

    from fedtrail.auditor.explain_page import ModelFacts, render_page
    from fedtrail.ml.catalog import load_source
    from fedtrail.ml.explain import explain_methods
    from fedtrail.ml.task import task_for
    from fedtrail.storage.codec import decode_model, read_limit
    from fedtrail.storage.personal import PERSONAL_MODEL, read_personal, site_task

    if (cid is None) != (sha256 is None):
        raise click.UsageError("--cid and --sha256 go together")
    if personal is not None and (cid is not None or round_id is not None):
        raise click.UsageError("--personal explains a site's own model: no --round or --cid")
    chosen = _methods(method, methods, html)
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256.removeprefix("0x")):
        raise click.UsageError("--sha256 must be 64 hex digits")
    if cid is not None:
        from fedtrail.errors import InvalidCid
        from fedtrail.storage.cid import check_cid

        try:  # a mistyped CID is misuse (exit 2), not a failed check
            check_cid(cid)
        except InvalidCid as exc:
            raise click.UsageError(f"--cid: {exc}") from exc
    decision = Decision(None, "default 0.5: a model named by CID has no round log")
    task: Task | None = None
    task_note = ""
    blob: bytes | None = None
    if personal is not None:
        task = site_task(personal)
        blob, mine = read_personal(personal)
        cid, sha256 = str(personal / PERSONAL_MODEL), mine.sha256
        title = f"site model ({mine.method}, round {mine.round} + {mine.steps} steps): "
        own = mine.decision_from == "the site's validation split"
        decision = Decision(
            mine.bias,
            f"{mine.decision_from}, "
            + (
                "fitted for this personalised model" if own else "for the global model it came from"
            ),
            task.num_classes,
        )
    else:
        store = open_checked_store(store_location, reading=True)
    if cid is None:
        ledger = open_ledger(rpc_url, deployment_path, contract)
        rid = round_id or ledger.last_finalized_round()
        if not rid:
            raise ConfigError("no finalized round yet: nothing to explain")
        info = ledger.get_round(rid)
        if not info.global_cid:
            raise ConfigError(f"round {rid} is {info.phase.label}: it has no global model")
        cid, sha256, title = info.global_cid, info.global_sha256, f"round {rid}: "
        log, why_not = _round_log(store, rid, info.log_cid, info.log_sha256)
        task, task_note = _committed_task(store, info, log)
        if log is not None:
            decision = _decision(log, rid, why_not, task.num_classes)
        else:
            decision = Decision(None, f"default 0.5: {why_not}", task.num_classes)
    elif personal is None:
        title = ""
    if task is None:
        task = task_for(load_source(validation or "pneumonia"), arch=arch, image_size=image_size)
    if decision.bias is None and task.num_classes != 2:
        plain = _plain(task.num_classes)
        decision = Decision(None, decision.source.replace("default 0.5", plain), task.num_classes)
    assert sha256 is not None
    if blob is None:
        blob = store.get(cid, sha256, max_bytes=read_limit(task.spec))
    state, meta = decode_model(blob, spec=task.spec)
    data = _images(task, images, validation, per_class)
    if len(data) > limit:
        data = data.subset(np.arange(limit))
    results = explain_methods(
        state,
        task.spec,
        data,
        methods=chosen,
        title=title,
        bias=decision.bias,
        class_names=task.class_names,
    )
    rule = decision.rule
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, o in enumerate(results[0].overlays):
        files = {}
        for r in results:
            path = out / f"{i:03d}-{r.method}.png"
            atomic_write(path, r.overlays[i].png, shared=True)
            files[r.method] = str(path)
        rows.append(
            {
                "file": files[chosen[0]],
                "files": files,
                "prediction": o.prediction,
                "confidence": o.confidence,
                "label": o.label,
                "caption": o.caption,
            }
        )
    faithful = {r.method: r.faithfulness.to_json() for r in results if r.faithfulness is not None}
    page: Path | None = None
    if html:
        facts = ModelFacts(cid, sha256, meta.round, rule, decision.source)
        page = out / "index.html"
        # atomic: a reader (or a crash mid-write) never sees a torn page over a good one
        atomic_write(
            page,
            render_page(facts, data, results, task.class_names).encode("utf-8"),
            shared=True,
        )
    if fmt == "json":
        emit(
            {
                "model": {"cid": cid, "sha256": sha256, "round": meta.round},
                "task": {
                    "class_names": list(task.class_names),
                    "spec_hash": task.spec.spec_hash(),
                    "note": task_note,
                },
                "decision": {
                    "threshold": decision.threshold,
                    "bias": None if decision.bias is None else list(decision.bias),
                    "source": decision.source,
                },
                "method": chosen[0],
                "methods": list(chosen),
                "faithfulness": faithful,
                "page": None if page is None else str(page),
                "images": rows,
            },
            "json",
        )
    else:
        click.echo(
            f"model {cid} (sha256 verified), {', '.join(chosen)}: "
            f"{len(rows) * len(chosen)} overlays in {out}"
        )
        click.echo(f"decision {rule} ({decision.source})")
        if task_note:
            click.echo(f"task: {task_note}")
        for name, f in faithful.items():
            click.echo(
                f"{name}: deletion AUC {f['deletion_auc']:.3f} (random "
                f"{f['random_deletion_auc']:.3f}, lower is better), insertion AUC "
                f"{f['insertion_auc']:.3f} (random {f['random_insertion_auc']:.3f})"
            )
        if page is not None:
            click.echo(f"page: {page}")
        emit([{k: v for k, v in r.items() if k not in ("file", "files")} for r in rows], "table")
