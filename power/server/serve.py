"""``a3s-power serve``: run the app under gunicorn in this process."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from power.config import Settings

__all__ = ["serve", "gunicorn_options", "request_threads", "use_allocator", "ALLOCATOR", "CONF_PATH"]

log = logging.getLogger(__name__)

CONF_PATH = Path(__file__).with_name("gunicorn_conf.py")


# Open connections one worker holds; idle ones cost a file descriptor and a few hundred bytes, no thread.
WORKER_CONNECTIONS = 10000
# Longer than the 60 s idle timeout of common load balancers, so they close first and never race us.
KEEPALIVE_S = 65
# Python's allocator for the server (PYTHONMALLOC). pymalloc keeps a 1 MiB arena while any object in it
# lives: a burst of 500 queued streams left 13 more arenas, each pinned by a few long-lived objects made
# during it (+10-12% RSS for good). With glibc malloc, ``malloc_trim`` after the burst gives back every
# free page, and the same load settled at +4-5% (README, deploying).
ALLOCATOR = "malloc"


def use_allocator() -> None:
    """Start this process again with ``PYTHONMALLOC=ALLOCATOR`` unless the variable is set (the same pid,
    argv and descriptors; a setting of one's own, ``pymalloc`` included, is kept). Call before threads start."""
    argv = getattr(sys, "orig_argv", None)
    if os.environ.get("PYTHONMALLOC") or not argv or getattr(sys, "frozen", False):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, {**os.environ, "PYTHONMALLOC": ALLOCATOR})


def request_threads(settings: Settings) -> int:
    """Threads for whole requests: every running and queued stream may hold one, and more stay free.

    A queued request parks its thread on a condition (no CPU, a small stack); past ``max_queue`` the
    scheduler answers 503 at once, so streams can never take every thread, and control-plane routes
    have threads of their own (``worker.CONTROL_THREADS``).
    """
    slots = settings.num_parallel * max(1, settings.max_loaded_models or 3)
    return slots + settings.max_queue + 16


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The settings of ``gunicorn_conf.py`` for ``settings`` (so callers need not set the environment)."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return {"bind": [f"{host}:{settings.port}"], "workers": 1, "worker_class": "power.server.worker.PowerWorker",
            "threads": request_threads(settings), "worker_connections": WORKER_CONNECTIONS,
            "keepalive": KEEPALIVE_S, "graceful_timeout": int(settings.shutdown_timeout) + 10}


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        namespace: dict[str, Any] = {}
        exec(compile(CONF_PATH.read_text(), str(CONF_PATH), "exec"), namespace)  # our own file, not input
        for key, value in namespace.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from power.server.app import get_app

        return get_app()


def serve(settings: Settings) -> int:
    """Serve until stopped; return the exit code."""
    use_allocator()
    log.info("starting a3s-power on %s:%d", settings.host, settings.port)
    try:
        _Server(settings).run()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
