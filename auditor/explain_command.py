"""`fedtrail explain`: heatmaps of a global model's decisions, for clinicians."""

from __future__ import annotations

import re
from pathlib import Path

import click
import numpy as np

from fedtrail.cli.common import (
    ROUND_ID,
    ledger_options,
    open_checked_store,
    open_ledger,
    store_option,
)
from fedtrail.cli.output import emit, format_option
from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, load_bundled, load_image_folder, load_medmnist_npz
from fedtrail.ml.explain import METHODS, explain_model, probe_set
from fedtrail.ml.models import ModelSpec
from fedtrail.storage.codec import decode_model


def _images(images: Path | None, validation: str, per_class: int) -> ImageDataset:
    if images is not None:
        if images.is_dir():
            return load_image_folder(images)
        if images.suffix == ".npz":
            return load_medmnist_npz(images).test
        raise ConfigError("--images must be an image folder (one sub-folder per class) or .npz")
    splits = load_bundled() if validation == "bundled" else load_medmnist_npz(validation)
    return probe_set(splits.val, per_class)


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
    default="bundled",
    show_default=True,
    help="Without --images: the probe set of this .npz's val split.",
)
@click.option("--per-class", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=32, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@store_option
@ledger_options
@format_option()
def explain(
    round_id: int | None,
    cid: str | None,
    sha256: str | None,
    method: str,
    images: Path | None,
    validation: str,
    per_class: int,
    limit: int,
    out: Path,
    store_location: str,
    rpc_url: str | None,
    deployment_path: Path,
    contract: str | None,
    fmt: str,
) -> None:
    """Heatmap overlays (PNG) of a global model's predictions, with confidence in the caption."""
    if (cid is None) != (sha256 is None):
        raise click.UsageError("--cid and --sha256 go together")
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256.removeprefix("0x")):
        raise click.UsageError("--sha256 must be 64 hex digits")
    if cid is None:
        ledger = open_ledger(rpc_url, deployment_path, contract)
        rid = round_id or ledger.last_finalized_round()
        if not rid:
            raise ConfigError("no finalized round yet: nothing to explain")
        info = ledger.get_round(rid)
        if not info.global_cid:
            raise ConfigError(f"round {rid} is {info.phase.label}: it has no global model")
        cid, sha256, title = info.global_cid, info.global_sha256, f"round {rid}: "
    else:
        title = ""
    assert sha256 is not None
    spec = ModelSpec()
    state, meta = decode_model(open_checked_store(store_location).get(cid, sha256), spec=spec)
    data = _images(images, validation, per_class)
    if len(data) > limit:
        data = data.subset(np.arange(limit))
    overlays = explain_model(state, spec, data, method=method, title=title)
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
                "method": method,
                "images": rows,
            },
            "json",
        )
    else:
        click.echo(f"model {cid} (sha256 verified), {method}: {len(rows)} overlays in {out}")
        emit([{k: v for k, v in r.items() if k != "file"} for r in rows], "table")
