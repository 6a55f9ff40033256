"""`fedtrail explain`: heatmaps of a global model's decisions, for clinicians."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from fedtrail.cli.common import (
    ROUND_ID,
    ledger_options,
    model_options,
    open_checked_store,
    open_ledger,
    store_option,
)
from fedtrail.cli.output import emit, format_option
from fedtrail.errors import ConfigError, StoreError
from fedtrail.ml.catalog import load_source, shipped_datasets
from fedtrail.ml.datasets import ImageDataset, load_image_folder, load_medmnist_npz
from fedtrail.ml.explain import METHODS, explain_model, probe_set
from fedtrail.ml.metrics import decision_threshold
from fedtrail.ml.task import Task, task_for
from fedtrail.protocol.roundlog import InvalidLog, RoundLog
from fedtrail.storage.codec import decode_model
from fedtrail.storage.store import ContentStore


@dataclass(frozen=True)
class Decision:
    """The decision rule the overlays use: the intercept a round log records (the aggregator
    fitted it on its validation split), or None for the plain 0.5 threshold; ``source`` says
    which, in words."""

    bias: tuple[float, ...] | None
    source: str

    @property
    def threshold(self) -> float | None:
        """Probability of class 1 above which class 1 is predicted (two classes only)."""
        if self.bias is None:
            return 0.5
        return decision_threshold(self.bias) if len(self.bias) == 2 else None


def _round_log(
    store: ContentStore, round_id: int, log_cid: str, log_sha256: str
) -> tuple[RoundLog | None, str]:
    """Round ``round_id``'s log (its bytes checked against the on-chain sha256), or None and
    why not."""
    try:
        return RoundLog.from_bytes(store.get(log_cid, log_sha256)), ""
    except (StoreError, InvalidLog) as exc:
        return None, f"round {round_id}'s log is unusable: {exc}"


def _decision(log: RoundLog | None, round_id: int, why_not: str, classes: int) -> Decision:
    """The calibrated decision a round log records, or the default when there is none."""
    if log is None:
        return Decision(None, f"default 0.5: {why_not}")
    bias = log.metrics.after.decision_bias(classes)
    if bias is None:
        return Decision(None, f"default 0.5: round {round_id}'s log records no threshold")
    return Decision(bias, f"fitted on the aggregator's validation split, round {round_id}'s log")


def _task_of(log: RoundLog) -> Task:
    """The task a round log repeats from its terms (logs older than class names: numbered)."""
    s = log.settings
    where = f"round {log.round}'s log"
    classes = int(s.model_spec.get("num_classes", 2))
    names = list(s.class_names) or [f"class {i}" for i in range(classes)]
    return Task.from_parts(s.model_spec, names, where)


def _source_for(task: Task, validation: str | None) -> str:
    """``--validation``, or the shipped dataset whose class names are the task's."""
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
    "--method", type=click.Choice(METHODS), default="integrated_gradients", show_default=True
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
    method: str,
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
    """Heatmap overlays (PNG) of a global model's predictions, with confidence in the caption.

    A round's model decides at the threshold its round log records (fitted by the aggregator
    on its validation split); a model named by CID, or a log without one, at 0.5. The output
    says which. A round's model is read with the task its log records; a model named by CID
    with the task of ``--validation`` (default pneumonia) and ``--arch``/``--image-size``."""
    if (cid is None) != (sha256 is None):
        raise click.UsageError("--cid and --sha256 go together")
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256.removeprefix("0x")):
        raise click.UsageError("--sha256 must be 64 hex digits")
    store = open_checked_store(store_location)
    decision = Decision(None, "default 0.5: a model named by CID has no round log")
    task: Task | None = None
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
        if log is not None:
            task = _task_of(log)
            decision = _decision(log, rid, why_not, task.num_classes)
        else:
            decision = Decision(None, f"default 0.5: {why_not}")
    else:
        title = ""
    if task is None:
        settings = {k: v for k, v in (("arch", arch), ("image_size", image_size)) if v}
        task = task_for(load_source(validation or "pneumonia"), **settings)
    assert sha256 is not None
    state, meta = decode_model(store.get(cid, sha256), spec=task.spec)
    data = _images(task, images, validation, per_class)
    if len(data) > limit:
        data = data.subset(np.arange(limit))
    overlays = explain_model(
        state,
        task.spec,
        data,
        method=method,
        title=title,
        bias=decision.bias,
        class_names=task.class_names,
    )
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, o in enumerate(overlays):
        path = out / f"{i:03d}-{method}.png"
        path.write_bytes(o.png)
        rows.append(
            {
                "file": str(path),
                "prediction": o.prediction,
                "confidence": o.confidence,
                "label": o.label,
                "caption": o.caption,
            }
        )
    if fmt == "json":
        emit(
            {
                "model": {"cid": cid, "sha256": sha256, "round": meta.round},
                "decision": {
                    "threshold": decision.threshold,
                    "bias": None if decision.bias is None else list(decision.bias),
                    "source": decision.source,
                },
                "method": method,
                "images": rows,
            },
            "json",
        )
    else:
        click.echo(f"model {cid} (sha256 verified), {method}: {len(rows)} overlays in {out}")
        t = decision.threshold
        rule = "argmax(logits + bias)" if t is None else f"threshold {t:.3f}"
        click.echo(f"decision {rule} ({decision.source})")
        emit([{k: v for k, v in r.items() if k != "file"} for r in rows], "table")
