"""``atomic_write`` and links: a symbolic link at the target is replaced, not followed (the file
it points at keeps its bytes), whether it points at a file, at nothing or at a folder; a linked
parent folder is followed; a failed write leaves neither the target nor a temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedtrail.fsutil import atomic_write


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.json"
    victim.write_bytes(b"keep me")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "valuation-1.json"
    target.symlink_to(victim)
    atomic_write(target, b'{"round": 1}')
    assert victim.read_bytes() == b"keep me"
    assert not target.is_symlink() and target.read_bytes() == b'{"round": 1}'
    assert [p.name for p in out.iterdir()] == ["valuation-1.json"]  # no temporary file left


@pytest.mark.parametrize("points_at", ["nothing", "a folder"])
def test_a_dangling_or_folder_link_at_the_target_is_replaced(
    tmp_path: Path, points_at: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    if points_at == "a folder":
        elsewhere.mkdir()
    target = tmp_path / "artifact.bin"
    target.symlink_to(elsewhere)
    atomic_write(target, b"new")
    assert not target.is_symlink() and target.read_bytes() == b"new"
    assert elsewhere.is_dir() == (points_at == "a folder")
    assert not elsewhere.exists() or list(elsewhere.iterdir()) == []


def test_a_linked_parent_folder_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    atomic_write(tmp_path / "linked" / "config.toml", b"x = 1\n")
    assert (real / "config.toml").read_bytes() == b"x = 1\n"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("fedtrail.fsutil.os.replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_private_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        atomic_write(tmp_path / "state.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_shared_files_take_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """A deployment file or an audit report is made to be handed on: readable as any new file
    under the operator's umask (it came out 0600 before, unreadable by a web server)."""
    (tmp_path / "index.html").write_bytes(b"old")
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "index.html", b"<html>", shared=True)
    finally:
        os.umask(old)
    assert (tmp_path / "index.html").read_bytes() == b"<html>"
    assert stat.S_IMODE((tmp_path / "index.html").stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]  # no temporary left


def test_shared_write_replaces_a_planted_link_without_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "deployment.json").symlink_to(victim)
    atomic_write(tmp_path / "deployment.json", b"new", shared=True)
    assert victim.read_bytes() == b"keep"
    assert not (tmp_path / "deployment.json").is_symlink()
    assert (tmp_path / "deployment.json").read_bytes() == b"new"


def test_read_toml_words_bytes_that_are_not_utf8_or_not_toml(tmp_path: Path) -> None:
    from fedtrail.errors import ConfigError
    from fedtrail.fsutil import read_toml

    good = tmp_path / "good.toml"
    good.write_text('[node]\nname = "Sté. Marie"\n', encoding="utf-8")
    assert read_toml(good) == {"node": {"name": "Sté. Marie"}}
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('[node]\nname = "Sté. Marie"\n'.encode("latin-1"))  # byte 17 is 0xe9
    with pytest.raises(ConfigError) as caught:
        read_toml(latin)
    assert str(caught.value) == f"{latin} is not valid TOML: not UTF-8 text (byte 17 is 0xe9)"
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{broken} is not valid TOML: Expected"):
        read_toml(broken)
    with pytest.raises(FileNotFoundError):  # each caller words its own missing file
        read_toml(tmp_path / "missing.toml")


def test_read_toml_reads_past_a_utf8_byte_order_mark(tmp_path: Path) -> None:
    """A config.toml saved by an editor that writes a BOM (Notepad) was refused as 'not valid
    TOML'. Read as the same document; only a leading BOM is skipped, and a byte that is not
    UTF-8 after it is still named at its offset in the file."""
    from fedtrail.errors import ConfigError
    from fedtrail.fsutil import read_toml

    text = '[node]\nname = "Sté. Marie"\n'
    bom = tmp_path / "bom.toml"
    bom.write_text(text, encoding="utf-8-sig")
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_toml(bom) == {"node": {"name": "Sté. Marie"}}
    latin = tmp_path / "bom-latin1.toml"
    latin.write_bytes(b"\xef\xbb\xbf" + text.encode("latin-1"))  # byte 3 + 17 is 0xe9
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 20 is 0xe9\)"):
        read_toml(latin)
    twice = tmp_path / "two-boms.toml"
    twice.write_bytes(b"\xef\xbb\xbf" * 2 + text.encode())
    with pytest.raises(ConfigError, match="is not valid TOML"):
        read_toml(twice)
