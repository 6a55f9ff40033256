"""Crash-safe file writes (a reader sees the old file or the new one, never a torn one), one
daemon per folder, and the one reader of the TOML files an operator edits."""

from __future__ import annotations

import codecs
import fcntl
import os
import secrets
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedtrail.errors import ConfigError, FolderLocked


def atomic_write(path: str | os.PathLike[str], data: bytes, *, shared: bool = False) -> None:
    """Writes ``data`` to a temporary file beside ``path``, fsyncs it, and renames it over.

    A symbolic link at ``path`` is replaced by the new file, never followed: the file it points
    at is left as it was (a link planted in a shared output folder cannot redirect the write).
    The temporary file has a fresh random name, created exclusively, so no link planted beside
    ``path`` is followed either. A linked folder in ``path`` is followed, as any path is.

    The file is readable by its owner only (a node's state, a pending update, a residual, a
    validator's unrevealed scores), unless ``shared``: then it gets the mode any new file gets
    under the process's umask (``0o666 & ~umask``), for what is made to be handed on (a
    deployment file, an audit report, heatmaps, public blobs)."""
    target = Path(path)
    if shared:
        while True:
            tmp = str(target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
                break
            except FileExistsError:
                continue
    else:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def folder_lock(folder: Path, name: str, *, daemon: str, harm: str) -> Iterator[None]:
    """An exclusive lock on ``folder`` for one daemon's lifetime (``flock`` on ``folder/name``,
    released by the kernel when the process dies, so a killed daemon leaves no stale lock; the
    file is opened without following a link planted under its name). A second holder is
    refused with :class:`~fedtrail.errors.FolderLocked` naming the first's pid, the ``daemon``
    and the ``harm`` two would do."""
    path = folder / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise FolderLocked(f"cannot open the folder lock {path}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", errors="replace").strip() or "?"
            raise FolderLocked(
                f"another {daemon} (pid {holder}) is running on {folder}: {harm}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        yield
    finally:
        os.close(fd)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML document in ``path`` (a node's config.toml, an ``--accept`` file). A file that
    is not UTF-8 text or not TOML is a :class:`~fedtrail.errors.ConfigError` naming it (bytes
    that are not UTF-8 ended ``node status``, ``node run`` and ``audit verify --accept`` with
    a UnicodeDecodeError traceback); a missing file raises FileNotFoundError, which each
    caller words for its own file, and any other read error its OSError. A leading UTF-8 byte
    order mark (what Windows Notepad writes) is read past: it was refused as "not valid TOML"."""
    raw = Path(path).read_bytes()
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = bom + exc.start
        raise ConfigError(
            f"{path} is not valid TOML: not UTF-8 text (byte {at} is 0x{raw[at]:02x})"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
