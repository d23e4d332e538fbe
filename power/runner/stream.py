"""What a server thread holds while a runner works for it: a stream of chunks, or one pending result.

Both are *sinks*: the event-loop thread feeds them the runner's frames
(``feed`` returns True once the request is over) or fails them; the server
thread that waits on them never touches the loop. ``on_done`` runs once, in
the loop thread, when the request is over for whatever reason.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from power.errors import PowerError, TimedOut
from power.runner.protocol import error_from_wire

__all__ = ["Call", "Sink", "Stream", "arm_deadlines"]

log = logging.getLogger(__name__)


class Sink:
    """Base of the loop-side half: once-only completion with a callback."""

    def __init__(self) -> None:
        self.on_done: Callable[[], None] | None = None
        self.finished = False

    def _complete(self) -> None:
        if not self.finished:
            self.finished = True
            cb, self.on_done = self.on_done, None
            if cb is not None:
                cb()

    def feed(self, msg: dict[str, Any]) -> bool:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        raise NotImplementedError


class Stream(Sink):
    """The chunks of one generation, in order; iterate from any one thread.

    Each item is a dict with ``text``, ``tokens`` and (on the last, whose
    ``done`` is True) ``done_reason`` and the timings in nanoseconds. A runner
    that dies mid-stream makes iteration raise ``RunnerCrashed``. A stream that
    watches its model's load starts with items whose ``load`` is
    ``{"completed", "total"}`` (and whose text is empty), the last one complete.
    """

    def __init__(self, cancel: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._buf: deque[dict[str, Any]] = deque()
        self._cancel = cancel
        self._over = False
        self._first = threading.Event()  # something to consume: output, an error or load progress
        self._output = False
        self.load_duration = 0
        self.cancel_reason: str | None = None
        self.wake: Callable[[], None] | None = None  # called (loop thread) after each arrival

    def _put(self, item: Any) -> None:
        self._q.put(item)
        if self.wake is not None:
            self.wake()

    # ---- loop side -------------------------------------------------------------------------------
    def feed(self, msg: dict[str, Any]) -> bool:
        chunks = msg.get("chunks")
        items: list[Any] = [chunks] if chunks else []
        over = bool(chunks) and bool(chunks[-1].get("done"))
        if "error" in msg:
            items.append(error_from_wire(msg["error"]))
            over = True
        if over:  # the slot is free (and ps says so) before the reader sees the end
            self._complete()
        for item in items:
            self._put(item)
        self._output = True
        self._first.set()
        return over

    def fail(self, exc: BaseException) -> None:
        if not self.finished:
            self._complete()
            self._put(exc)
            self._output = True
            self._first.set()

    def progress(self, completed: int, total: int) -> None:
        """The model this stream waits for has loaded ``completed`` of ``total`` bytes (a ``ProgressWatcher``)."""
        if not self.finished:
            self._put([{"text": "", "tokens": [], "load": {"completed": completed, "total": total}}])
            self._first.set()

    @property
    def started(self) -> bool:
        """Whether any output (or an error) has arrived; load progress is not output."""
        return self._output

    # ---- consumer side ---------------------------------------------------------------------------
    def wait_first(self, timeout: float | None = None) -> None:
        """Block until the first output or error; raise the error here, before anything is streamed."""
        self._first.wait(timeout)
        if self._buf or self._over:
            return
        try:
            item = self._q.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, BaseException):
            self._over = True
            raise item
        self._buf.extend(item)

    @property
    def ready(self) -> bool:
        """Whether the next ``next`` returns (or raises) without waiting."""
        return bool(self._buf) or self._over or not self._q.empty()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._buf:
            if self._over:
                raise StopIteration
            item = self._q.get()
            if isinstance(item, BaseException):
                self._over = True
                raise item
            self._buf.extend(item)
        chunk = self._buf.popleft()
        if chunk.get("done"):
            self._over = True
            chunk["load_duration"] = self.load_duration
        return chunk

    def result(self) -> dict[str, Any]:
        """Consume the stream into one chunk (text, tokens and logprobs concatenated)."""
        parts: list[str] = []
        tokens: list[int] = []
        lps: list[Any] = []
        last: dict[str, Any] = {}
        for c in self:
            parts.append(c["text"])
            tokens.extend(c["tokens"])
            lps.extend(c.get("logprobs", ()))
            last = c
        return {**last, "text": "".join(parts), "tokens": tokens, "logprobs": lps}

    def cancel(self, reason: str = "cancel") -> None:
        """Stop the generation (client gone, stop word): its sequence is freed within one engine step."""
        if self._cancel is not None and not self.finished:
            self.cancel_reason = reason  # seen by the scheduler if it is still dispatching this stream
            self._cancel(reason)

    def close(self) -> None:
        """Cancel if still running; safe to call more than once."""
        if not self._over:
            self.cancel()


class Call(Sink):
    """A request with one answer (embed, tokenize, stats); ``future`` completes in the loop thread."""

    def __init__(self) -> None:
        super().__init__()
        self.future: Future[Any] = Future()

    def feed(self, msg: dict[str, Any]) -> bool:
        if "error" in msg:
            self.fail(error_from_wire(msg["error"]))
        elif not self.future.done():
            self._complete()  # released (and ps says so) before the caller has the answer
            self.future.set_result(msg.get("result"))
        return True

    def fail(self, exc: BaseException) -> None:
        self._complete()
        if not self.future.done():
            self.future.set_exception(exc)

    def wait(self, timeout: float | None = None) -> Any:
        try:
            return self.future.result(timeout)
        except TimeoutError as exc:
            raise PowerError("timed out waiting for the model runner") from exc


def arm_deadlines(sink: Sink, cancel: Callable[[str], None], *, first_token: float, total: float,
                  what: str = "") -> None:
    """Past ``first_token`` seconds without output, or ``total`` seconds in all, cancel and fail with TimedOut.

    Runs in the loop thread right after the request was sent; a deadline <= 0
    is off. The timers go when the request ends for any other reason (P7).
    """
    loop = asyncio.get_running_loop()
    handles: list[asyncio.TimerHandle] = []

    def expire(waiting_for: str, seconds: float) -> None:
        if sink.finished or (waiting_for == "first token" and isinstance(sink, Stream) and sink.started):
            return
        log.warning("request timed out %s waiting_for=%s after_s=%g", what, waiting_for, seconds)
        cancel("timeout")
        sink.fail(TimedOut(f"request timed out: no {waiting_for} within {seconds:g}s"))

    if isinstance(sink, Stream) and first_token > 0:
        handles.append(loop.call_later(first_token, expire, "first token", first_token))
    if total > 0:
        handles.append(loop.call_later(total, expire, "complete answer", total))
    if not handles or sink.finished:
        for h in handles:
            h.cancel()
        return
    done = sink.on_done

    def finished() -> None:
        for h in handles:
            h.cancel()
        if done is not None:
            done()

    sink.on_done = finished
