"""gunicorn settings for a3s-power: one worker (the scheduler and its runners live in it), threads for clients.

    gunicorn -c power/server/gunicorn_conf.py 'power.server.app:get_app()'

The bind address comes from ``OLLAMA_HOST`` (through ``power.config``). One
worker is a must: a second would start a second scheduler with its own runners.
"""

from __future__ import annotations

import logging
from typing import Any

from power.config import load_settings
from power.server.serve import gunicorn_options, use_allocator

if __name__ == "__config__":  # gunicorn itself reads this file (``a3s-power serve`` has re-executed already)
    use_allocator()
_settings = load_settings()
# bind, workers (one: a second would start a second scheduler), the worker class (gthread where only whole
# requests take threads, power/server/worker.py), threads sized from the queue, connections, keep-alive
# and the graceful timeout (streams get shutdown_timeout seconds after SIGTERM; the rest ends runners).
globals().update(gunicorn_options(_settings))
# Streams can be long: the worker heartbeat is separate from request time in gthread.
timeout = 0
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 16384
accesslog = None  # the app logs each request itself, with its request id and without prompt text
errorlog = "-"
loglevel = "debug" if _settings.debug else "info"
proc_name = "a3s-power"
# A shared control socket under ~/.gunicorn would collide between servers (tests run several).
control_socket_disable = True
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "power": {"level": "DEBUG" if _settings.debug else "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
    },
}
preload_app = False
forwarded_allow_ips = "127.0.0.1,::1"


def worker_exit(server: Any, worker: Any) -> None:
    """End every runner when the worker stops (SIGTERM, SIGINT, reload)."""
    from power.server import app as app_module

    scheduler = app_module._SCHEDULER
    if scheduler is not None:
        try:
            scheduler.close()
        except Exception:  # the process is going away; say so and go on
            logging.getLogger("power.server").exception("scheduler close failed")
