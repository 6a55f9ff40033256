"""The public screen is the default of new peer federations, and a ledger keeps round 1's rule.

Since session 57 ``AggregatorSettings.public_screen`` None (the default, ``aggregator run``
without ``--public-screen`` or ``--validators-screen``) writes ``valuation.public_screen`` true
into a peer federation's round 1 with standing (issue 14: each validator's scoring within its
own training time). Round 1 fixes it (``terms.task_fixed``), so a later round offers round 1's
rule: a ledger started by an older aggregator, whose peer terms lack the key, keeps every
validator's screen, through the library and through ``aggregator run --valuation-mode peers``
(whose peer-only fields do not count as set by the operator), and an operator who asks for the
other rule is refused before anything is opened. On Anvil + IPFS (round 1 opened; the terms of
round 2 are what the service would offer)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedtrail.aggregator import commands
from fedtrail.aggregator.service import AggregatorService
from fedtrail.cli import cli
from fedtrail.protocol.terms import MAX_TERMS_BYTES, RoundTerms, payment_differences
from fedtrail.simulation.federation import Federation
from tests.aggregator.peer_setup import peer_federation

pytestmark = [pytest.mark.anvil, pytest.mark.ipfs, pytest.mark.usefixtures("one_torch_thread")]


def _terms(fed: Federation, round_id: int) -> RoundTerms:
    info = fed.ledger.get_round(round_id)
    blob = fed.store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
    return RoundTerms.from_bytes(blob)


def _offered_by_cli(
    fed: Federation, monkeypatch: pytest.MonkeyPatch, folder: Path, *flags: str
) -> tuple[Any, list[RoundTerms]]:
    """``aggregator run --valuation-mode peers FLAGS`` on ``fed``'s ledger and store: the CLI
    result and the round-2 terms its service offers (it opens nothing)."""
    monkeypatch.setattr(commands, "open_ledger", lambda *_: fed.ledger)
    monkeypatch.setattr(commands, "load_signer", lambda *_: fed.aggregator)
    monkeypatch.setattr(commands, "open_checked_store", lambda *_: fed.store)
    offered: list[RoundTerms] = []

    def offer(self: AggregatorService, **_: Any) -> list[Any]:
        offered.append(self.round_terms(2))
        return []

    monkeypatch.setattr(AggregatorService, "run", offer)
    args = ["aggregator", "run", "--folder", str(folder), "--threads", "1"]
    args += ["--valuation-mode", "peers", "--seed", "3", *flags]
    return CliRunner().invoke(cli, args), offered


def test_a_new_peer_federation_writes_the_public_screen_and_keeps_it(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3, standing=True)
    assert fed.service.settings.public_screen is None  # the product's default
    assert fed.service.open_next() == 1
    first = _terms(fed, 1)
    assert first.valuation["mode"] == "peers" and first.valuation["public_screen"] is True
    second = fed.service.round_terms(2)
    assert second.valuation["public_screen"] is True
    assert payment_differences(first, second) == []


def test_a_ledger_started_without_the_public_screen_keeps_every_validators_screen(
    anvil_url: str, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # round 1 as an aggregator of session 56 wrote it (its default: every validator screens)
    fed = peer_federation(
        tmp_path / "fed", anvil_url, ipfs_api, sites=3, standing=True, public_screen=False
    )
    assert fed.service.open_next() == 1
    first = _terms(fed, 1)
    assert first.valuation["standing"] is True and "public_screen" not in first.valuation
    # a newer service at its defaults offers round 1's rule
    newer = fed.service
    newer.settings = replace(newer.settings, public_screen=None)
    second = newer.round_terms(2)
    assert "public_screen" not in second.valuation
    assert payment_differences(first, second) == []
    # told to run the public screen, it offers it, and the change is named
    newer.settings = replace(newer.settings, public_screen=True)
    assert payment_differences(first, newer.round_terms(2))
    # the CLI alike: `--valuation-mode peers` (given) does not make the peer-only field the
    # operator's, so round 1's rule is kept; `--public-screen` given is refused, naming it
    result, offered = _offered_by_cli(fed, monkeypatch, tmp_path / "cli")
    assert result.exit_code == 0, result.output
    (terms,) = offered
    assert "public_screen" not in terms.valuation
    assert payment_differences(first, terms) == []
    refused, none = _offered_by_cli(fed, monkeypatch, tmp_path / "cli2", "--public-screen")
    assert refused.exit_code == 2, refused.output
    assert "round 2 not opened" in refused.output
    named = "--public-screen (valuation/public_screen true, round 1's: absent)"
    assert named in refused.output, refused.output
    assert none == []
    assert fed.ledger.current_round() == 1


def test_a_new_peer_federation_writes_the_weighted_reference_rule_and_keeps_it(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """h-300: with the public screen, round 1's terms name ``valuation.references``
    "weighted" (a round's updates at weight 0 with a positive score are no free-rider
    references), and round 2's offer keeps it; the sites' nodes take part under them."""
    from fedtrail.valuation.consent import unrunnable

    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3, standing=True)
    assert fed.service.open_next() == 1
    first = _terms(fed, 1)
    assert first.valuation["references"] == "weighted"
    second = fed.service.round_terms(2)
    assert second.valuation["references"] == "weighted"
    assert payment_differences(first, second) == []
    assert unrunnable(first) is None  # a node at the default [accept] takes part


def test_a_ledger_started_without_the_reference_rule_keeps_the_earlier_references(
    anvil_url: str, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer ledger whose round 1 has the public screen without ``valuation.references`` (an
    aggregator of sessions 57 to 61; ``references=None`` stands in for it) keeps the earlier
    reference rule: a newer service offers round 1's terms through the library and through
    ``aggregator run``, and nodes still take part under them."""
    from fedtrail.valuation.consent import unrunnable

    fed = peer_federation(
        tmp_path / "fed", anvil_url, ipfs_api, sites=3, standing=True, references=None
    )
    assert fed.service.open_next() == 1
    first = _terms(fed, 1)
    assert first.valuation["public_screen"] is True and "references" not in first.valuation
    assert unrunnable(first) is None
    newer = fed.service
    newer.settings = replace(newer.settings, references="weighted")  # this release's default
    second = newer.round_terms(2)
    assert "references" not in second.valuation
    assert payment_differences(first, second) == []
    result, offered = _offered_by_cli(fed, monkeypatch, tmp_path / "cli")
    assert result.exit_code == 0, result.output
    (terms,) = offered
    assert "references" not in terms.valuation
    assert payment_differences(first, terms) == []
