"""Crash-safe file replacement: temporary file, fsync, rename, fsync the folder."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import time
from pathlib import Path

from power.errors import StoreError, StoreFull

__all__ = ["TMP_PREFIX", "WRITER_PREFIX", "atomic_write_bytes", "fsync_dir", "os_error", "remove_dead_temps",
           "writer_temp"]

# Temporary files start with this so prune can tell them from Ollama's own
# "-partial" download files, which it must leave for resume.
TMP_PREFIX = ".a3s-tmp-"
# Temporary files whose writer holds an flock on them while it lives: one that
# can be locked belongs to a writer that died (kill -9), and can go at once.
WRITER_PREFIX = TMP_PREFIX + "w-"


def writer_temp(folder: Path) -> tuple[int, Path, int]:
    """Create a locked temporary file in ``folder``: (write fd, path, lock fd); close the lock fd when done."""
    fd, name = tempfile.mkstemp(prefix=WRITER_PREFIX, dir=folder)
    try:
        lock = os.open(name, os.O_RDONLY)
    except OSError:
        os.close(fd)
        raise
    fcntl.flock(lock, fcntl.LOCK_EX)
    return fd, Path(name), lock


def _dead_writer(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_dead_temps(folder: Path, max_age: float = 3600.0) -> int:
    """Remove temporary files of writers that died, and other temporary files older than ``max_age``."""
    removed = 0
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX):
            continue
        try:
            if entry.name.startswith(WRITER_PREFIX) and _dead_writer(entry.path) or \
                    entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def os_error(exc: OSError, what: str) -> StoreError:
    """Translate an OSError into a StoreError with a short reason."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"{what}: no space left on device")
    return StoreError(f"{what}: {exc.strerror or exc}")


def fsync_dir(path: Path) -> None:
    """Persist a rename by syncing its folder (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old file or the new one, never half."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp, lock = writer_temp(folder)
    except OSError as exc:
        raise os_error(exc, f"write {path.name}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quiet(tmp)
        raise os_error(exc, f"write {path.name}") from exc
    finally:
        os.close(lock)
    fsync_dir(folder)


def _unlink_quiet(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
