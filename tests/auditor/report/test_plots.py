"""plots: deterministic PNG figures from the records, untrusted names kept as plain text."""

from __future__ import annotations

import pytest

from fedtrail.auditor.report import Federation, RoundData
from fedtrail.auditor.report.collect import PNG_MAGIC
from fedtrail.auditor.report.plots import (
    PALETTE,
    SiteStyle,
    metrics_png,
    reputation_png,
    site_label,
    weights_png,
)
from fedtrail.ledger import RoundInfo, SiteInfo, Submission
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.weights import WEIGHT_SCALE

HASH = "ab" * 32


def _address(i: int) -> str:
    return f"0x{i + 1:040x}"


def _federation(n_sites: int, n_rounds: int, names: dict[int, str] | None = None) -> Federation:
    """``n_rounds`` finalized rounds in which every site submits, with equal weights."""
    names = names or {}
    sites = [
        SiteInfo(_address(i), True, names.get(i, f"site {i}"), 500_000, 1, 10_000, 1)
        for i in range(n_sites)
    ]
    rounds = []
    for r in range(1, n_rounds + 1):
        info = RoundInfo(
            r, Phase.FINALIZED, 0, 0, 0, n_sites, n_sites, "Qm", HASH, "Qm", HASH, "Qm", HASH,
            "Qm", HASH,
        )  # fmt: skip
        subs = [
            Submission(
                r, s.address, "Qm", HASH, 10, 500_000, 0, WEIGHT_SCALE // n_sites, HASH, i, True
            )
            for i, s in enumerate(sites)
        ]
        log = {"metrics": {"after": {"auc": 0.8, "f1": "n/a", "accuracy": True}}}
        rounds.append(RoundData(info, subs, log=log))
    reputation = {s.address: [(r, 400_000 + r) for r in range(1, n_rounds + 1)] for s in sites}
    return Federation("0x" + "1" * 40, 1, 9, "0xc", "0xa", sites, rounds, reputation, [])


def _plots(fed: Federation) -> list[bytes | None]:
    style = SiteStyle.of(fed)
    return [metrics_png(fed), weights_png(fed, style), reputation_png(fed, style)]


def test_plots_are_deterministic_pngs() -> None:
    fed = _federation(3, 2)
    first, again = _plots(fed), _plots(fed)
    assert all(png is not None and png.startswith(PNG_MAGIC) for png in first)
    assert first == again
    assert len(set(first)) == 3


def test_no_data_no_figure() -> None:
    fed = _federation(3, 0)
    fed.reputation = {}
    assert _plots(fed) == [None, None, None]


@pytest.mark.parametrize("name", ["$\\notamathcommand{$", "$x^2$ & <b>", "_hidden"])
def test_untrusted_names_are_not_mathtext(name: str) -> None:
    # with mathtext parsing on, an unknown command fails the whole figure with a ValueError
    fed = _federation(2, 1, {0: name})
    assert all(png is not None for png in _plots(fed))


def test_long_histories_and_many_sites() -> None:
    fed = _federation(len(PALETTE) + 2, 14)
    style = SiteStyle.of(fed)
    order = fed.site_order()
    assert style.colour[order[0]] == style.colour[order[len(PALETTE)]] == PALETTE[0]
    assert style.hatch[order[0]] == "" and style.hatch[order[len(PALETTE)]] == "//"
    assert all(png is not None for png in _plots(fed))


def test_site_label() -> None:
    fed = _federation(1, 0, {0: "_under\u202escore"})
    assert site_label(fed, _address(0)) == f" _under\\u202escore ({_address(0)[:8]}\u2026)"
    fed.sites[0] = SiteInfo(_address(0), True, "", 0, 0, 10_000, 1)
    assert site_label(fed, _address(0)).startswith("(no name) (")


def test_site_label_names_a_renamed_sites_earlier_names() -> None:
    """a64: a paid site re-registered under another name keeps its earlier one beside it, so
    the report does not credit its old rounds to the new name alone."""
    fed = _federation(2, 1, {0: "hospital-z", 1: "hospital-a"})
    fed.former_names = {_address(0): ["hospital-a"]}
    assert fed.site_name(_address(0)) == "hospital-z (formerly hospital-a)"
    assert fed.site_name(_address(1)) == "hospital-a"
