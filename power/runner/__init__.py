"""Runner processes (one per loaded model) and the scheduler that decides which exist.

The API server imports this package; it never loads llama.cpp itself: each
model runs in a spawned ``python -m power.runner`` process that owns one
``power.engine.Engine`` and speaks ``power.runner.protocol`` over a Unix socket.
One more, ``python -m power.runner.vocabproc``, tokenizes for models that are
not loaded from their vocabularies alone.
"""

from __future__ import annotations

from power.runner.keepalive import parse_keep_alive
from power.runner.loaded import ModelSpec, Resolver
from power.runner.memory import GPU, OutOfMemory, detect_gpus, parse_nvidia_smi
from power.runner.protocol import RunnerCrashed
from power.runner.resolve import store_resolver
from power.runner.scheduler import Scheduler
from power.runner.stream import Stream

__all__ = [
           "GPU",
           "ModelSpec",
           "OutOfMemory",
           "Resolver",
           "RunnerCrashed",
           "Scheduler",
           "Stream",
           "detect_gpus",
           "parse_keep_alive",
           "parse_nvidia_smi",
           "store_resolver",
]
