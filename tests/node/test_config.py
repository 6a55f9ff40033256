"""The node's config file: it round-trips, and it carries no simulation settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.errors import ConfigError
from fedtrail.node.config import (
    DataConfig,
    NodeConfig,
    dump_node_config,
    load_node_config,
    write_node_config,
)


def test_a_written_config_loads_back_unchanged(tmp_path: Path) -> None:
    config = NodeConfig(name="hospital-a", contract="0x" + "ab" * 20, data=DataConfig(path="x.npz"))
    write_node_config(tmp_path / "config.toml", config)
    assert load_node_config(tmp_path / "config.toml") == config
    assert "[fault]" not in dump_node_config(config)


def test_an_old_config_with_a_fault_section_is_refused_with_the_way_to_simulate(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        dump_node_config(NodeConfig(name="h")) + '\n[fault]\nkind = "sign_flip"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"\[fault\].*simulation-only.*fedtrail demo"):
        load_node_config(path)
