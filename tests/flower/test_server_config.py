"""The ServerApp's settings come from Flower's run config: the app's defaults parse, unknown keys
and wrong types are refused (a typo must not silently fall back to a default)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedtrail.errors import ConfigError
from fedtrail.flower.server_app import ServerConfig

APP = Path(__file__).resolve().parents[2] / "fedtrail" / "flower" / "app" / "pyproject.toml"


def _defaults() -> dict[str, object]:
    doc = tomllib.loads(APP.read_text(encoding="utf-8"))
    return dict(doc["tool"]["flwr"]["app"]["config"])


def test_the_app_config_names_every_setting_with_its_default() -> None:
    run = _defaults() | {"deployment": "d.json", "aggregator-keystore": "k.json"}
    cfg = ServerConfig.from_run_config(run)
    assert cfg == ServerConfig(deployment="d.json", aggregator_keystore="k.json")
    assert set(run) == {f.replace("_", "-") for f in ServerConfig.__dataclass_fields__}


def test_the_app_config_alone_names_no_ledger() -> None:
    with pytest.raises(ConfigError, match="deployment"):
        ServerConfig.from_run_config(_defaults())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("round-secnds", 30, "unknown run config"),
        ("round-seconds", "30", "must be a int"),
        ("explain", 1, "must be a bool"),
        ("num-server-rounds", True, "must be a int"),
        ("num-server-rounds", 0, "at least 1"),
        ("min-nodes", 0, "min-nodes"),
    ],
)
def test_bad_run_config_is_refused(key: str, value: object, message: str) -> None:
    run = {"deployment": "d.json", "aggregator-keystore": "k.json", key: value}
    with pytest.raises(ConfigError, match=message):
        ServerConfig.from_run_config(run)


def test_an_integer_is_taken_where_seconds_may_be_fractional() -> None:
    run = {"deployment": "d.json", "aggregator-keystore": "k.json", "grace-seconds": 5}
    assert ServerConfig.from_run_config(run).grace_seconds == 5.0


def test_a_prefix_reads_only_fedtrails_keys_beside_a_projects_own() -> None:
    run = {
        "num-server-rounds": 7,  # the project's own keys: ignored, whatever their type
        "lr": 0.1,
        "fedtrail-deployment": "d.json",
        "fedtrail-aggregator-keystore": "k.json",
        "fedtrail-num-server-rounds": 2,
    }
    cfg = ServerConfig.from_run_config(run, prefix="fedtrail-")
    assert (cfg.deployment, cfg.aggregator_keystore, cfg.num_server_rounds) == (
        "d.json",
        "k.json",
        2,
    )
    with pytest.raises(ConfigError, match="unknown run config"):
        ServerConfig.from_run_config(run | {"fedtrail-lr": 0.1}, prefix="fedtrail-")
    with pytest.raises(ConfigError, match="unknown run config"):
        ServerConfig.from_run_config(run)


def test_initial_salt_seeded_or_given_makes_the_start_model_repeat() -> None:
    # `aggregator run --initial-salt seeded` has a run-config twin, so a scripted Flower run
    # starts from the same round-1 model every time (its README figures repeat); the default
    # stays a fresh random salt (attack a23).
    from typing import Any, cast

    from fedtrail.flower.server_app import initial_salt
    from fedtrail.protocol.terms import seeded_salt

    none = cast(Any, None)  # seeded and given salts read neither the ledger nor the store
    base = {"deployment": "d.json", "aggregator-keystore": "k.json"}
    assert ServerConfig.from_run_config(base).initial_salt == "random"
    seeded = ServerConfig.from_run_config(base | {"initial-salt": "seeded", "seed": 3})
    assert initial_salt(seeded, none, none) == seeded_salt(3) != seeded_salt(0)
    given = "ab" * 32
    cfg = ServerConfig.from_run_config(base | {"initial-salt": given})
    assert initial_salt(cfg, none, none) == given
    with pytest.raises(ConfigError, match="initial-salt"):
        ServerConfig.from_run_config(base | {"initial-salt": "AB" * 32})
    with pytest.raises(ConfigError, match="initial-salt"):
        ServerConfig.from_run_config(base | {"initial-salt": "sometimes"})
