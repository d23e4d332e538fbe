"""Anthropic's server-sent events: named events, ``ping`` while nothing else is said, ``error`` once begun.

The events come from a generator that waits on the model (a generation queued
behind others, a thinking budget's second generation, a long tool call the
parser holds until it is whole). It runs on a thread of its own, so the writer
can say ``ping`` every ``interval`` seconds of silence and the client (or a
proxy) never takes the wait for a dead connection. An error after the first
event cannot change the status any more: it becomes ``event: error`` with
Anthropic's error object, and the stream ends there.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import falcon

from power.errors import PowerError
from power.server.errors import anthropic_error, anthropic_status
from power.server.streaming import dumps

__all__ = ["PING_INTERVAL", "encode", "send_events"]

log = logging.getLogger(__name__)

PING_INTERVAL = 10.0
_END = object()


def encode(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {dumps(event)}\n\n".encode()


_PING = encode({"type": "ping"})


def _error(exc: BaseException) -> bytes:
    if isinstance(exc, PowerError):
        return encode(anthropic_error(anthropic_status(exc), str(exc)))
    log.error("anthropic stream failed", exc_info=exc)
    return encode(anthropic_error(500, f"internal error: {type(exc).__name__}"))


def _pump(events: Iterator[dict[str, Any]], out: queue.SimpleQueue[Any]) -> None:
    try:
        for event in events:
            out.put(event)
        out.put(_END)
    except BaseException as exc:  # noqa: BLE001 - handed to the writer, which tells the client
        out.put(exc)


def _body(events: Iterator[dict[str, Any]], cancel: Callable[[], None], interval: float) -> Iterator[bytes]:
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threading.Thread(target=_pump, args=(events, out), name="anthropic-events", daemon=True).start()
    try:
        while True:
            try:
                item = out.get(timeout=interval)
            except queue.Empty:
                yield _PING
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                yield _error(item)
                return
            yield encode(item)
    finally:
        cancel()  # the client left (or all is said): the generator's thread ends the generation itself


def send_events(resp: falcon.Response, events: Iterator[dict[str, Any]], *, cancel: Callable[[], None],
                interval: float | None = None) -> None:
    """Stream ``events`` (dicts with a ``type``) as Anthropic's SSE; ``cancel`` runs when the body closes.

    ``interval``: seconds of silence before a ``ping`` (``PING_INTERVAL`` unless given).
    """
    resp.status = falcon.HTTP_200
    resp.content_type = "text/event-stream"
    resp.set_header("Cache-Control", "no-cache")
    resp.stream = _body(events, cancel, interval or PING_INTERVAL)
