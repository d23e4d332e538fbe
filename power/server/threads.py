"""A thread pool whose idle threads end, so a burst of requests does not keep its memory for good.

gunicorn's gthread pool is a ``ThreadPoolExecutor``, whose threads live as long as
the worker: after 500 queued streams the worker keeps 500 threads (their stacks,
thread states and malloc arenas) forever, and its RSS never comes back. Here a
thread that has waited ``idle`` seconds for work ends, and when the pool shrinks
the C heap is trimmed (glibc ``malloc_trim``), so memory returns after a load.

Threads start on demand: a task starts one when there are more queued tasks than
idle threads and fewer than ``max_workers`` threads. The pool's own spawner thread
starts them, not the submitter: ``Thread.start`` waits until the new thread runs,
which on a busy worker means waiting for the GIL behind every other runnable
thread, and the submitter is the worker's event loop (a burst of 100 streams
would stall every other connection for as many hand-overs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

__all__ = ["ElasticPool", "TRIM_BUSY_S", "TRIM_EVERY_S", "limit_arenas", "trim_heap"]

log = logging.getLogger(__name__)

TRIM_EVERY_S = 1.0  # the heap is trimmed at most this often as threads end while no task runs
TRIM_BUSY_S = 30.0  # ... and while some do


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        return libc
    except (OSError, AttributeError):  # not glibc: nothing to trim with
        return None


_LIBC = _glibc()


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc), where that is possible."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_arenas(count: int) -> None:
    """Let glibc's malloc use at most ``count`` arenas (call before threads start).

    By default every thread that allocates while the others hold theirs gets an arena, up to eight per
    core; a burst of request threads leaves memory spread over all of them, pinned by a few live chunks
    each, which ``malloc_trim`` cannot give back. The GIL serializes Python's allocations anyway.
    """
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, max(1, count))


class ElasticPool:
    """``submit``/``shutdown`` as ``concurrent.futures.ThreadPoolExecutor``, with threads that end when idle."""

    def __init__(self, max_workers: int, idle: float = 30.0, name: str = "power-request") -> None:
        self.max_workers = max(1, max_workers)
        self.idle = idle if idle > 0 else float("inf")
        self.name = name
        self._cond = threading.Condition()
        self._tasks: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = deque()
        self._threads = 0
        self._waiting = 0
        self._closed = False
        self._made = 0
        self._trimming = threading.Lock()
        self._trimmed_at = float("-inf")
        self._trim_later = False  # a trim is due once TRIM_EVERY_S has passed
        self._spawns = 0  # threads counted in ``_threads`` that the spawner has yet to start
        self._spawn_cond = threading.Condition(self._cond._lock)  # type: ignore[attr-defined]  # the same lock
        threading.Thread(target=self._spawner, name=f"{name}-spawner", daemon=True).start()

    @property
    def threads(self) -> int:
        return self._threads

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._tasks.append((future, fn, args, kwargs))
            if len(self._tasks) > self._waiting + self._spawns and self._threads < self.max_workers:
                self._threads += 1
                self._spawns += 1
                self._spawn_cond.notify()
            else:
                self._cond.notify()
        return future

    def _spawner(self) -> None:
        """Start the threads ``submit`` asked for (ends with the pool, once every one asked for has started)."""
        with self._cond:
            while True:
                while not self._spawns and not self._closed:
                    self._spawn_cond.wait()
                if not self._spawns:
                    return
                self._spawns -= 1
                self._made += 1
                thread = threading.Thread(target=self._work, name=f"{self.name}_{self._made}", daemon=True)
                self._cond.release()
                started = False
                try:
                    thread.start()
                    started = True
                except RuntimeError as exc:  # out of threads: queued tasks wait for the threads there are
                    log.warning("request thread not started error=%s", exc)
                finally:
                    self._cond.acquire()
                if not started:
                    self._threads -= 1
                    self._cond.notify_all()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._closed = True
            self._spawn_cond.notify()
            if cancel_futures:
                while self._tasks:
                    self._tasks.popleft()[0].cancel()
            self._cond.notify_all()
            while wait and self._threads:
                self._cond.wait()

    def _work(self) -> None:
        with self._cond:
            while True:
                if not self._tasks:
                    if self._closed or not self._wait_for_work():
                        self._threads -= 1
                        self._cond.notify_all()  # a shutdown(wait=True) counts threads
                        quiet = not self._tasks and self._threads - self._spawns == self._waiting
                        break
                    continue
                future, fn, args, kwargs = self._tasks.popleft()
                self._cond.release()
                try:
                    _run(future, fn, args, kwargs)
                finally:
                    del future, fn, args, kwargs
                    self._cond.acquire()
        self._trim(quiet)

    def _trim(self, quiet: bool) -> None:
        """Trim the heap after threads end: a full collection and ``malloc_trim`` stop every thread, the
        event loop's included, for tens of milliseconds, which a load's tail (its first threads ending
        while the last streams run) felt at every ending. While tasks run, at most once ``TRIM_BUSY_S``;
        once none does, at most once ``TRIM_EVERY_S``, and once more after the last ending of a burst
        (by the ending thread that finds a trim due, before it goes)."""
        every = TRIM_EVERY_S if quiet else TRIM_BUSY_S
        with self._cond:  # claim the trim, so endings at the same moment do not each make one
            wait = self._trimmed_at + every - time.monotonic()
            if wait <= 0:
                self._trimmed_at = time.monotonic()
            elif quiet and not self._trim_later:
                self._trim_later = True
            else:
                return  # a trim is recent (or due already, by another ending)
        if wait > 0:
            time.sleep(wait)
            with self._cond:
                self._trim_later = False
                self._trimmed_at = time.monotonic()
        with self._trimming:
            gc.collect()  # what the burst's requests left in reference cycles goes first
            trim_heap()

    def _wait_for_work(self) -> bool:
        """Wait (holding the condition) until a task comes; False once ``idle`` seconds passed without one."""
        deadline = time.monotonic() + self.idle
        self._waiting += 1
        try:
            while not self._tasks and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return bool(self._tasks)
        finally:
            self._waiting -= 1


def _run(future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the future carries it to whoever waits, as in the stdlib
        future.set_exception(exc)
    else:
        future.set_result(result)
