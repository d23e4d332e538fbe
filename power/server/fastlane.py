"""The hottest read-only routes answered in the worker's event loop, without a thread, a parser or Falcon.

Clients poll ``/api/tags`` (Open WebUI on every page, agents before every
conversation), ``/api/version`` and ``/``; dashboards and load balancers poll
``/api/ps`` and ``/health``, which must answer however many streams hold the
request threads. Through gunicorn's thread hand-off,
its parser and Falcon's middleware a listing costs about half a millisecond of
CPU, so 50 clients polling at once queue behind each other. For a plain request
to one of these routes the worker asks ``FastLane.answer`` instead, which
builds the same answer (the same body, status and headers, the same access-log
line and metrics) from the request head alone, in tens of microseconds, with the
app's own body builders over what never blocks: the store's listing (kept while
the kernel reports no change, ``power.store.watch``) and the scheduler's last
view (``power.runner.scheduler.SchedulerView``). A plain ``/metrics`` is answered
here too while the runners are busy, from their last counters; while they are
idle its scrape waits for their fresh ones, so the worker builds that answer on
a metrics thread of its own (``threaded``) and sends it from the loop. The
loop's access-log lines are written by a thread of their own (``QueuedLog``).

Anything out of the ordinary is declined (``None``) and takes the usual path,
which owns every refusal and every header that depends on the request: a query
string, a body, ``Origin`` (CORS), an API key to check, a ``Host`` that the
DNS-rebinding check refuses, ``Upgrade``, HTTP/1.0, oversized or repeated
headers, and a ``/health`` that is not ready (its 503). So what a client sees never
depends on which path answered.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from queue import SimpleQueue
from email.utils import formatdate
from typing import Any, Callable

from power.server.metrics import CONTENT_TYPE as METRICS_TYPE
from power.server.ollama.models import HEARTBEAT, TEXT, version_body
from power.server.security import (ACCESS_LINE, OPEN_ROUTES, SecurityMiddleware, access_logger, host_allowed,
                                   request_id)
from power.server.streaming import JSON, dumps

__all__ = ["FastLane", "fast_lane_of"]

_LINE = re.compile(rb"(GET|HEAD) (/[^ ?#]{0,63}) HTTP/1\.1\r?\n")
# Headers whose presence means the usual path must answer (or whose repetition makes the request ambiguous).
_DECLINE = frozenset({b"origin", b"transfer-encoding", b"expect", b"upgrade", b"authorization", b"x-api-key",
                      b"access-control-request-method"})
_SINGLE = frozenset({b"host", b"connection", b"x-request-id", b"content-length"})

Body = Callable[[], tuple[bytes, str] | None]  # None: the app answers (e.g. a 503)
Plan = tuple[str, str, Body, bool, "str | None"]  # method, route, its body, keep-alive, the client's request id
_PLANS = 256  # request heads remembered (clients poll with the same few)
_LOG_BACKLOG = 10_000  # access-log records the writer thread may be behind by
GET_ONLY = frozenset({"/api/ps", "/metrics"})  # the app answers HEAD of these
THREADED = frozenset({"/metrics"})  # answered on the worker's metrics thread, not in its event loop


class FastLane:
    """Whole HTTP/1.1 answers for ``GET``/``HEAD`` of ``FAST_ROUTES``, or None to let the app answer."""

    def __init__(self, security: SecurityMiddleware, record: Callable[[str, str, str, float], None], *,
                 tags_body: Callable[[], bytes], ps_body: Callable[[], Any],
                 health_body: Callable[[], dict[str, Any]], metrics_body: Callable[[bool], bytes] | None = None,
                 metrics_wait: Callable[[], bool] = lambda: True) -> None:
        """``*_body``: what the app's routes answer, from calls that never block (this runs in the loop), but
        for ``metrics_body``, which waits for idle runners' counters while ``metrics_wait()`` (``THREADED``:
        the worker then calls it from a thread of its own)."""
        self.metrics_wait = metrics_wait
        self.security = security
        self.record = record  # metrics: route, method, status, seconds
        version = dumps(version_body()).encode("utf-8")
        heartbeat = HEARTBEAT.encode("utf-8")

        def health() -> tuple[bytes, str] | None:
            body = health_body()
            return (dumps(body).encode("utf-8"), JSON) if body["ready"] else None

        self.bodies: dict[str, Body] = {
            "/": lambda: (heartbeat, TEXT),
            "/api/version": lambda: (version, JSON),
            "/api/tags": lambda: (tags_body(), JSON),
            "/api/ps": lambda: (dumps(ps_body()).encode("utf-8"), JSON),
            "/health": health,
        }
        self._waiting = threading.local()  # set on the metrics thread: its scrape may wait for the runners
        if metrics_body is not None:
            self.bodies["/metrics"] = lambda: (metrics_body(getattr(self._waiting, "on", False)), METRICS_TYPE)
        self._date = (0, "")
        self._plans: dict[bytes, Plan | bool] = {}
        self._log = QueuedLog(access_logger, ACCESS_LINE)
        # gunicorn's limit_request_fields and limit_request_field_size (the worker sets its own): past them
        # its parser refuses the request (431), so the fast lane must not answer it.
        self.max_fields, self.max_field_bytes = 100, 8190

    def set_limits(self, fields: int, field_bytes: int) -> None:
        """gunicorn's header limits as the worker has them (heads planned under others are planned again)."""
        self.max_fields, self.max_field_bytes = fields, field_bytes
        self._plans.clear()

    def answer(self, head: bytes, client: str, *, wait: bool = False) -> tuple[bytes, bool] | None:
        """The answer to the request ``head`` and whether the connection stays open; None to decline.

        ``wait``: called off the event loop (``threaded``), so ``/metrics`` may wait for the runners."""
        self._waiting.on = wait
        start = time.monotonic()
        plan = self._plan_of(head)
        if plan is False:
            return None
        method, path, body_of, keep, given = plan
        try:
            made = body_of()
        except Exception:  # the usual path answers with the error, in the route's shape
            return None
        if made is None:
            return None
        body, content_type = made
        rid = given or f"{random.getrandbits(64):016x}"  # os.urandom is a system call (it gives up the GIL)
        out = (f"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: {self._http_date()}\r\n"
               f"Connection: {'keep-alive' if keep else 'close'}\r\nx-request-id: {rid}\r\n"
               f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n").encode("latin-1")
        if method == "GET":
            out += body
        elapsed = time.monotonic() - start
        self.record(path, method, "200", elapsed)
        self._log(rid, method, path, "200", elapsed * 1000, "", 0, client)
        return out, keep

    def threaded(self, head: bytes) -> bool:
        """Whether ``answer`` for this head must run off the event loop now (it would wait: ``THREADED``)."""
        plan = self._plan_of(head)
        return plan is not False and plan[1] in THREADED and self.metrics_wait()

    def _plan_of(self, head: bytes) -> Plan | bool:
        plan = self._plans.get(head)
        if plan is None:
            plan = self._plan(head)
            if len(self._plans) >= _PLANS:
                self._plans.clear()
            self._plans[head] = plan
        return plan

    def _plan(self, head: bytes) -> Plan | bool:
        """What ``answer`` does with this exact head (False: decline); it depends on nothing but the head and
        the settings, so clients that send the same head each poll (most do) skip parsing it."""
        m = _LINE.match(head)
        if m is None:
            return False
        method, path = m.group(1).decode("ascii"), m.group(2).decode("latin-1")
        path = path.rstrip("/") or "/"
        body_of = self.bodies.get(path)
        if body_of is None or len(head) > self.security.max_header_bytes or (method == "HEAD" and path in GET_ONLY):
            return False
        headers = _headers(head[m.end():], self.max_fields, self.max_field_bytes)
        if headers is None or headers.get(b"content-length", b"0").strip() != b"0":
            return False
        if self.security.api_key is not None and path not in OPEN_ROUTES:
            return False
        host = headers.get(b"host")
        if self.security.check_host and not host_allowed(None if host is None else host.decode("latin-1")):
            return False
        tokens = {t.strip().lower() for t in headers.get(b"connection", b"").split(b",") if t.strip()}
        if not tokens <= {b"close", b"keep-alive"}:
            return False
        given = headers.get(b"x-request-id")
        return method, path, body_of, b"close" not in tokens, request_id(
            given.decode("latin-1") if given is not None else None)

    def _http_date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]



class QueuedLog:
    """Log lines made in the event loop and written by a thread of their own.

    Writing a line is a system call, which gives up the GIL; on a busy worker the loop then waits to
    take it back behind every runnable thread. The record (its time, its text) is made at once and
    the thread hands it to the logger's handlers as ``logger.info`` would, a moment later.
    """

    def __init__(self, logger: logging.Logger, line: str) -> None:
        self.logger = logger
        self.line = line
        self._records: SimpleQueue[logging.LogRecord] = SimpleQueue()
        self._writer: threading.Thread | None = None

    def __call__(self, *args: Any) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, self.line, args, None)
        if self._records.qsize() >= _LOG_BACKLOG:  # the writer is behind: write this one here (and wait)
            logger.handle(record)
            return
        self._records.put(record)
        if self._writer is None:  # in the process that answers (the worker), on first use
            self._writer = threading.Thread(target=self._write, name="power-access-log", daemon=True)
            self._writer.start()

    def _write(self) -> None:
        while True:
            self.logger.handle(self._records.get())


def _headers(block: bytes, max_fields: int, max_field_bytes: int) -> dict[bytes, bytes] | None:
    """Header names (lower case) to values, or None when one must decline: folded, repeated, unusual, too many."""
    out: dict[bytes, bytes] = {}
    for count, line in enumerate(block.split(b"\n")):
        line = line.rstrip(b"\r")
        if not line:
            break
        if count >= max_fields or len(line) > max_field_bytes:
            return None
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            return None
        name = name.lower()
        if name in _DECLINE or (name in _SINGLE and name in out):
            return None
        out[name] = value.strip()
    return out


def fast_lane_of(app: Any) -> FastLane | None:
    """The fast lane an app built by ``create_app`` carries, if any."""
    lane = getattr(app, "fast_lane", None)
    return lane if isinstance(lane, FastLane) else None
