"""Scheduler-wide counters for metrics: running and waiting requests, KV-cache use, GPU memory and load.

``summarize`` folds what each loaded model's engine reported (``Loaded.usage``)
into the totals that inference gateways scrape; ``GpuSampler`` asks
``nvidia-smi`` for memory and utilisation, at most once per ``ttl`` seconds, so
that a busy Prometheus cannot turn scrapes into a stream of subprocesses.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["GpuSampler", "parse_gpu_usage", "summarize"]

log = logging.getLogger(__name__)

_QUERY = "--query-gpu=index,memory.used,memory.total,utilization.gpu"


def parse_gpu_usage(text: str) -> list[dict[str, Any]]:
    """Parse ``nvidia-smi --query-gpu=index,memory.used,memory.total,utilization.gpu`` (csv, no units)."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        try:
            used, total = int(float(parts[1])) << 20, int(float(parts[2])) << 20
            util = float(parts[3]) / 100.0 if parts[3] not in ("[N/A]", "N/A") else 0.0
        except ValueError:
            continue
        out.append({"index": int(parts[0]), "used": used, "total": total, "utilization": util})
    return out


class GpuSampler:
    """GPU memory and utilisation through nvidia-smi, cached for ``ttl`` seconds; [] without NVIDIA GPUs."""

    def __init__(self, enabled: bool, *, ttl: float = 5.0,
                 run: Callable[[Sequence[str]], str] | None = None) -> None:
        self.enabled = enabled
        self.ttl = ttl
        self._run = run
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._last: list[dict[str, Any]] = []
        self._refreshing = False

    def sample(self, block: bool = True) -> list[dict[str, Any]]:
        """The GPUs' figures; ``block=False``: the last ones at once, refreshed on a thread of its own when
        stale (for a caller that must not wait for nvidia-smi, e.g. the HTTP worker's event loop)."""
        if not self.enabled:
            return []
        if not block:
            if not self._lock.acquire(blocking=False):  # a query is running
                return list(self._last)
            try:
                stale = time.monotonic() - self._at >= self.ttl and not self._refreshing
                self._refreshing |= stale
                last = list(self._last)
            finally:
                self._lock.release()
            if stale:
                threading.Thread(target=self._refresh, name="power-gpu-sample", daemon=True).start()
            return last
        with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return list(self._last)
            self._at = time.monotonic()
            self._last = self._query()
            return list(self._last)

    def _refresh(self) -> None:
        try:
            self.sample()
        finally:
            with self._lock:
                self._refreshing = False

    def _query(self) -> list[dict[str, Any]]:
        run = self._run
        if run is None:
            exe = shutil.which("nvidia-smi")
            if exe is None:
                return []

            def run(cmd: Sequence[str]) -> str:
                return subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=5,
                                      check=True).stdout
        try:
            return parse_gpu_usage(run(["nvidia-smi", _QUERY, "--format=csv,noheader,nounits"]))
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("nvidia-smi failed: %s", exc)
            return []


def summarize(models: Sequence[Mapping[str, Any]], *, pending_loads: int, queue_capacity: int,
              gpus: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Totals over every loaded model, plus the per-model rows they came from."""
    kv_used = sum(int(m.get("kv_used", 0)) for m in models)
    n_ctx = sum(int(m.get("n_ctx", 0)) for m in models)
    return {
        "running": sum(int(m.get("running", 0)) for m in models),
        "waiting": pending_loads + sum(int(m.get("waiting", 0)) for m in models),
        "kv_used": kv_used,
        "kv_capacity": n_ctx,
        "kv_cache_usage": kv_used / n_ctx if n_ctx else 0.0,
        "queue_capacity": queue_capacity,
        "models": [dict(m) for m in models],
        "gpus": [dict(g) for g in gpus],
    }
