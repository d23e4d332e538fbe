"""Crash-safe file replacement: temporary file, fsync, rename, fsync the folder."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from power.errors import StoreError

__all__ = ["TMP_PREFIX", "atomic_write_bytes", "fsync_dir", "os_error"]

# Temporary files start with this so prune can tell them from Ollama's own
# "-partial" download files, which it must leave for resume.
TMP_PREFIX = ".a3s-tmp-"


def os_error(exc: OSError, what: str) -> StoreError:
    """Translate an OSError into a StoreError with a short reason."""
    if exc.errno == errno.ENOSPC:
        return StoreError(f"{what}: no space left on device")
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
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
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
        _unlink_quiet(Path(tmp))
        raise os_error(exc, f"write {path.name}") from exc
    fsync_dir(folder)


def _unlink_quiet(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
