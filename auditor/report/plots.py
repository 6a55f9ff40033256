"""The report's matplotlib figures, drawn from the collected records, as PNG bytes.

Figures are built on a bare ``Figure`` (the Agg canvas, no pyplot state, so nothing leaks between
calls or into a caller's plots), with fixed size, dpi and fonts and no ``Software`` stamp: the
same records give the same bytes. Site names are untrusted, so labels go through ``clean_text``
and mathtext parsing is off (``$...$`` in a name stays text).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedtrail.auditor.report.collect import Federation
from fedtrail.auditor.report.text import clean_text, number
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.weights import SCORE_SCALE, WEIGHT_SCALE

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Colour-blind-friendly palette (Okabe-Ito, then Tableau), one colour per site across every plot.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#8c564b",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#9467bd",
    "#ff9896",
    "#98df8a",
    "#c5b0d5",
)
MAX_ANNOTATED = 12  # more rounds than this: no value labels, plain round numbers on the axis


@dataclass(frozen=True)
class SiteStyle:
    """One colour per site (hatched once the palette repeats), the same in plots and tables;
    ``colour`` lists the sites in the aggregation order."""

    colour: dict[str, str]
    hatch: dict[str, str]

    @classmethod
    def of(cls, fed: Federation) -> SiteStyle:
        order = fed.site_order()
        return cls(
            colour={a: PALETTE[i % len(PALETTE)] for i, a in enumerate(order)},
            hatch={a: ("" if i < len(PALETTE) else "//") for i, a in enumerate(order)},
        )


def site_label(fed: Federation, address: str) -> str:
    """A legend entry: the cleaned name and the address prefix."""
    name = clean_text(fed.site_name(address), 32) or "(no name)"
    text = f"{name} ({address[:8]}\u2026)"
    return " " + text if text.startswith("_") else text  # "_x" labels are hidden by mpl


def _render(draw: Callable[[Axes], bool], height: float = 3.4) -> bytes | None:
    """``draw`` on a fresh figure as PNG bytes; None when it had nothing to draw."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    # parse_math off: site names are untrusted and "$...$" would be parsed as mathtext
    with matplotlib.rc_context(
        {
            "text.parse_math": False,
            "text.usetex": False,
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        # Constrained layout, run here once: a figure that carries a layout engine makes
        # savefig draw it twice, once without rendering only to run the engine and once to
        # render. Same engine, renderer and dpi, so the same pixels and bytes.
        fig = Figure(figsize=(9.0, height), dpi=110)
        ax = fig.add_subplot()
        if not draw(ax):
            return None
        ConstrainedLayoutEngine().execute(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def metrics_png(fed: Federation) -> bytes | None:
    """AUC, F1 (at 0.5 and at the calibrated threshold) and accuracy after aggregation per
    finalized round (from the logs; logs without a calibrated F1 leave a gap); for more than
    two classes (logs with more than two per-class recalls) the macro AUC and F1."""
    rows = [(rd.info.id, rd.metrics_after()) for rd in fed.rounds]
    points = [(r, m) for r, m in rows if m is not None]

    def draw(ax: Axes) -> bool:
        if not points:
            return False
        xs = [r for r, _ in points]
        multi = any(isinstance(m.get("recall"), list) and len(m["recall"]) > 2 for _, m in points)
        styles = (  # key, legend, colour, line style, marker, label offset (points)
            ("auc", "macro AUC" if multi else "AUC", "#1f3a93", "-", "o", 7),
            ("f1", "macro F1" if multi else "F1 at 0.5", "#c05800", "-", "s", -12),
            (
                "f1_calibrated",
                "macro F1 calibrated" if multi else "F1 at threshold",
                "#2e7d32",
                "--",
                "D",
                0,
            ),
            ("accuracy", "accuracy", "#5f6368", ":", "^", 0),
        )
        for key, name, colour, ls, marker, dy in styles:
            ys = [number(m.get(key)) for _, m in points]
            ax.plot(xs, ys, color=colour, linestyle=ls, marker=marker, label=name)
            if not dy or len(xs) > MAX_ANNOTATED:
                continue
            for x, y in zip(xs, ys, strict=True):
                if y == y:  # not NaN
                    ax.annotate(
                        f"{y:.3f}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(0, dy),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
        _round_ticks(ax, xs, [f"round {x}" for x in xs])
        if len(xs) == 1:
            ax.set_xlim(xs[0] - 1, xs[0] + 1)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("after aggregation")
        ax.set_title("Global model on the aggregator's validation set (from each round's log)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower right", frameon=False)
        return True

    return _render(draw)


def weights_png(fed: Federation, style: SiteStyle) -> bytes | None:
    """Each valued round's on-chain weights as one stacked bar."""
    valued = [rd for rd in fed.rounds if rd.info.phase in (Phase.VALUED, Phase.FINALIZED)]

    def draw(ax: Axes) -> bool:
        if not valued:
            return False
        xs = list(range(len(valued)))
        bottom = [0.0] * len(valued)
        shown = 0
        for site in fed.site_order():
            subs = [next((s for s in rd.submissions if s.site == site), None) for rd in valued]
            if all(s is None for s in subs):
                continue
            ys = [s.weight / WEIGHT_SCALE if s else 0.0 for s in subs]
            shown += 1
            ax.bar(
                xs,
                ys,
                bottom=bottom,
                width=0.6 if len(xs) <= MAX_ANNOTATED else 0.85,
                color=style.colour[site],
                hatch=style.hatch[site],
                edgecolor="white",
                linewidth=0.8,
                label=site_label(fed, site),
            )
            for i, y in enumerate(ys):
                if y >= 0.06 and len(xs) <= MAX_ANNOTATED:
                    ax.text(
                        i,
                        bottom[i] + y / 2,
                        f"{y:.0%}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=_ink(style.colour[site]),
                    )
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        _round_ticks(
            ax,
            xs,
            [f"round {rd.info.id}\n({rd.info.phase.label})" for rd in valued],
            numbers=[rd.info.id for rd in valued],
        )
        ax.set_ylim(0, 1.0)
        ax.yaxis.set_major_formatter("{x:.0%}")
        ax.set_ylabel("on-chain weight")
        ax.set_title("Share of each site in the aggregate (on-chain weights)")
        _legend_below(ax, shown)
        return True

    return _render(draw, height=3.8)


def reputation_png(fed: Federation, style: SiteStyle) -> bytes | None:
    """Each site's reputation after every valued round (UpdateValued events; UpdateWithheld's
    after a drop)."""

    def draw(ax: Axes) -> bool:
        if not fed.reputation:
            return False
        rounds: set[int] = set()
        shown = 0
        for site in fed.site_order():
            series = fed.reputation.get(site)
            if not series:
                continue
            shown += 1
            xs = [r for r, _ in series]
            rounds.update(xs)
            ax.plot(
                xs,
                [v / SCORE_SCALE for _, v in series],
                marker="o",
                color=style.colour[site],
                label=site_label(fed, site),
            )
        ticks = sorted(rounds)
        _round_ticks(ax, ticks, [f"round {r}" for r in ticks])
        if len(ticks) == 1:
            ax.set_xlim(ticks[0] - 1, ticks[0] + 1)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("reputation (0..1)")
        ax.set_title("Site reputation after each valued round (contract events)")
        ax.grid(axis="y", alpha=0.3)
        _legend_below(ax, shown)
        return True

    return _render(draw, height=3.8)


def _round_ticks(
    ax: Axes, xs: list[int], labels: list[str], *, numbers: list[int] | None = None
) -> None:
    """One labelled tick per round, or for long histories about a dozen numbered ones."""
    if len(xs) <= MAX_ANNOTATED:
        ax.set_xticks(xs, labels)
        return
    nums = numbers or xs
    step = -(-len(xs) // MAX_ANNOTATED)
    ax.set_xticks(xs[::step], [str(n) for n in nums[::step]])
    ax.set_xlabel("round")


def _legend_below(ax: Axes, n: int) -> None:
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18),
        ncols=min(max(n, 1), 4),
        frameon=False,
        fontsize=8,
    )


def _ink(colour: str) -> str:
    """Black or white, whichever reads on ``colour``."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "white"
