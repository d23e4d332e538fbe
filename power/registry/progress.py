"""Ollama's per-layer progress lines, and running transfers in threads while they are reported.

A transfer yields ``{"status": "pulling <12 hex>", "digest", "total", "completed"}``
(or ``pushing``) for each layer when it starts and then whenever its count
moved, at most every ``interval`` seconds, as Ollama does every ~60 ms.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

from power.errors import Canceled

__all__ = ["LayerProgress", "run_reporting", "status"]

log = logging.getLogger(__name__)

Event = dict[str, Any]


def status(text: str) -> Event:
    return {"status": text}


class LayerProgress:
    """Byte counts per layer, safe to update from download threads."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self._lock = threading.Lock()
        self._order: list[str] = []
        self._total: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._sent: dict[str, int | None] = {}
        self._label: dict[str, str] = {}

    def add(self, digest: str, total: int, completed: int | None = None, label: str = "") -> None:
        """Track a layer; ``label`` replaces the 12 hex digits (a URL pull knows no digest yet)."""
        with self._lock:
            if digest not in self._total:
                self._order.append(digest)
                self._label[digest] = label or digest.removeprefix("sha256:")[:12]
                self._sent[digest] = -1
            self._total[digest] = total
            self._done[digest] = completed if completed is not None else 0
            if completed is None:
                self._sent[digest] = None  # first line without "completed", as Ollama's

    def setter(self, digest: str) -> Callable[[int], None]:
        def update(completed: int) -> None:
            with self._lock:
                self._done[digest] = max(0, min(completed, self._total[digest]))
        return update

    def complete(self, digest: str) -> None:
        with self._lock:
            self._done[digest] = self._total[digest]

    def changed(self) -> list[Event]:
        """Lines for the layers whose count moved since they were last reported."""
        out: list[Event] = []
        with self._lock:
            for digest in self._order:
                line: Event = {"status": f"{self.verb} {self._label[digest]}",
                               "digest": digest, "total": self._total[digest]}
                sent = self._sent[digest]
                if sent is None:
                    self._sent[digest] = -1
                    out.append(line)
                    continue
                done = self._done[digest]
                if done != sent:
                    self._sent[digest] = done
                    out.append({**line, "completed": done})
        return out


def run_reporting(tasks: Sequence[Callable[[], object]], progress: LayerProgress, cancel: threading.Event,
                  workers: int, interval: float = 0.06) -> Iterator[Event]:
    """Run ``tasks`` in threads, yielding progress lines until all finish; re-raise the first failure.

    Closing the generator (the client went away) sets ``cancel`` and waits for the threads.
    """
    yield from progress.changed()
    if not tasks:
        return
    pool = ThreadPoolExecutor(max(1, min(workers, len(tasks))), thread_name_prefix="transfer")
    futures: list[Future[object]] = [pool.submit(task) for task in tasks]
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=interval, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                cancel.set()
                wait(futures)
                errors = [f.exception() for f in futures if f.exception() is not None]
                real = [e for e in errors if not isinstance(e, Canceled)] or errors
                raise real[0]  # type: ignore[misc]
            yield from progress.changed()
        yield from progress.changed()
    finally:
        cancel.set() if any(not f.done() for f in futures) else None
        pool.shutdown(wait=True, cancel_futures=True)
