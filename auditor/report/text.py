"""Untrusted text made displayable, for the page and the plots alike.

Site names (``registerSite``) and every string in an explanation log come from other parties:
before anything is shown, control and bidi-override characters go, whitespace collapses and the
text is cut, so no name can reorder, hide or flood what is around it.
"""

from __future__ import annotations

import re

from fedtrail.cli.output import printable


def clean_text(value: object, limit: int = 500) -> str:
    """``value`` as display text: control, format (bidi override, zero-width) and unassigned
    characters replaced by U+FFFD, whitespace runs collapsed, cut at ``limit`` characters."""
    text = re.sub(r"\s+", " ", printable(str(value))).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


def short_hex(value: str, head: int = 10, tail: int = 4) -> str:
    """``0x1234abcd\u2026ef01``: the first ``head`` and last ``tail`` characters."""
    if len(value) <= head + tail + 1:
        return value
    return f"{value[:head]}\u2026{value[len(value) - tail :]}"


def number(value: object) -> float:
    """A log's (untrusted) number as a float; NaN for anything that is not a real number."""
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else float("nan")
    )
