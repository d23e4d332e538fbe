"""A model as the scheduler sees it: what to load (``ModelSpec``) and a loaded runner's state (``Loaded``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from power.engine.options import LoadOptions
from power.runner.client import RunnerProcess
from power.runner.memory import MemoryEstimate, ModelFacts, processor_split

__all__ = ["Loaded", "ModelSpec", "ModelView", "ProgressWatcher", "Resolver"]

FOREVER_SPAN = timedelta(days=292 * 365)  # what Ollama shows for keep_alive < 0


def expiry_of(keep_alive: float | None, refs: int, expires_at: float | None) -> datetime:
    """When a model unloads, as of now: never (``FOREVER_SPAN``), ``keep_alive`` after now while it
    serves requests (or before its first release), else the time its timer was set for."""
    now = datetime.now(UTC).astimezone()
    if keep_alive is None:
        return now + FOREVER_SPAN
    if refs or expires_at is None:
        return now + timedelta(seconds=keep_alive)
    return datetime.fromtimestamp(expires_at, UTC).astimezone()


@dataclass(frozen=True)
class ModelView:
    """What ``/api/ps`` shows of one model as of its last change; only ``expires_at`` depends on the time
    of the answer. Never changed once made (the scheduler makes a new one), so any thread may read it."""

    row: Mapping[str, Any]  # the ``describe`` row without ``expires_at``
    keep_alive: float | None
    refs: int
    expires_at: float | None

    def describe(self) -> dict[str, Any]:
        return {**self.row, "details": dict(self.row["details"]),
                "expires_at": expiry_of(self.keep_alive, self.refs, self.expires_at)}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to start a runner for a named model (from the store, or given by a test)."""

    name: str
    model_path: str
    adapters: tuple[tuple[str, float], ...] = ()
    projector: str | None = None
    draft: str | None = None  # the draft model of speculative decoding
    options: Mapping[str, Any] = field(default_factory=dict)  # Modelfile PARAMETERs
    digest: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    size: int = 0  # bytes of model + adapters + projector + draft; 0 = measure the files

    def files_size(self) -> int:
        if self.size:
            return self.size
        total = 0
        for path in self.paths():
            try:
                total += os.path.getsize(path)
            except OSError:
                pass
        return total

    def paths(self) -> list[str]:
        """The files the runner opens: model, adapters, projector, draft."""
        return [self.model_path, *(a for a, _ in self.adapters), *(p for p in (self.projector, self.draft) if p)]

    def same_files(self, other: ModelSpec) -> bool:
        return (self.model_path, self.adapters, self.projector, self.draft) == (
            other.model_path, other.adapters, other.projector, other.draft)


Resolver = Callable[[str], ModelSpec]
ProgressWatcher = Callable[[int, int], None]  # (completed, total) of a load, called in the loop thread


class Loaded:
    """One model's runner while it lives; touched only in the scheduler's loop thread."""

    def __init__(self, spec: ModelSpec, load: LoadOptions, facts: ModelFacts, estimate: MemoryEstimate,
                 size_vram: int) -> None:
        self.spec = spec
        self.load = load
        self.facts = facts
        self.estimate = estimate
        self.size_vram = size_vram
        self.runner: RunnerProcess | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.refs = 0
        self.keep_alive: float | None = 300.0
        self.timer: asyncio.TimerHandle | None = None
        self.expires_at: float | None = None  # wall-clock seconds; None = never
        self.last_used = time.monotonic()
        self.load_duration = 0
        self.closing = False
        # Bytes of the model's files loaded so far, of ``load_total``; watchers hear each advance.
        self.load_total = max(1, spec.files_size())
        self.load_completed = 0
        self._watchers: list[ProgressWatcher] = []

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def idle(self) -> bool:
        return self.refs == 0 and self.ready.done()

    @property
    def waiting(self) -> int:
        """Requests the runner holds beyond its parallel sequences (they queue in the engine)."""
        return max(0, self.refs - self.load.num_parallel)

    @property
    def loading(self) -> bool:
        return not self.ready.done()

    def watch(self, watcher: ProgressWatcher | None) -> None:
        """Tell ``watcher`` (completed, total) now and at each advance until the load ends."""
        if watcher is not None and self.loading:
            self._watchers.append(watcher)
            watcher(self.load_completed, self.load_total)

    def progress(self, fraction: float) -> None:
        """The runner loaded ``fraction`` of the weights; the last step (to ``load_total``) waits for ready."""
        completed = min(int(fraction * self.load_total), self.load_total - 1)
        if completed > self.load_completed and self.loading:
            self.load_completed = completed
            for watcher in self._watchers:
                watcher(completed, self.load_total)

    def loaded(self, ok: bool) -> None:
        """The load is over, before ``ready`` says so: a success tells the watchers it is complete."""
        if ok:
            self.load_completed = self.load_total
            for watcher in self._watchers:
                watcher(self.load_total, self.load_total)
        self._watchers.clear()

    def serves(self, spec: ModelSpec, load: LoadOptions) -> bool:
        # A runner whose socket has closed is dead even before its exit is reaped (and _on_exit runs).
        alive = self.runner is None or not self.runner.closed
        return alive and not self.closing and self.load == load and self.spec.same_files(spec)

    def hold(self, keep_alive: float | None, n: int = 1) -> None:
        """Count ``n`` more requests (sequences) on this runner."""
        self.refs += n
        self.keep_alive = keep_alive
        self.last_used = time.monotonic()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expiry(self) -> datetime:
        return expiry_of(self.keep_alive, self.refs, self.expires_at)

    def usage(self, engine: Mapping[str, Any]) -> dict[str, Any]:
        """Running/waiting requests and KV-cache cells, from the engine's counters (``{}`` if it did not answer)."""
        n_ctx = int(engine.get("n_ctx") or 0)
        if not n_ctx:
            n_ctx = int(engine.get("n_ctx_seq") or self.load.num_ctx) * int(engine.get("n_seq") or 1)
        kv_used = int(engine.get("kv_used") or 0)
        running = int(engine["n_active"]) if "n_active" in engine else min(self.refs, self.load.num_parallel)
        waiting = int(engine["n_waiting"]) if "n_waiting" in engine else self.waiting
        return {"name": self.spec.name, "running": running, "waiting": waiting, "kv_used": kv_used,
                "n_ctx": n_ctx, "kv_cache_usage": kv_used / n_ctx if n_ctx else 0.0,
                "num_parallel": self.load.num_parallel, "in_flight": self.refs,
                "draft_skipped": int(engine.get("n_draft_skipped") or 0),
                "draft_caught_up": int(engine.get("n_draft_caught_up") or 0),
                "draft_copied": int(engine.get("n_draft_copied_tokens") or 0),
                "prompt_cache": self._prompt_cache(engine, kv_used, n_ctx)}

    def _prompt_cache(self, engine: Mapping[str, Any], kv_used: int, n_ctx: int) -> dict[str, dict[str, int]]:
        """The prompt cache per tier (``kv``: the sequences' cells; ``ram``: saved states in host memory;
        ``disk``: states in files, this runner's or an earlier one's): bytes, entries, hits, misses, tokens not evaluated thanks to it."""
        def get(key: str) -> int:
            return int(engine.get(key) or 0)

        ram_restored = get("ram_restored_tokens")
        return {
            "kv": {"bytes": self.estimate.kv_cache * kv_used // n_ctx if n_ctx else 0, "entries": get("kv_entries"),
                   "hits": get("kv_hits"), "misses": get("kv_misses"),
                   "restored_tokens": max(0, get("n_reused_tokens") - ram_restored - get("disk_restored_tokens"))},
            "ram": {"bytes": get("ram_bytes"), "entries": get("ram_entries"), "hits": get("ram_hits"),
                    "misses": get("ram_misses"), "restored_tokens": ram_restored},
            "disk": {"bytes": get("disk_bytes"), "entries": get("disk_entries"), "hits": get("disk_hits"),
                     "misses": get("disk_misses"), "restored_tokens": get("disk_restored_tokens")},
        }

    def describe(self) -> dict[str, Any]:
        """The ``/api/ps`` view of this model; one still loading adds ``status``, ``completed`` and ``total``."""
        return self.view().describe()

    def view(self) -> ModelView:
        """This model as ``/api/ps`` shows it now, frozen (see ``ModelView``)."""
        size = self.estimate.total
        info = self.runner.info if self.runner is not None else {}
        row = {
            "name": self.spec.name, "model": self.spec.name, "size": size, "size_vram": self.size_vram,
            "digest": self.spec.digest, "details": dict(self.spec.details),
            "context_length": int(info.get("num_ctx", self.load.num_ctx)),
            "processor": processor_split(size, self.size_vram, self.estimate.gpus),
            "pid": self.runner.pid if self.runner else 0,
            "num_parallel": self.load.num_parallel, "in_flight": self.refs,
            "running": min(self.refs, self.load.num_parallel), "waiting": self.waiting,
        }
        if self.loading:
            row.update(status="loading model", completed=self.load_completed, total=self.load_total)
        return ModelView(row, self.keep_alive, self.refs, self.expires_at)
