"""Kernel notice of changes to the manifests folder (Linux inotify), so an unchanged listing costs one read.

``ModelStore.listing`` keeps the library's listing while the tree it came from is
unchanged. Comparing a stat of every folder and tag file finds any change, but
costs a system call per entry on every ``/api/tags``, and each call gives up the
GIL: on a busy worker the event loop then waits for it again behind other
threads, once per call. With a ``TreeWatch`` the kernel queues an event for any
entry created, removed, renamed or written in a watched folder while the
writing call runs, so one non-blocking ``read`` of the inotify descriptor, made
with the GIL held (``ctypes.PyDLL``), says whether anything changed since the
last look: a change made behind the server's back is listed by the next request,
as with the stats.

inotify says nothing of changes another host makes to a network filesystem,
and its queue can overflow: the listing is still compared by stats at least
every ``RECHECK_S`` seconds, and after an overflow (a read that returns events
always means "changed"). Where inotify is missing (not Linux) or refused (the
per-user instance or watch limits), ``TreeWatch.open`` returns None and the
listing compares stats every time, as before.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import weakref
from collections.abc import Iterable

__all__ = ["RECHECK_S", "TreeWatch"]

log = logging.getLogger(__name__)

RECHECK_S = 1.0  # a listing is compared by stats at least this often, whatever inotify says

# <sys/inotify.h>
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x002, 0x004, 0x008
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x040, 0x080, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_ONLYDIR = 0x400, 0x800, 0x01000000
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_MASK = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
         | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR)
_BUF = 4096


def _libc() -> tuple[ctypes.CDLL, ctypes.PyDLL] | None:
    """libc twice: to set watches (the GIL released, as usual), and to read without releasing it."""
    try:
        released = ctypes.CDLL(None, use_errno=True)
        held = ctypes.PyDLL(None, use_errno=True)
        init, add, read = released.inotify_init1, released.inotify_add_watch, held.read
    except (OSError, AttributeError):
        return None
    init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
    add.argtypes, add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
    read.argtypes, read.restype = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t], ctypes.c_ssize_t
    return released, held


class TreeWatch:
    """One inotify instance watching a set of folders; ``changed`` drains its events."""

    def __init__(self, fd: int, libs: tuple[ctypes.CDLL, ctypes.PyDLL]) -> None:
        self._fd = fd
        self._add, self._read = libs[0].inotify_add_watch, libs[1].read
        self._buf = ctypes.create_string_buffer(_BUF)
        self._watched: set[str] = set()
        self.broken = False  # a watch could not be set or a read failed: changes may go unseen
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def open(cls) -> TreeWatch | None:
        """A new watch, or None where inotify is not available (the caller compares stats instead)."""
        libs = _libc()
        if libs is None:
            return None
        fd = libs[0].inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            log.info("inotify unavailable, the listing is checked by stats errno=%d", ctypes.get_errno())
            return None
        return cls(fd, libs)

    def watch(self, folders: Iterable[str]) -> list[str]:
        """Watch each folder not yet watched; return those newly watched (a folder that is gone is skipped)."""
        added = []
        for folder in folders:
            if folder in self._watched:
                continue
            if self._add(self._fd, os.fsencode(folder), _MASK) < 0:
                err = ctypes.get_errno()
                if err not in (errno.ENOENT, errno.ENOTDIR):  # ENOSPC: the watch limit; changes there go unseen
                    log.info("inotify watch refused, the listing is checked by stats path=%s errno=%d", folder, err)
                    self.broken = True
                continue
            self._watched.add(folder)
            added.append(folder)
        return added

    def watching(self, folder: str) -> bool:
        return folder in self._watched

    def forget(self) -> None:
        """Folders may have been removed and made again (a new inode): set every watch afresh next time."""
        self._watched.clear()

    def changed(self) -> bool:
        """Whether any event arrived since the last call (and drain them); True when the watch cannot tell."""
        seen = False
        while True:
            n = self._read(self._fd, self._buf, _BUF)
            if n > 0:
                seen = True
                continue
            if n < 0 and ctypes.get_errno() in (errno.EAGAIN, errno.EWOULDBLOCK):
                return seen or self.broken
            if n < 0 and ctypes.get_errno() == errno.EINTR:
                continue
            self.broken = True
            return True

    def close(self) -> None:
        self._closer()
