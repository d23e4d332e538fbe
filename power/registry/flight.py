"""Single flight per blob across threads and processes: an exclusive ``flock`` on a lock file.

``flock`` locks belong to an open file description, so two threads of one
process that each open the file exclude each other just as two processes do,
and the kernel drops the lock of a process killed with SIGKILL. The holder
unlinks the file before unlocking; a waiter that then gets the lock notices its
file is gone (the inode differs from the path's) and tries again on a new one.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from power.errors import Canceled
from power.store.atomic import os_error

__all__ = ["FlightLock"]

log = logging.getLogger(__name__)


class FlightLock:
    """An exclusive lock on ``path``; ``acquire`` polls so a waiter can report progress or give up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; return whether we hold it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise os_error(exc, "lock download") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise os_error(exc, "lock download") from exc
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # the holder finished and removed it: lock the new file

    def acquire(self, cancel: threading.Event | None = None, on_wait: Callable[[], None] | None = None,
                interval: float = 0.1) -> bool:
        """Block until the lock is ours; return whether we had to wait for another holder."""
        waited = False
        while not self.try_acquire():
            if not waited:
                log.info("waiting for another download of the same blob lock=%s", self.path.name)
            waited = True
            if cancel is not None and cancel.is_set():
                raise Canceled()
            if on_wait is not None:
                on_wait()
            time.sleep(interval)
        return waited

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
