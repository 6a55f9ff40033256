"""The clinician page of `fedtrail explain`: one self-contained HTML file for a set of images.

For each image: the image itself, the decision (class and its calibrated probability) and the
truth, and the heatmap overlay of every method side by side; above them the model (round, CID,
sha256 checked against the chain or the command line), the decision rule, and how faithful each
method's heatmaps are on these very images (deletion / insertion AUC beside a random ordering),
so a reader can see which explanation to trust.

Like the audit report the page needs nothing else: inline CSS, images as ``data:`` URIs, no
script, and the report's Content-Security-Policy forbids loading anything. Every string that
comes from elsewhere (class names from a round log, captions) is cleaned and escaped. The
output is deterministic for equal inputs.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from string import Template

import numpy as np

from fedtrail import __version__
from fedtrail.auditor.report import CSP, esc
from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.explain import MethodExplanation

IMAGE_PX = 168
"""Side of the plain image on the page, in pixels (nearest-neighbour upscaling)."""

_CSS = """
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color:#1f2328; margin:0; background:#fff; }
main { max-width: 1500px; margin: 0 auto; padding: 18px 24px 40px; }
h1 { font-size: 24px; margin: 0 0 6px; } h2 { font-size: 18px; margin: 22px 0 8px; }
.note { color:#5f6368; font-size: 13px; margin: 4px 0 10px; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px;
  word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0; }
dt { font-weight: 600; } dd { margin: 0; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d9dce1; padding: 4px 10px; text-align: left; }
th { background: #f3f5f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
section.case { border-top: 1px solid #d9dce1; padding: 8px 0; }
.row { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; text-align: center; font-size: 12px; }
figure img { display: block; width: 210px; height: auto; image-rendering: auto; }
figure img.plain { width: 168px; image-rendering: pixelated; border: 1px solid #d9dce1; }
.right { color: #1b7f3b; font-weight: 700; } .wrong { color: #b3261e; font-weight: 700; }
"""

_DOCUMENT = Template(
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta http-equiv="Content-Security-Policy" content="$csp">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>$title</title><style>$css</style></head>\n<body><main>\n$body\n"
    '<p class="note">Written by <code>fedtrail explain</code> $version.</p>'
    "</main></body></html>\n"
)


@dataclass(frozen=True)
class ModelFacts:
    """What the page says about the explained model and its decision rule."""

    cid: str
    sha256: str
    round: int | None
    rule: str
    rule_source: str


def image_png(image: np.ndarray, size: int = IMAGE_PX) -> bytes:
    """PNG of one ``(C, H, W)`` image with values in [0, 1] (C = 1 or 3), upscaled to about
    ``size`` px by whole-pixel repetition; no metadata, so equal images give equal bytes."""
    from PIL import Image

    arr = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    scale = max(1, size // max(arr.shape[0], arr.shape[1]))
    pixels = np.rint(arr * 255).astype(np.uint8).repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _name(class_names: Sequence[str], class_id: int) -> str:
    return class_names[class_id] if 0 <= class_id < len(class_names) else f"class {class_id}"


def _faithfulness_table(results: Sequence[MethodExplanation]) -> str:
    rows = []
    for r in results:
        f = r.faithfulness
        if f is None:
            continue
        rows.append(
            f"<tr><td>{esc(r.method, 80)}</td><td class=num>{f.deletion_auc:.3f}</td>"
            f"<td class=num>{f.random_deletion_auc:.3f}</td>"
            f"<td class=num>{f.insertion_auc:.3f}</td>"
            f"<td class=num>{f.random_insertion_auc:.3f}</td></tr>"
        )
    if not rows:
        return ""
    first = next(r.faithfulness for r in results if r.faithfulness is not None)
    return (
        "<h2>Which explanation to trust</h2>"
        '<p class="note">Faithfulness on these images: the pixels each method ranks first are '
        f"removed (deletion) or restored (insertion), {100 // first.steps}% of the image per "
        "step, replaced by black, and the model's probability of the explained class is "
        "followed. A method whose heatmaps point at what the model uses makes the probability "
        "fall fast when they are removed (low deletion AUC) and rise fast when they are "
        "restored (high insertion AUC). A random ordering of the pixels is the chance level: "
        "a method no better than it explains nothing here.</p>"
        "<table><thead><tr><th>Method</th><th>Deletion AUC (lower is better)</th>"
        "<th>random</th><th>Insertion AUC (higher is better)</th><th>random</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def render_page(
    facts: ModelFacts,
    images: ImageDataset,
    results: Sequence[MethodExplanation],
    class_names: Sequence[str],
) -> str:
    """The whole page: the model, the faithfulness table, then one section per image."""
    n = len(images)
    if any(len(r.overlays) != n for r in results):
        raise ConfigError("every method must have one overlay per image")
    round_text = "\u2014" if facts.round is None else str(facts.round)
    body = [
        "<h1>Model explanations</h1>",
        '<p class="note">What the model decided for each image, and where each explanation '
        "method says it looked. Heatmaps show attribution, not proof: check them against the "
        "image and the faithfulness table.</p>",
        "<dl>",
        f"<dt>Model round</dt><dd>{esc(round_text)}</dd>",
        f"<dt>Model CID</dt><dd><code>{esc(facts.cid, 200)}</code></dd>",
        f"<dt>Model sha256</dt><dd><code>{esc(facts.sha256, 80)}</code> (verified)</dd>",
        f"<dt>Decision rule</dt><dd>{esc(facts.rule, 200)} ({esc(facts.rule_source, 300)})</dd>",
        f"<dt>Images</dt><dd>{n}</dd>",
        f"<dt>Methods</dt><dd>{esc(', '.join(r.method for r in results), 300)}</dd>",
        "</dl>",
        _faithfulness_table(results),
        "<h2>Images</h2>",
    ]
    for i in range(n):
        first = results[0].overlays[i]
        verdict = (
            '<span class="right">correct</span>'
            if first.prediction == first.label
            else '<span class="wrong">incorrect</span>'
        )
        body.append(
            f'<section class="case"><h3>Image {i + 1}: predicted '
            f"<b>{esc(_name(class_names, first.prediction), 80)}</b> "
            f"({first.confidence:.1%} calibrated probability), truth "
            f"<b>{esc(_name(class_names, first.label), 80)}</b> \u2014 {verdict}</h3>"
            '<div class="row">'
            f'<figure><img class="plain" src="{_uri(image_png(images.images[i]))}" '
            f'alt="image {i + 1}"><figcaption>image</figcaption></figure>'
        )
        for r in results:
            o = r.overlays[i]
            body.append(
                f'<figure><img src="{_uri(o.png)}" alt="{esc(o.caption, 300)}">'
                f"<figcaption>{esc(r.method, 80)}</figcaption></figure>"
            )
        body.append("</div></section>")
    return _DOCUMENT.substitute(
        csp=CSP,
        title=esc(f"fedtrail explain: round {round_text}", 200),
        css=_CSS,
        body="\n".join(b for b in body if b),
        version=esc(__version__),
    )
