"""A site's consent to the warm-up terms across their two thresholds (``warm_up_floor`` and
``warm_up_scope``, :attr:`~fedtrail.valuation.limits.ThresholdLimits.warm_up_scopes`): by
default a floor of at least 0.5 only with scope 1 (the scoped warm-up new federations write
since session 63); scope 0 under a floor below 1 (the all-passer floor, what terms without
``warm_up_scope`` read as) only with the site's word, ``warm_up_scopes = [0, 1]`` or an
``[accept]`` that sets ``warm_up_floor`` as tables did before session 63 (h-322's strict xfail
"default consent", closed in session 64). The node's decline reason, ``audit verify``'s
``terms.limits``, the aggregator's start warnings and the simulated federations' consent read
the same rule."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from fedtrail.aggregator.commands import default_consent_warnings
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import RoundAudit, _check_limits
from fedtrail.errors import ConfigError
from fedtrail.node.config import NodeConfig, load_node_config, write_node_config
from fedtrail.node.daemon import _unrunnable
from fedtrail.protocol.terms import RoundTerms
from fedtrail.valuation import HISTORY_COMBINER, Combiner
from fedtrail.valuation.limits import (
    WARM_UP_SCOPES,
    ThresholdLimits,
    accept_as_written,
    limits_from,
    load_limits,
)
from tests.fixtures.terms import parsed_terms

ABSENT = None
"""A scope the terms leave out (read as 0, the rule before it)."""


def _terms(floor: float | None, scope: int | None) -> RoundTerms:
    """The product's terms with ``warm_up_floor`` ``floor`` and ``warm_up_scope`` ``scope``
    (None: the key left out), as a node reads them from their bytes."""
    combiner: dict[str, Any] = asdict(HISTORY_COMBINER)
    for key, value in (("warm_up_floor", floor), ("warm_up_scope", scope)):
        if value is None:
            del combiner[key]
        else:
            combiner[key] = value
    valuation = {
        "method": "shapley",
        "metric": "balanced_loss",
        "standing": True,
        "combiner": combiner,
    }
    return parsed_terms(valuation=valuation)


def _limits_check(terms: RoundTerms, accept: ThresholdLimits) -> tuple[bool, str]:
    """``audit verify``'s ``terms.limits`` under ``accept``: whether it fails, and its detail."""
    audit = RoundAudit(1)
    _check_limits(audit, terms, accept)
    [check] = audit.checks
    assert check.name == "terms.limits"
    return check.failed, check.detail


# (floor, scope) -> whether the default [accept] takes them; an absent floor reads as 1 (off)
DEFAULT_TAKES = {
    (1.0, ABSENT): True,  # off: the scope decides nothing
    (1.0, 0): True,
    (1.0, 1): True,
    (ABSENT, ABSENT): True,  # terms of before the warm-up floor: off
    (0.5, 1): True,  # the product's terms since session 63
    (0.5, 0): False,  # the all-passer floor, spelled out
    (0.5, ABSENT): False,  # the same, as terms of before warm_up_scope read
    (0.3, 1): False,  # a floor below the default limit, whatever the scope
    (0.3, 0): False,
    (0.3, ABSENT): False,
}


@pytest.mark.parametrize(("floor", "scope"), sorted(DEFAULT_TAKES, key=str))
def test_the_default_node_takes_the_scoped_floor_and_refuses_the_unscoped_one(
    floor: float | None, scope: int | None
) -> None:
    """Terms as a node reads them: the node's decline reason (before training) and ``audit
    verify``'s ``terms.limits`` (no ``--accept``) say the same, naming the field refused."""
    terms = _terms(floor, scope)
    takes = DEFAULT_TAKES[(floor, scope)]
    reason = _unrunnable(terms)
    failed, detail = _limits_check(terms, ThresholdLimits())  # audit verify without --accept
    assert (reason is None) == takes == (not failed), (reason, detail)
    if takes:
        return
    assert reason is not None and reason.startswith(
        "valuation thresholds stricter than this site accepts ([accept] in its config.toml): "
    )
    if floor is not None and floor < 0.5:
        assert f"warm_up_floor {floor} (accepted: at least 0.5)" in reason
        assert "warm_up_floor" in detail
    if scope != 1:  # 0 or absent: the scope named, with the key that would take it
        named = f"warm_up_scope 0 under warm_up_floor {floor}"
        assert named in reason and named in detail
        assert "warm_up_scopes = [1] under a warm_up_floor below 1" in reason
        assert "takes warm_up_scopes = [0, 1]" in reason
    else:
        assert "warm_up_scope" not in reason


@pytest.mark.parametrize("scope", [ABSENT, 0, 1])
@pytest.mark.parametrize(
    "table",
    [
        {"warm_up_scopes": [0, 1]},  # the new key: the default floor limit, both scopes
        {"warm_up_floor": 0.5},  # a table of before session 63: its opt-in, as it meant it
        {"warm_up_floor": 0.3},  # a lower floor, in either era: every scope of its time
        {"warm_up_floor": 0.3, "warm_up_scopes": [0, 1]},
    ],
    ids=["scopes", "old-0.5", "old-0.3", "both"],
)
def test_an_explicit_opt_in_takes_the_unscoped_floor(
    table: dict[str, Any], scope: int | None
) -> None:
    accept = limits_from(table)
    for floor in (0.5, 0.3):
        terms = _terms(floor, scope)
        within = floor >= accept.warm_up_floor
        assert (_unrunnable(terms, accept) is None) == within, (table, floor, scope)
        assert _limits_check(terms, accept)[0] == (not within)


@pytest.mark.parametrize(
    ("table", "scopes"),
    [
        ({}, WARM_UP_SCOPES),  # no [accept] entry: the default
        ({"warm_up_floor": 1.0}, (0, 1)),  # a table of before session 63 at its default
        ({"warm_up_floor": 0.5}, (0, 1)),  # its opt-in
        ({"warm_up_floor": 0.5, "warm_up_scopes": [1]}, (1,)),  # the new key wins
        ({"warm_up_scopes": [0]}, (0,)),
        ({"warm_up_scopes": []}, ()),  # no floor below 1 at all
        ({"stale_cosine": 0.9999}, WARM_UP_SCOPES),  # a table that says nothing of the warm-up
    ],
)
def test_old_tables_mean_what_they_meant(
    tmp_path: Path, table: dict[str, Any], scopes: tuple[int, ...]
) -> None:
    """The same table read as ``audit verify --accept FILE`` and as a node's config.toml."""
    assert limits_from(table).warm_up_scopes == scopes
    lines = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in table.items())
    accept_file = tmp_path / "accept.toml"
    accept_file.write_text(f"[accept]\n{lines}\n")
    assert load_limits(accept_file).warm_up_scopes == scopes
    config = tmp_path / "config.toml"
    config.write_text(f'[node]\nname = "St. Mary"\n\n[accept]\n{lines}\n')
    assert load_node_config(config).accept.warm_up_scopes == scopes


def test_a_written_config_keeps_its_scopes_explicit(tmp_path: Path) -> None:
    """``node init`` writes the whole ``[accept]`` table: its ``warm_up_floor`` with the
    scopes it takes, so the file reads back as written, not as a table of before session 63
    (which would take scope 0 too)."""
    path = tmp_path / "config.toml"
    write_node_config(path, NodeConfig())
    text = path.read_text()
    assert "warm_up_floor = 0.5" in text and "warm_up_scopes = [\n    1,\n]" in text
    assert load_node_config(path).accept == ThresholdLimits()
    opted = NodeConfig(accept=ThresholdLimits(warm_up_scopes=(0, 1)))
    write_node_config(path, opted)
    assert load_node_config(path).accept.warm_up_scopes == (0, 1)


def test_accept_as_written_changes_only_an_old_warm_up_table() -> None:
    assert accept_as_written({"warm_up_floor": 0.5}) == {
        "warm_up_floor": 0.5,
        "warm_up_scopes": [0, 1],
    }
    for table in ({}, {"warm_up_scopes": [1]}, {"warm_up_floor": 0.5, "warm_up_scopes": []}):
        assert accept_as_written(table) == table
    assert accept_as_written("not a table") == "not a table"  # the reader names the error


@pytest.mark.parametrize(
    "value", [[7], [-1], [True], [1.0], ["1"], [1, "0"], 1, "1", None], ids=str
)
def test_invalid_scopes_are_refused_naming_the_key(value: Any) -> None:
    """Each entry a ``warm_up_scope`` the terms can carry, an integer, in a list."""
    with pytest.raises(ConfigError, match="warm_up_scopes"):
        limits_from({"warm_up_scopes": value})


def test_a_simulated_federation_consents_to_its_aggregators_scope() -> None:
    """``ThresholdLimits.accepting`` (the demo's and the simulations' sites consenting to
    their aggregator) adds the combiner's scope where its floor is below 1, and nothing
    else."""
    unscoped = replace(HISTORY_COMBINER, warm_up_scope=0)
    assert ThresholdLimits().refusal(unscoped) is not None
    accepting = ThresholdLimits.accepting(unscoped)
    assert accepting.warm_up_scopes == (0, 1) and accepting.refusal(unscoped) is None
    assert ThresholdLimits.accepting(HISTORY_COMBINER) == ThresholdLimits()
    off = replace(HISTORY_COMBINER, warm_up_floor=1.0, warm_up_scope=0)
    assert ThresholdLimits.accepting(off).warm_up_scopes == WARM_UP_SCOPES
    assert ThresholdLimits().refusal(Combiner()) is None


def test_the_aggregator_warns_of_the_unscoped_floor() -> None:
    assert default_consent_warnings(AggregatorSettings(combiner=HISTORY_COMBINER)) == []
    unscoped = replace(HISTORY_COMBINER, warm_up_scope=0)
    [warning] = default_consent_warnings(AggregatorSettings(combiner=unscoped))
    assert "warm_up_scope 0 under warm_up_floor 0.5" in warning and "[stricter]" in warning


@pytest.mark.parametrize(
    ("table", "takes"),
    [
        ({}, False),  # the default: scope 1 alone
        ({"warm_up_floor": 0.5}, False),  # an old table: the scopes that existed when written
        ({"warm_up_scopes": [0, 1]}, False),
        ({"warm_up_scopes": [1, 2]}, True),  # the site's word
        ({"warm_up_scopes": [2]}, True),
    ],
)
def test_scope_2_takes_the_sites_word(table: dict[str, Any], takes: bool) -> None:
    """``warm_up_scope`` 2 (opt-in, h-325: every warm-up passer scored from its share, only the
    outweighing ones recorded) is another rule than the one a default node or an old table
    consented to: taken only where ``warm_up_scopes`` names it, refused naming the key."""
    accept = limits_from(table)
    terms = _terms(0.5, 2)
    refusal = _unrunnable(terms, accept)
    assert (refusal is None) == takes, (table, refusal)
    failed, detail = _limits_check(terms, accept)
    assert failed == (not takes)
    if not takes:
        assert "warm_up_scope 2 under warm_up_floor 0.5" in detail
    assert _unrunnable(_terms(1.0, 2), accept) is None  # off: the scope decides nothing


@pytest.mark.parametrize(
    ("table", "warned"),
    [
        ("warm_up_floor = 0.5", True),  # session 63's node init, or a hand-set lower floor
        ("warm_up_floor = 0.3", True),
        ("warm_up_floor = 1.0", False),  # takes no floor below 1: the scopes decide nothing
        ("warm_up_floor = 0.5\nwarm_up_scopes = [1]", False),
        ("warm_up_floor = 0.5\nwarm_up_scopes = [0, 1]", False),  # said so itself
        ("stale_cosine = 0.9999", False),
    ],
)
def test_a_node_config_read_as_written_warns_of_the_unscoped_floor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, table: str, warned: bool
) -> None:
    """An ``[accept]`` that takes a floor below 1 without ``warm_up_scopes`` (read as
    ``[0, 1]``) is named in a warning when the node loads it, with the line that takes only the
    scoped floor (h-331: a hand-set lower floor took scope 0 too, unannounced)."""
    config = tmp_path / "config.toml"
    config.write_text(f'[node]\nname = "St. Mary"\n\n[accept]\n{table}\n')
    with caplog.at_level("WARNING", logger="fedtrail.node.config"):
        load_node_config(config)
    messages = [r.getMessage() for r in caplog.records if "warm_up_scopes" in r.getMessage()]
    assert bool(messages) == warned, messages
    if warned:
        assert "add warm_up_scopes = [1]" in messages[0]
        assert str(config) in messages[0]
