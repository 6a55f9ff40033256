"""Crash-safe file writes (a reader sees the old file or the new one, never a torn one) and
one daemon per folder."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedtrail.errors import FolderLocked


def atomic_write(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Writes ``data`` to a temporary file beside ``path``, fsyncs it, and renames it over.

    ``durable=False`` leaves out the fsync (~1-5 ms, and a journal commit, each): for a write
    whose loss the writer redoes from elsewhere (the chain, the store). A process killed at any
    point (kill -9) still leaves the old file or the new one, since the kernel holds the written
    pages; only an operating-system crash or a power cut before the kernel writes them back
    (seconds) can lose the write, and on a filesystem that does not order a rename after the
    data it replaces (ext4 does, by default) leave the file empty.

    A symbolic link at ``path`` is replaced by the new file, never followed: the file it points
    at is left as it was (a link planted in a shared output folder cannot redirect the write).
    The temporary file has a fresh random name, created exclusively, so no link planted beside
    ``path`` is followed either. A linked folder in ``path`` is followed, as any path is."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
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
