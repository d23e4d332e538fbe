"""``keep_alive`` in every form Ollama accepts: Go durations, seconds, "0", negatives."""

from __future__ import annotations

import math
import re
from typing import Any

from power.errors import InvalidRequest

__all__ = ["FOREVER", "parse_keep_alive"]

FOREVER: float | None = None  # how "never expire" is spelled after parsing

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def _go_duration(text: str) -> float:
    """Parse a Go ``time.Duration`` string such as ``1h30m`` or ``-1s`` into seconds."""
    s = text
    sign = 1.0
    if s[:1] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise InvalidRequest(f'time: invalid duration "{text}"')
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            if re.fullmatch(r"\d+(?:\.\d*)?", s[pos:]):
                raise InvalidRequest(f'time: missing unit in duration "{text}"')
            raise InvalidRequest(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def _setting(default: Any) -> float | None:
    if default is None or default == "":
        return 300.0
    if isinstance(default, str):
        text = default.strip().strip("'\"")
        if re.fullmatch(r"[+-]?\d+", text):
            default = int(text)
    return parse_keep_alive(default, None)


def parse_keep_alive(value: Any, default: Any = "5m") -> float | None:
    """Return seconds to stay loaded after the last request, or ``None`` for forever.

    ``value`` comes from the request (None when absent), ``default`` from the
    environment or the config file and is parsed the same way. Numbers are
    seconds; strings are Go durations ("5m", "1h30m", "0"); negative means
    forever; in a request a unit-less string other than "0" is refused, as
    Ollama does, while the setting (``OLLAMA_KEEP_ALIVE``) may be an integer.
    """
    if value is None or value == "":
        return _setting(default)
    if isinstance(value, bool):
        raise InvalidRequest("keep_alive must be a duration string or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if math.isnan(seconds):
            raise InvalidRequest("keep_alive must be a duration string or a number of seconds")
    elif isinstance(value, str):
        text = value.strip().strip("'\"")
        seconds = _go_duration(text)
    else:
        raise InvalidRequest("keep_alive must be a duration string or a number of seconds")
    if seconds < 0 or math.isinf(seconds):
        return FOREVER
    return seconds
