"""Work limits shared by every template renderer (reliability P7).

A template comes from outside (a Modelfile, a registry layer, a GGUF file, a
request), so rendering one must end quickly and produce a bounded amount of
text whatever the template says. ``Budget`` counts steps and output and checks
a deadline; renderers call ``tick`` once per unit of work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from power.errors import TemplateError

__all__ = ["DEFAULT_LIMITS", "Budget", "Limits"]


@dataclass(frozen=True)
class Limits:
    """Bounds on one render (or parse) of a template."""

    max_steps: int = 2_000_000
    max_output: int = 8 * 1024 * 1024  # characters
    max_seconds: float = 2.0
    max_depth: int = 100  # nesting of blocks, parentheses and template calls
    max_source: int = 1024 * 1024  # characters of template text


DEFAULT_LIMITS = Limits()

# Checking the clock costs more than counting, so look at it every few steps.
_CLOCK_EVERY = 256


class Budget:
    """The running account of one render against its ``Limits``."""

    __slots__ = ("deadline", "limits", "size", "steps")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.steps = 0
        self.size = 0
        self.deadline = time.monotonic() + limits.max_seconds

    def tick(self, n: int = 1) -> None:
        """Count ``n`` steps of work; raise once a limit is passed."""
        self.steps += n
        if self.steps > self.limits.max_steps:
            raise TemplateError(
                f"template exceeded {self.limits.max_steps} evaluation steps")
        if self.steps % _CLOCK_EVERY < n and time.monotonic() > self.deadline:
            raise TemplateError(
                f"template took longer than {self.limits.max_seconds:g}s to render")

    def emit(self, n: int) -> None:
        """Count ``n`` characters of output."""
        self.size += n
        if self.size > self.limits.max_output:
            raise TemplateError(
                f"template output exceeded {self.limits.max_output} characters")
        self.tick()
