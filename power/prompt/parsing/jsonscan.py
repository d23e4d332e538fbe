"""Find where a JSON value ends in streaming text, and read tool calls out of JSON.

``JsonScan`` walks text as it grows (never rescanning) and reports the end of
the first complete object or array; ``repaired`` closes an unfinished one when
the output stops early. ``calls_in`` accepts the shapes models write calls in.
"""

from __future__ import annotations

import ast
import json
from typing import Any

__all__ = ["JsonScan", "calls_in", "loads_lenient"]

_CLOSERS = {"{": "}", "[": "]"}
_MAX_DEPTH = 200


class JsonScan:
    """Incremental scanner for the extent of one JSON object or array."""

    __slots__ = ("broken", "escape", "in_string", "pos", "stack")

    def __init__(self) -> None:
        self.pos = -1
        self.stack: list[str] = []
        self.in_string = False
        self.escape = False
        self.broken = False

    def advance(self, text: str, start: int = 0) -> int | None:
        """Scan on through ``text``; the end offset of the value once complete, else None."""
        if self.pos < 0:
            self.pos = start
        i = self.pos
        while i < len(text) and not self.broken:
            c = text[i]
            i += 1
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif c == "\\":
                    self.escape = True
                elif c == '"':
                    self.in_string = False
            elif c == '"':
                self.in_string = True
            elif c in _CLOSERS:
                self.stack.append(_CLOSERS[c])
                self.broken = len(self.stack) > _MAX_DEPTH
            elif c in "}]":
                if not self.stack or self.stack.pop() != c:
                    self.broken = True
                    self.pos = i
                    return i
                if not self.stack:
                    self.pos = i
                    return i
        self.pos = i
        return None

    def repaired(self, text: str) -> str:
        """The text scanned so far with its open string and brackets closed."""
        tail = '"' if self.in_string else ""
        return text[:self.pos] + tail + "".join(reversed(self.stack))


def loads_lenient(text: str) -> Any:
    """Parse JSON; failing that, a Python-style literal (single quotes, True/None); else None."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _arguments(value: Any) -> dict[str, Any] | None:
    if value is None:
        return {}
    if isinstance(value, str):
        value = loads_lenient(value) if value.strip() else {}
    return value if isinstance(value, dict) else None


def _one(item: Any, names: frozenset[str]) -> list[tuple[str, dict[str, Any]]] | None:
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("tool_calls"), list):
        return calls_in(item["tool_calls"], names) or None
    if isinstance(item.get("function"), dict):
        item = item["function"]
    name = item.get("name")
    if isinstance(name, str):
        args = _arguments(item.get("arguments", item.get("parameters")))
        return [(name, args)] if name in names and args is not None else None
    if len(item) == 1:  # {"get_weather": {"city": "Paris"}}
        (key, value), = item.items()
        args = _arguments(value)
        return [(key, args)] if key in names and args is not None else None
    return None


def calls_in(value: Any, names: frozenset[str]) -> list[tuple[str, dict[str, Any]]]:
    """The (name, arguments) calls a parsed JSON value holds; [] unless all of it is calls."""
    items = value if isinstance(value, list) else [value]
    out: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        found = _one(item, names)
        if not found:
            return []
        out += found
    return out
