"""The node's config file: it round-trips, and it carries no simulation settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.errors import ConfigError
from fedtrail.node.config import (
    DataConfig,
    NodeConfig,
    PrivacyConfig,
    dump_node_config,
    load_node_config,
    write_node_config,
)
from fedtrail.storage.codec import Compression
from fedtrail.valuation.limits import LoosestLimits, ThresholdLimits


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


def _load_with(tmp_path: Path, section: str, line: str) -> None:
    """Loads a written config whose ``line`` (``key = value``) replaces that key in
    ``[section]``, or is added there when the dump leaves the key out."""
    key = line.split(" = ")[0]
    text = dump_node_config(NodeConfig(name="h")).splitlines()
    start = text.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("[")), len(text))
    edited = [
        line if start < i < end and ln.startswith(f"{key} = ") else ln for i, ln in enumerate(text)
    ]
    if edited == text:
        edited.insert(start + 1, line)
    path = tmp_path / "config.toml"
    path.write_text("\n".join(edited) + "\n", encoding="utf-8")
    load_node_config(path)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("poll_interval = nan", "poll_interval"),  # polled the chain without pause
        ("poll_interval = inf", "poll_interval"),  # OverflowError in the daemon's wait
        ("poll_interval = 1e9", "poll_interval"),
        ("poll_interval = true", "poll_interval"),
        ("rpc_url = 5", "node.rpc_url must be a string"),  # AttributeError traceback
        ("store = 5", "node.store must be a string"),
        ("keystore = [1]", "node.keystore must be a string"),
        ("name = 5", "node.name must be a string"),
        ('name = ""', "node.name '' must be a non-empty printable string"),
        ('name = "x\\u001b[2J"', "must be a non-empty printable string"),
        ("contract = 7", "node.contract must be a string"),
    ],
)
def test_a_node_setting_of_the_wrong_type_or_range_is_a_config_error(
    tmp_path: Path, line: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _load_with(tmp_path, "node", line)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("shard_index = true", "data.shard_index must be an integer"),  # read as shard 1
        ("shard_count = 2.0", "data.shard_count must be an integer"),
        ("partition_seed = false", "data.partition_seed must be an integer"),
        ("path = 3", "data.path must be a string"),
    ],
)
def test_a_data_setting_of_the_wrong_type_is_a_config_error(
    tmp_path: Path, line: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _load_with(tmp_path, "data", line)


def test_a_config_is_written_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """node init rewrote config.toml in place: a crash mid-write left a torn file. A failed
    write now leaves the old config as it was, and no temporary file behind."""
    path = tmp_path / "config.toml"
    write_node_config(path, NodeConfig(name="old"))
    before = path.read_bytes()

    def torn(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", torn)
    with pytest.raises(OSError, match="disk full"):
        write_node_config(path, NodeConfig(name="new"))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_dp_training_with_compression_needs_terms_without_the_noise_check(
    tmp_path: Path,
) -> None:
    """A topk8 DP update stays private (it is computed from the DP-noised deltas alone) but
    carries no noise anyone can check, so aggregators score it 0 under ``dp_noise_check`` 1:
    the node refuses the pair unless its ``[accept.loosest] dp_noise_check`` is 0 (it joins
    only terms that waive the check), and then the config is accepted and round-trips."""
    private = PrivacyConfig(enabled=True, noise_multiplier=1.0)
    topk8 = Compression(method="topk8")
    assert NodeConfig(privacy=private).compression.method == "none"
    with pytest.raises(ConfigError, match=r"\[accept.loosest\] dp_noise_check = 0.*score it 0"):
        NodeConfig(privacy=private, compression=topk8)
    assert NodeConfig(compression=topk8).privacy.enabled is False
    waived = ThresholdLimits(loosest=LoosestLimits(dp_noise_check=0))
    config = NodeConfig(name="h", privacy=private, compression=topk8, accept=waived)
    assert (config.privacy.enabled, config.compression.method) == (True, "topk8")
    write_node_config(tmp_path / "config.toml", config)
    assert load_node_config(tmp_path / "config.toml") == config
    # the same file with the loosest limit back at 1 is refused on load
    text = (tmp_path / "config.toml").read_text(encoding="utf-8")
    assert "dp_noise_check = 0" in text
    (tmp_path / "config.toml").write_text(
        text.replace("dp_noise_check = 0", "dp_noise_check = 1"), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="dp_noise_check = 0"):
        load_node_config(tmp_path / "config.toml")


def test_a_topk8_fraction_below_the_least_is_refused_on_load(tmp_path: Path) -> None:
    """A node refuses ``topk8`` below ``TOPK8_MIN_FRACTION`` (1e-2): at about one entry a
    tensor (2e-5) honest updates were marked DUPLICATE of others by the sparse duplicate tests
    (``scripts/bench/either_order.py --fraction 0.00002``), and at 1e-3 to 2e-3 the block-noise
    test scored honest updates under its threshold. 1e-2 itself, and the default, are accepted;
    a config file with a smaller fraction is refused on load, naming the setting."""
    assert NodeConfig(compression=Compression(method="topk8", fraction=1e-2)).compression
    assert NodeConfig(compression=Compression(method="topk8")).compression.fraction == 0.05
    for low in (2e-5, 1e-3, 9.99e-3):
        with pytest.raises(ConfigError, match=r"\[compression\] fraction .* below 0.01"):
            NodeConfig(compression=Compression(method="topk8", fraction=low))
    write_node_config(tmp_path / "config.toml", NodeConfig(compression=Compression(method="topk8")))
    text = (tmp_path / "config.toml").read_text(encoding="utf-8")
    assert "fraction = 0.05" in text
    (tmp_path / "config.toml").write_text(
        text.replace("fraction = 0.05", "fraction = 0.0001"), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"below 0\.01"):
        load_node_config(tmp_path / "config.toml")


def test_a_config_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A config.toml saved in Latin-1 (an accented hospital name typed in an old editor) ended
    `node status`, `node run` and `explain --personal` with a UnicodeDecodeError traceback,
    exit 1; `audit verify --accept FILE` too. Now one ConfigError line, exit 2."""
    from click.testing import CliRunner

    from fedtrail.cli import EXIT_USAGE, cli

    folder = tmp_path / "node"
    folder.mkdir()
    path = folder / "config.toml"
    write_node_config(path, NodeConfig(name="x", contract="0x" + "ab" * 20))
    text = path.read_text(encoding="utf-8").replace('name = "x"', 'name = "Sté. Marie"')
    path.write_bytes(text.encode("latin-1"))
    at = text.encode("utf-8").index("é".encode())
    said = f"error: {path} is not valid TOML: not UTF-8 text (byte {at} is 0xe9)"
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_node_config(path)
    for args in (
        ["node", "status", str(folder)],
        ["node", "run", str(folder), "--once"],
        ["audit", "verify", "--accept", str(path), "--contract", "0x" + "ab" * 20],
    ):
        result = CliRunner().invoke(cli, args, env={"FEDTRAIL_PASSPHRASE": "p"})
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert result.stderr.strip().splitlines() == [said], args
