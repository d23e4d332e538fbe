"""The worker's event loop polls, reads and writes without giving up the GIL when nothing can block.

Every system call CPython makes for a socket or a selector releases the GIL and
takes it back after. On a quiet worker that costs nothing; while a burst of
request threads is runnable, taking it back means waiting for a switch interval
behind each of them (Python's GIL is not first come, first served), and the
event loop makes several such calls per answer: a ``/api/tags`` that costs 60 us
of work took tens of milliseconds. A non-blocking ``recv`` or ``send`` and an
``epoll_wait`` with a zero timeout cannot block, so here they are made through
``ctypes.PyDLL``, which keeps the GIL across the call; only a poll that finds
nothing ready waits with the GIL released, as before.

Linux only (the worker's poller is ``EpollSelector`` there); elsewhere ``HeldIO.open``
returns None and the worker uses the socket methods.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import select
import selectors
import socket
import sys
from typing import Any

__all__ = ["HeldEpollSelector", "HeldIO"]

_MSG_DONTWAIT, _MSG_NOSIGNAL = 0x40, 0x4000
_BLOCKED = (errno.EAGAIN, errno.EWOULDBLOCK)


class _EpollEvent(ctypes.Structure):
    # <sys/epoll.h>: packed on x86-64 only
    _pack_ = 1 if platform.machine() in ("x86_64", "AMD64") else 0
    _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]


def _held_libc() -> Any:
    try:
        libc = ctypes.PyDLL(None, use_errno=True)
        send, recv, wait = libc.send, libc.recv, libc.epoll_wait
    except (OSError, AttributeError):
        return None
    send.argtypes, send.restype = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_ssize_t
    recv.argtypes, recv.restype = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_ssize_t
    wait.argtypes = [ctypes.c_int, ctypes.POINTER(_EpollEvent), ctypes.c_int, ctypes.c_int]
    wait.restype = ctypes.c_int
    return libc


_LIBC = _held_libc() if hasattr(select, "epoll") and sys.byteorder == "little" else None  # fd: the low word


class HeldIO:
    """``recv`` and ``send`` on non-blocking sockets, the GIL held; for the event loop's thread only."""

    def __init__(self, libc: Any, size: int = 65536) -> None:
        self._recv, self._send = libc.recv, libc.send
        self._buf = ctypes.create_string_buffer(size)
        self.size = size

    @classmethod
    def open(cls) -> HeldIO | None:
        return cls(_LIBC) if _LIBC is not None else None

    def recv(self, sock: socket.socket) -> bytes:
        """Up to ``size`` bytes; b"" at the end of the stream; ``BlockingIOError`` when none are there."""
        while True:
            n = self._recv(sock.fileno(), self._buf, self.size, _MSG_DONTWAIT)
            if n >= 0:
                return ctypes.string_at(self._buf, n)
            self._raise(ctypes.get_errno())

    def send(self, sock: socket.socket, data: bytes, start: int = 0) -> int:
        """Send ``data[start:]`` as far as the socket takes it; the count sent (``BlockingIOError``: none)."""
        base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
        while True:
            n = self._send(sock.fileno(), base + start, len(data) - start, _MSG_DONTWAIT | _MSG_NOSIGNAL)
            if n >= 0:
                return int(n)
            self._raise(ctypes.get_errno())

    @staticmethod
    def _raise(err: int) -> None:
        if err == errno.EINTR:
            return  # the caller tries again
        if err in _BLOCKED:
            raise BlockingIOError(err, os.strerror(err))
        raise OSError(err, os.strerror(err))


class HeldEpollSelector(selectors.EpollSelector):
    """``EpollSelector`` that first looks for ready events with the GIL held, and waits (released) only
    when there are none."""

    _MAX = 256

    def __init__(self) -> None:
        super().__init__()
        self._events = (_EpollEvent * self._MAX)()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if _LIBC is None:
            return super().select(timeout)
        n = _LIBC.epoll_wait(self._selector.fileno(), self._events, self._MAX, 0)  # type: ignore[attr-defined]
        if n <= 0:  # nothing ready (or EINTR): wait as usual, the GIL released
            return super().select(timeout)
        ready = []
        for ev in self._events[:n]:
            key = self._fd_to_key.get(ev.data & 0xFFFFFFFF)  # the fd the selector registered as its data
            if key is None:
                continue
            events = 0
            if ev.events & ~select.EPOLLIN:
                events |= selectors.EVENT_WRITE
            if ev.events & ~select.EPOLLOUT:
                events |= selectors.EVENT_READ
            ready.append((key, events & key.events))
        return ready


def held_selector() -> selectors.BaseSelector | None:
    """The event loop's poller where epoll can be polled with the GIL held, else None."""
    return HeldEpollSelector() if _LIBC is not None else None
