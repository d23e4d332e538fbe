"""The gunicorn worker of a3s-power: gthread, where waiting costs no thread, and a graceful shutdown.

gthread hands a connection to a thread as soon as it is accepted or readable;
a client that sends its headers one byte a second would hold that thread for
as long as it likes, and a few hundred of them would stop the server. Here the
event loop collects each request's head (and a small body) with non-blocking
reads first (``power.server.frontdoor.Arrival``), and only a whole request
takes a thread; control-plane routes get threads of their own
(``CONTROL_THREADS``), so no number of streams can delay ``/api/tags`` (P14).
The hottest of them are answered in the loop itself (``power.server.fastlane``),
whose polls, reads and writes keep the GIL (``power.server.heldio``): with a burst
of request threads runnable, each call that gives it up costs a wait behind them.
Larger bodies (blob uploads) are read by their thread through
``GuardedSocket``, which gives every ``recv`` a timeout computed from the same
deadlines (P6):

- request line and headers: ``header_timeout`` seconds from their first byte,
  else ``408`` and the connection is closed;
- body: after ``body_grace`` seconds it must average ``body_min_rate`` bytes a
  second, else ``RequestTimeout`` (408 from the app) and the connection closes.

SIGTERM (P8) asks the scheduler to let streams finish for ``shutdown_timeout``
seconds, then end the rest with an error line (``{"error": ...}`` in NDJSON, an
error event in SSE) and stop every runner, so the worker exits within
gunicorn's ``graceful_timeout`` and nothing is killed mid-write. Meanwhile the
worker keeps accepting (gthread alone would leave new connections unanswered
in the listen backlog until it exits): control-plane polls are answered, so
``/health`` says 503 "the server is shutting down", and every other request
gets ``503`` with ``Retry-After`` from the event loop before any work starts, so
a balancer (nginx's ``proxy_next_upstream http_503``) sends it to another
replica. Once the streams are over it stops accepting and exits. A ``kill -9``
leaves nothing to write an error line: those streams are cut.
"""

from __future__ import annotations

import errno
import logging
import resource
import selectors
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn import util as gunicorn_util  # type: ignore[import-untyped]
from gunicorn.http.errors import NoMoreData  # type: ignore[import-untyped]
from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

from power.config import Settings, load_settings
from power.errors import RequestTimeout, ShuttingDown
from power.server.errors import error_body
from power.server.fastlane import fast_lane_of
from power.server.frontdoor import HEAD_TIMEOUT_ANSWER, Arrival, error_response
from power.server.heldio import HeldIO, held_selector
from power.server.threads import ElasticPool, limit_arenas

__all__ = ["GuardedSocket", "KeptAlive", "PowerWorker", "ReceiveGuard", "shut_down", "CONTROL_THREADS"]

# Seconds a thread holds the GIL before another may take it (Python's default is 0.005).
SWITCH_INTERVAL = 0.0005
# Threads kept for control-plane routes (/api/tags, /api/ps, /health, ...), which no stream can take.
CONTROL_THREADS = 4
# What a request that arrives after SIGTERM is told (with 503 and Retry-After), as the scheduler says it.
STOPPING = str(ShuttingDown())
STOPPING_IDLE_S = 1.0  # how long a connection accepted while stopping may take to send its request
# glibc malloc arenas the worker's threads share (its default is eight per core).
MALLOC_ARENAS = 2

log = logging.getLogger(__name__)



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
                self._sock.sendall(HEAD_TIMEOUT_ANSWER)
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


def _on_conn(ref: weakref.ref[Any], method: Any, sock: Any) -> None:
    conn = ref()
    if conn is not None:
        method(conn, sock)


def _nonblocking(sock: socket.socket) -> None:
    if sock.getblocking():  # a syscall pair each time otherwise
        sock.setblocking(False)


def _json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own refusals (bad request line, 414, 431, ...) in Ollama's error shape instead of HTML."""
    gunicorn_util.write_nonblock(sock, error_response(status_int, reason, mesg or reason.lower()))


class KeptAlive:
    """gthread's deque of kept-alive connections (oldest first), with the ``remove`` it calls for every
    request on one of them in constant time instead of a scan past every idle connection."""

    def __init__(self) -> None:
        self._conns: dict[Any, None] = {}  # insertion order is timeout order: each gets now + keepalive

    def append(self, conn: Any) -> None:
        self._conns.pop(conn, None)
        self._conns[conn] = None

    def remove(self, conn: Any) -> None:
        del self._conns[conn]

    def discard(self, conn: Any) -> None:
        self._conns.pop(conn, None)

    def popleft(self) -> Any:
        conn = next(iter(self._conns))
        del self._conns[conn]
        return conn

    def __getitem__(self, index: int) -> Any:
        if index != 0:
            raise IndexError("only the oldest connection is looked at")
        return next(iter(self._conns))

    def __len__(self) -> int:
        return len(self._conns)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._conns))


def _raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit want=%d error=%s", target, exc)


class PowerWorker(ThreadWorker):  # type: ignore[misc]
    """gthread where only whole requests take threads, with receive deadlines and a scheduler-aware SIGTERM."""

    def init_process(self) -> None:
        self.limits: Settings = load_settings()
        self._closer: threading.Thread | None = None
        self._arrivals: dict[Any, Arrival] = {}  # connections whose request is still arriving
        self._lingering: dict[Any, float] = {}  # refused connections drained until then, then closed
        self._lane: Any = False  # the app's FastLane, looked up on first use (the app loads after this)
        self._notified = 0.0
        self.control_pool = futures.ThreadPoolExecutor(max_workers=CONTROL_THREADS,
                                                       thread_name_prefix="power-control")
        # /metrics waits a moment for busy runners' counters: on a thread of its own, never a request thread
        self.metrics_pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="power-metrics")
        self.metrics_pool.submit(int).result()  # its thread starts now, not in the middle of a load
        gunicorn_util.write_error = _json_error  # this process only serves a3s-power
        # The event loop answers polls and accepts connections; with many request threads runnable it waits
        # for the GIL up to a switch interval per thread ahead of it, so threads hand it over more often.
        sys.setswitchinterval(SWITCH_INTERVAL)
        _raise_fd_limit(self.cfg.worker_connections + 256)
        limit_arenas(MALLOC_ARENAS)  # memory returns after a burst of threads (power/server/threads.py)
        self.keepalived_conns = KeptAlive()
        self._io = None if self.cfg.is_ssl else HeldIO.open()  # the loop's socket calls (power/server/heldio.py)
        self._tls = bool(self.cfg.is_ssl)  # read once: each read of a setting is a lookup chain
        self._idle_s = self.cfg.keepalive or 5
        super().init_process()

    def notify(self) -> None:
        """Tell the arbiter we live at most once a second (gthread does it on every loop turn, a syscall)."""
        now = time.monotonic()
        if now - self._notified >= 1.0:
            self._notified = now
            super().notify()

    # ---- the poller: one registration per connection, pointed at what reads it next ---------------------
    def _watch(self, sock: Any, events: int, callback: Any) -> None:
        """Have ``callback`` hear ``events`` on ``sock``: no syscall when only the callback changes, no work
        at all when neither does (each connection keeps its callbacks, ``_callbacks``)."""
        try:
            key = self.poller.get_key(sock)
        except KeyError:
            self.poller.register(sock, events, callback)
            return
        if key.events != events or key.data is not callback:
            self.poller.modify(sock, events, callback)

    def _unwatch(self, sock: Any) -> None:
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass

    def _callbacks(self, conn: Any) -> tuple[Any, Any]:
        """``conn``'s poller callbacks: kept alive, and its request arriving (made once per connection)."""
        made = getattr(conn, "power_callbacks", None)
        if made is None:  # through a weak reference: conn -> callback -> conn would be a cycle per connection,
            ref = weakref.ref(conn)  # left for the cyclic GC after a load instead of freed as it closes
            made = conn.power_callbacks = (partial(_on_conn, ref, self.on_client_socket_readable),
                                           partial(_on_conn, ref, self._on_arrival_readable))
        return made

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection has bytes: read them now, as its arrival, without re-registering it."""
        self.keepalived_conns.discard(conn)
        if self._tls or getattr(conn, "is_http2", False):
            self._unwatch(client)
            return super().enqueue_req(conn)
        self._arrive(conn, read_now=True)

    def get_thread_pool(self) -> ElasticPool:
        """Request threads that end after ``thread_idle`` seconds without work (power/server/threads.py)."""
        return ElasticPool(self.cfg.threads, self.limits.thread_idle)

    # ---- requests arrive in the event loop ---------------------------------------------------------
    def enqueue_req(self, conn: Any) -> None:
        """Hand ``conn`` to a thread once its request is whole; until then read it from the event loop."""
        if self._tls or getattr(conn, "is_http2", False):
            self._unwatch(conn.sock)
            return super().enqueue_req(conn)
        self._arrive(conn, read_now=False)

    def _arrive(self, conn: Any, read_now: bool) -> None:
        """Collect ``conn``'s next request; ``read_now``: its socket is readable already."""
        arrival = Arrival(self._idle_s, self.limits.header_timeout, self.limits.body_min_rate,
                          self.limits.body_grace)
        if conn.parser is not None:  # read ahead by the last request on this connection
            arrival.add(conn.parser.unreader.take_buffered())
        if arrival.complete:
            return self._dispatch(conn, arrival)
        _nonblocking(conn.sock)
        self._arrivals[conn] = arrival
        if read_now and self._read(conn, arrival):
            return
        self._watch(conn.sock, selectors.EVENT_READ, self._callbacks(conn)[1])

    def _on_arrival_readable(self, conn: Any, _sock: Any) -> None:
        self._read(conn, self._arrivals[conn])

    def _read(self, conn: Any, arrival: Arrival) -> bool:
        """Read what ``conn`` has sent; True once its request is whole (and dispatched) or it went away."""
        while True:
            try:
                data = self._io.recv(conn.sock) if self._io is not None else conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                data = b""
            if not data:  # the client went away before its request was whole
                self._forget(conn)
                self._close(conn)
                return True
            arrival.add(data)
            if arrival.complete:
                self._forget(conn)
                self._dispatch(conn, arrival)
                return True

    def _forget(self, conn: Any) -> None:
        """``conn``'s request is no longer arriving; its socket stays registered for whatever comes next."""
        self._arrivals.pop(conn, None)

    def _close(self, conn: Any) -> None:
        self._unwatch(conn.sock)
        self.nr_conns -= 1
        conn.close()

    def _dispatch(self, conn: Any, arrival: Arrival) -> None:
        if not self.alive and not arrival.control:
            return self._refuse_stopping(conn, arrival)
        if arrival.control and self._answer_here(conn, arrival):
            return
        self._to_thread(conn, arrival)

    def _to_thread(self, conn: Any, arrival: Arrival) -> None:
        self._unwatch(conn.sock)  # its thread reads and writes it
        conn.data_ready = True
        conn.power_prefix = bytes(arrival.buf)
        if conn.parser is not None:
            conn.parser.unreader.unread(conn.power_prefix)
            conn.power_prefix = b""
        pool = self.control_pool if arrival.control else self.tpool
        fs = pool.submit(self.handle, conn)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    # ---- the fast lane: answers built in the event loop (power/server/fastlane.py) --------------------
    def _answer_here(self, conn: Any, arrival: Arrival) -> bool:
        """Answer a plain poll of a hot read-only route from this loop; False to hand it to a thread."""
        if self._lane is False:
            self._lane = fast_lane_of(self.wsgi)
            if self._lane is not None:
                fields, size = self.cfg.limit_request_fields, self.cfg.limit_request_field_size
                self._lane.set_limits(fields if 0 < fields <= 32768 else 32768,  # as gunicorn reads them
                                      size if size > 0 else 8190)
        if self._lane is None or not self.alive or len(arrival.buf) != arrival.head_len:
            return False  # pipelined bytes or a body: the thread's parser reads them
        client = str(conn.client[0] if isinstance(conn.client, tuple) and conn.client else "")
        head = bytes(arrival.buf)
        if self._lane.threaded(head):  # /metrics that waits for the runners: its thread answers, this loop sends
            self._unwatch(conn.sock)
            self.metrics_pool.submit(self._answer_on_thread, conn, arrival, head, client)
            return True
        answer = self._lane.answer(head, client)
        if answer is None:
            return False
        self._send_answer(conn, answer)
        return True

    def _answer_on_thread(self, conn: Any, arrival: Arrival, head: bytes, client: str) -> None:
        """The metrics thread: build the answer (it may wait a moment for the runners), send it from the loop."""
        try:
            answer = self._lane.answer(head, client, wait=True)
        except Exception:  # the app answers it, with the error in its shape
            log.debug("fast metrics answer failed", exc_info=True)
            answer = None
        self.method_queue.defer(self._answered_on_thread, conn, arrival, answer)

    def _answered_on_thread(self, conn: Any, arrival: Arrival, answer: tuple[bytes, bool] | None) -> None:
        if answer is None:
            self._to_thread(conn, arrival)
        else:
            self._send_answer(conn, answer)

    def _send_answer(self, conn: Any, answer: tuple[bytes, bool]) -> None:
        self.nr += 1
        if self.max_requests and self.nr >= self.max_requests:
            self.alive = False  # gunicorn's max_requests restart, as its own handler does
        _nonblocking(conn.sock)
        self._send_rest(conn, answer[0], 0, answer[1])

    def _send_rest(self, conn: Any, data: bytes, sent: int, keep: bool, _sock: Any = None) -> None:
        io = self._io
        try:
            while sent < len(data):
                sent += io.send(conn.sock, data, sent) if io is not None else conn.sock.send(data[sent:])
        except (BlockingIOError, InterruptedError):
            self._watch(conn.sock, selectors.EVENT_WRITE, partial(self._send_rest, conn, data, sent, keep))
            return
        except OSError:
            self._close(conn)
            return
        if not keep or not self.alive:
            self._close(conn)
            return
        conn.set_timeout()  # kept alive exactly as gthread keeps a connection after a request
        self.keepalived_conns.append(conn)
        self._watch(conn.sock, selectors.EVENT_READ, self._callbacks(conn)[0])

    def finish_request(self, conn: Any, fs: Any) -> None:
        """A thread's request is done: as gthread, but a connection that closes is closed without blocking.

        gthread closes it gracefully in this loop (FIN, then a blocking ``recv`` of up to 2 s until the
        client closes its side): every stream that ends with ``Connection: close`` stalled every other
        connection until its client, busy with hundreds of others, got round to closing (up to a second
        each, measured). Here the same drain waits in the poller (``_linger``)."""
        try:
            closing = not fs.cancelled() and fs.exception() is None and not fs.result()
        except Exception:  # cancelled or failed: gthread's own handling
            closing = False
        if not closing or self._tls:
            return super().finish_request(conn, fs)
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return self._close(conn)
        self._linger(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn, arrival in list(self._arrivals.items()):
            # Stopping: an idle kept-alive connection is closed; one just accepted gets a moment to send.
            idle_while_stopping = (not self.alive and arrival.first_byte is None
                                   and now - arrival.opened > STOPPING_IDLE_S)
            if arrival.deadline() > now and not idle_while_stopping:
                continue
            self._forget(conn)
            answer = arrival.expiry_answer()
            if answer is None:
                self._close(conn)
                continue
            log.info("client too slow sending its request, closing received=%d", len(arrival.buf))
            self._refuse(conn, answer)
        for conn, until in list(self._lingering.items()):
            if until <= now:
                self._unlinger(conn)
        if not self.alive and not self._draining():
            super().set_accept_enabled(False)  # the streams are over: nothing more is taken

    # ---- SIGTERM: new requests are refused with 503 while the streams drain ------------------------------
    def _draining(self) -> bool:
        closer = self._closer
        return (not self.alive and closer is not None and closer.is_alive()
                and self.nr_conns < self.worker_connections)

    def set_accept_enabled(self, enabled: bool) -> None:
        """gthread stops accepting at SIGTERM; while the streams drain this worker goes on, to refuse with 503."""
        if enabled or not self._draining():
            super().set_accept_enabled(enabled)

    def _refuse_stopping(self, conn: Any, arrival: Arrival) -> None:
        path = arrival.path
        log.info("refusing a request while shutting down path=%s", path)
        self._refuse(conn, error_response(503, "Service Unavailable", "", error=error_body(path, 503, STOPPING),
                                          headers={"Retry-After": "1"}))

    def _refuse(self, conn: Any, answer: bytes) -> None:
        """Send a short final answer, end our side, and drain what the client still sends until it closes."""
        try:
            conn.sock.setblocking(False)
            conn.sock.send(answer)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                log.debug("refusal not sent error=%s", exc)
        self._linger(conn)

    def _linger(self, conn: Any) -> None:
        """Keep reading (and dropping) what a refused client still sends for a moment, so it reads our answer.

        Closing with unread bytes in the receive buffer sends a reset, which can destroy the answer
        before the client reads it; gunicorn's own graceful close does this drain in a blocking loop.
        """
        self._lingering[conn] = time.monotonic() + 1.0
        try:
            self._watch(conn.sock, selectors.EVENT_READ, partial(self._drain, conn))
        except (ValueError, OSError):
            self._unlinger(conn)

    def _drain(self, conn: Any, _sock: Any) -> None:
        try:
            while conn.sock.recv(65536):
                pass
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._unlinger(conn)  # end of stream: the client has closed its side

    def _unlinger(self, conn: Any) -> None:
        if self._lingering.pop(conn, None) is None:
            return
        self._close(conn)

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        if force:  # the worker is stopping: requests still arriving are dropped with it
            for conn in list(self._arrivals):
                self._forget(conn)
                self._close(conn)

    def run(self) -> None:
        held = held_selector()  # before gthread's run registers anything with its poller
        if held is not None:
            self.poller.close()
            self.poller = held
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
                prefix = getattr(conn, "power_prefix", b"")
                if unreader is not None and prefix:  # what the event loop read for this request
                    unreader.unread(prefix)
                    conn.power_prefix = b""

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
