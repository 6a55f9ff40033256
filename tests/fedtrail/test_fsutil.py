"""``atomic_write`` and links: a symbolic link at the target is replaced, not followed (the file
it points at keeps its bytes), whether it points at a file, at nothing or at a folder; a linked
parent folder is followed; a failed write leaves neither the target nor a temporary file."""

from __future__ import annotations

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
