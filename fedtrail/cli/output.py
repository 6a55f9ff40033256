"""Printing records for people (table) and machines (json, csv), the same way everywhere."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import traceback
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

FORMATS = ("table", "json", "csv")
F = TypeVar("F", bound=Callable[..., Any])


def format_option(*choices: str) -> Callable[[F], F]:
    """The ``--format`` option every data-printing command takes."""
    allowed = choices or ("table", "json")
    option: Callable[[F], F] = click.option(
        "--format",
        "fmt",
        type=click.Choice(allowed),
        default="table",
        show_default=True,
        help="Output for people (table) or machines.",
    )
    return option


def reason_label(code: int | None) -> str:
    """The aggregator's name for an on-chain reason code (the number itself when unknown)."""
    if code is None:
        return ""
    from fedtrail.protocol.codes import Reason

    try:
        return Reason(code).name
    except ValueError:
        return str(code)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(none)"
    cols = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def render_kv(record: Mapping[str, Any]) -> str:
    width = max((len(k) for k in record), default=0)
    return "\n".join(f"{printable(k).ljust(width)}  {_cell(v)}" for k, v in record.items())


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON's null), in nested
    dicts, lists and tuples alike: ``json.dumps`` writes them as ``NaN``/``Infinity``, which is
    not JSON (an AUC on a one-class validation split is NaN; jq and strict parsers refused
    ``node status --format json``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def emit(data: Any, fmt: str, *, columns: Sequence[str] | None = None) -> None:
    """Prints ``data`` (a record or a list of records) in ``fmt``; JSON is strict (no NaN)."""
    if fmt == "json":
        click.echo(
            json.dumps(_finite(data), indent=2, sort_keys=False, default=str, allow_nan=False)
        )
    elif fmt == "csv":
        rows = data if isinstance(data, list) else [data]
        buf = io.StringIO()
        if rows:
            cols = list(columns or rows[0].keys())
            writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({c: _csv_cell(r.get(c)) for c in cols})
        click.echo(buf.getvalue(), nl=False)
    elif isinstance(data, list):
        click.echo(render_table(data, columns))
    else:
        click.echo(render_kv(data))


_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def printable(text: str) -> str:
    """``text`` safe to print to a terminal: tab, newline and carriage return as spaces, every
    other control, format (bidi override, zero-width), surrogate, private-use or unassigned
    character as U+FFFD. Site names are chosen by the coordinator and log texts by the
    aggregator: raw, an escape sequence in one clears the auditor's screen, retitles the
    terminal or moves the cursor to overwrite a column (``registered False`` read ``True``)."""
    return "".join(
        " " if ch in "\t\n\r" else "\ufffd" if unicodedata.category(ch) in _UNPRINTABLE else ch
        for ch in text
    )


class PrintableFormatter(logging.Formatter):
    """A log formatter whose every record is one printable line (:func:`printable`), its
    traceback or stack printable line by line. Daemons log values other parties chose (a CID
    from the chain, a tensor name from an update's header, a Flower error text): raw, a
    newline forges a whole log line (``round 7: revealed ... OK``) in ``node.log`` and an
    escape sequence clears or rewrites the operator's terminal."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        """The traceback's frames (this code's source) line by line; each exception's own
        text, which quotes what was refused, as one line."""
        chunks = traceback.TracebackException(ei[0], ei[1], ei[2]).format()
        return "\n".join(
            _printable_lines(c.rstrip("\n")) if c.startswith("  ") else printable(c.strip("\n"))
            for c in chunks
        )

    def formatStack(self, stack_info: str) -> str:
        return _printable_lines(super().formatStack(stack_info))


def basic_printable_logging(level: int = logging.INFO) -> None:
    """``logging.basicConfig`` to stderr through :class:`PrintableFormatter` (the Flower apps,
    which have no role folder to log to); does nothing when the root logger has a handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _printable_lines(text: str) -> str:
    return "\n".join(printable(line) for line in text.split("\n"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    return printable(str(value))


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a *text* value (a site name the coordinator
    chose, a log's explanation) starting with ``= + - @`` is prefixed with ``'`` so that opening
    an audit CSV does not run ``=HYPERLINK(...)`` or ``=cmd|...`` (OWASP's CSV injection
    advice). Numbers are written as numbers, negative ones included."""
    cell = _cell(value)
    if isinstance(value, str) and cell.startswith(_FORMULA):
        return "'" + cell
    return cell


def _num(value: object) -> str:
    """A metric as printed; an undefined one (null in a log) as n/a."""
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"


def metrics_line(after: Mapping[str, Any]) -> str:
    """One line on a global model's validation metrics (a round log's ``metrics/after``): for
    two classes AUC and F1 at 0.5 and at the calibrated threshold; for more, macro AUC, macro F1
    and balanced accuracy of the calibrated decision ``argmax(logits + bias)``."""
    bias = after.get("bias")
    if isinstance(bias, list | tuple) and len(bias) > 2:
        return (
            f"global macro AUC {_num(after.get('auc'))}  macro F1 "
            f"{_num(after.get('f1_calibrated'))}  balanced accuracy "
            f"{_num(after.get('balanced_accuracy_calibrated'))} ({len(bias)} classes, "
            "calibrated argmax)"
        )
    line = f"global AUC {_num(after.get('auc'))}  F1 {_num(after.get('f1'))} at 0.5"
    if after.get("threshold") is not None and after.get("f1_calibrated") is not None:
        line += f"  F1 {after['f1_calibrated']:.3f} at threshold {after['threshold']:.3f}"
    return line
