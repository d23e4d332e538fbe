"""The gunicorn worker of a3s-power: gthread, plus deadlines for slow clients and a graceful shutdown.

gthread hands a connection to a thread once its first byte arrives; from then
on a client that sends its headers one byte a second, or trickles its body,
would hold that thread for as long as it likes. ``GuardedSocket`` sits under
the request parser and gives every ``recv`` a timeout computed from a
deadline (P6):

- request line and headers: ``header_timeout`` seconds from their first byte,
  else ``408`` and the connection is closed;
- body: after ``body_grace`` seconds it must average ``body_min_rate`` bytes a
  second, else ``RequestTimeout`` (408 from the app) and the connection closes.

SIGTERM (P8) stops accepting (gthread does that) and asks the scheduler to let
streams finish for ``shutdown_timeout`` seconds, then end the rest with an
error line and stop every runner, so the worker exits within gunicorn's
``graceful_timeout`` and nothing is killed mid-write.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from gunicorn.http.errors import NoMoreData  # type: ignore[import-untyped]
from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

from power.config import Settings, load_settings
from power.errors import RequestTimeout

__all__ = ["GuardedSocket", "PowerWorker", "ReceiveGuard", "shut_down"]

log = logging.getLogger(__name__)

_408_BODY = b'{"error":"request header not received in time"}'
_408 = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_408_BODY), _408_BODY))


def shut_down(sock: socket.socket, linger: float = 0.5) -> None:
    """End a slow client's connection from this thread: FIN, a short drain so it reads our answer, then shut.

    gunicorn's own graceful close lingers up to 2s in its main thread, which a
    client still trickling bytes would turn into a stall for everyone.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        end = time.monotonic() + linger
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.settimeout(None)
    except OSError:
        pass


class ReceiveGuard:
    """The deadline of whatever the parser is reading now: headers, body, or the drain after a response."""

    def __init__(self, header_timeout: float, body_min_rate: int, body_grace: float) -> None:
        self.header_timeout = header_timeout
        self.body_min_rate = body_min_rate
        self.body_grace = body_grace
        self.phase = "head"
        self.started: float | None = None
        self.received = 0
        self.timed_out = False

    def head(self) -> None:
        """A new request begins: its headers' clock starts with their first ``recv``."""
        self.phase, self.started, self.received, self.timed_out = "head", None, 0, False

    def body(self) -> None:
        self.phase, self.started, self.received = "body", time.monotonic(), 0

    def drain(self) -> None:
        self.phase = "drain"

    def remaining(self) -> float | None:
        """Seconds the next ``recv`` may wait; None for no limit."""
        now = time.monotonic()
        if self.started is None:
            self.started = now
        if self.phase == "head":
            return self.started + self.header_timeout - now if self.header_timeout > 0 else None
        if self.body_min_rate <= 0:
            return None
        return self.started + self.body_grace + self.received / self.body_min_rate - now


class GuardedSocket:
    """The socket as the request parser sees it: ``recv`` with the guard's deadline."""

    def __init__(self, sock: socket.socket, guard: ReceiveGuard) -> None:
        self._sock = sock
        self.guard = guard

    def recv(self, size: int) -> bytes:
        left = self.guard.remaining()
        if left is None:
            return self._sock.recv(size)
        try:
            if left <= 0:
                raise TimeoutError
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(size)
            finally:
                self._sock.settimeout(None)
        except TimeoutError:
            return self._expired()
        self.guard.received += len(data)
        return data

    def _expired(self) -> bytes:
        g = self.guard
        g.timed_out = True
        if g.phase == "head":
            log.info("client too slow sending headers, closing phase=head timeout_s=%g", g.header_timeout)
            try:
                self._sock.sendall(_408)
            except OSError:
                pass
            shut_down(self._sock)
            raise NoMoreData(b"")
        if g.phase == "body":
            log.info("client too slow sending the body, closing received=%d", g.received)
            raise RequestTimeout(f"request body not received in time (at least {g.body_min_rate} bytes/s "
                                 f"after {g.body_grace:g}s)")
        raise NoMoreData(b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PowerWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with receive deadlines and a scheduler-aware SIGTERM."""

    def init_process(self) -> None:
        self.limits: Settings = load_settings()
        self._closer: threading.Thread | None = None
        super().init_process()

    def run(self) -> None:
        super().run()
        if self._closer is not None:  # runners end before the worker does
            self._closer.join(self.limits.shutdown_timeout + 20)

    def handle(self, conn: Any) -> Any:
        guard: ReceiveGuard | None = getattr(conn, "power_guard", None)
        if guard is None:
            s = self.limits
            guard = ReceiveGuard(s.header_timeout, s.body_min_rate, s.body_grace)
            conn.power_guard = guard
            init = conn.init

            def guarded_init() -> None:
                init()
                unreader = getattr(conn.parser, "unreader", None)
                if unreader is not None and not conn.is_http2 and not isinstance(unreader.sock, GuardedSocket):
                    unreader.sock = GuardedSocket(unreader.sock, guard)

            conn.init = guarded_init
        guard.head()
        return super().handle(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        guard: ReceiveGuard | None = getattr(conn, "power_guard", None)
        if guard is None:
            return super().handle_request(req, conn)
        guard.body()
        keep = super().handle_request(req, conn)
        guard.drain()
        if guard.timed_out:
            shut_down(conn.sock)
            return False
        return keep

    def handle_exit(self, sig: Any, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._begin_shutdown()

    def is_parent_alive(self) -> bool:
        alive = bool(super().is_parent_alive())
        if not alive:  # the master is gone (SIGKILL): shut down as for SIGTERM
            self._begin_shutdown()
        return alive

    def _begin_shutdown(self) -> None:
        if self._closer is None:
            self._closer = threading.Thread(target=self._close_scheduler, name="power-shutdown", daemon=True)
            self._closer.start()

    def _close_scheduler(self) -> None:
        from power.server import app as app_module

        scheduler: Any = app_module._SCHEDULER
        if scheduler is None:
            return
        deadline = max(0.0, min(self.limits.shutdown_timeout, self.cfg.graceful_timeout - 3))
        log.info("shutting down: letting streams finish deadline_s=%g", deadline)
        try:
            scheduler.close(deadline=deadline)
        except Exception:  # the process is going away; say so and go on
            log.exception("scheduler close failed")
