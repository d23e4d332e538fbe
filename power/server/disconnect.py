"""Notice clients that go away while their request waits for a model, so the wait ends at once.

A running stream finds out that its client left when a write fails; a request
still queued for a sequence writes nothing, so nobody would notice, and the
runner would later spend a sequence on an answer nobody reads. While such a
request waits, its socket (``gunicorn.socket`` in the WSGI environ) is
watched here by one thread and one selector for all requests: end of stream
or a reset means the client is gone, and the request's ``on_gone`` runs
(cancelling it in the scheduler). Bytes from a client that pipelines its next
request end the watch without a verdict.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ClientSocket", "DisconnectWatcher", "current_client", "watcher"]

log = logging.getLogger(__name__)


class DisconnectWatcher:
    """One selector thread watching the sockets of waiting requests for their client's departure."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None

    def watch(self, sock: Any, on_gone: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_gone`` (in the watcher's thread) if ``sock``'s peer closes; returns the way to stop."""
        try:
            fd = sock.fileno()
        except (OSError, ValueError):
            return _nothing
        if fd < 0:
            return _nothing
        with self._lock:
            try:
                self._sel.register(fd, selectors.EVENT_READ, (sock, on_gone))
            except (KeyError, ValueError, OSError):  # already watched or closed
                return _nothing
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="power-disconnect", daemon=True)
                self._thread.start()
        self._wake()
        return lambda: self._forget(fd, sock)

    def _forget(self, fd: int, sock: Any) -> None:
        with self._lock:
            key = self._sel.get_map().get(fd)
            if key is not None and key.data is not None and key.data[0] is sock:
                self._sel.unregister(fd)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # the buffer is full: the thread is awake already
            pass

    def _run(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                    continue
                sock, on_gone = key.data
                gone = _peer_closed(sock)
                if gone is None:
                    continue
                with self._lock:
                    if self._sel.get_map().get(key.fd) is key:
                        self._sel.unregister(key.fd)
                    else:
                        continue  # stopped meanwhile
                if gone:
                    try:
                        on_gone()
                    except Exception:  # a failing callback must not stop the watch of others
                        log.exception("disconnect callback failed")


def _peer_closed(sock: Any) -> bool | None:
    """True: the peer closed or reset; False: it sent data (stop watching); None: nothing to read yet."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except ValueError:  # a TLS socket cannot peek: no verdict
        return False
    except OSError:
        return True
    return not data


def _nothing() -> None:
    return None


_CURRENT = threading.local()


def current_client() -> Any:
    """The socket of the request this thread is serving (None outside gunicorn, e.g. in falcon's TestClient)."""
    return getattr(_CURRENT, "sock", None)


class ClientSocket:
    """Falcon middleware: remember the request's socket for ``current_client`` (one request per thread in WSGI)."""

    def process_request(self, req: Any, resp: Any) -> None:
        _CURRENT.sock = req.env.get("gunicorn.socket")

    def process_response(self, req: Any, resp: Any, resource: Any, req_succeeded: bool) -> None:
        _CURRENT.sock = None


_WATCHER: DisconnectWatcher | None = None
_WATCHER_LOCK = threading.Lock()


def watcher() -> DisconnectWatcher:
    """The process's watcher, started on first use."""
    global _WATCHER
    with _WATCHER_LOCK:
        if _WATCHER is None:
            _WATCHER = DisconnectWatcher()
        return _WATCHER
