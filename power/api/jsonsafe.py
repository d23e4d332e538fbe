"""Decode untrusted JSON bodies totally: every failure is an ``InvalidRequest`` naming the problem.

Python's decoder accepts ``NaN`` and ``Infinity``, builds integers of any length
(slowly, then refuses past 4,300 digits with a ValueError), recurses once per
nesting level, and turns an escape such as ``"\ud800"`` into a lone UTF-16
surrogate: a str that no UTF-8 encoder, tokenizer or file write accepts. None
of that may reach a handler (P6, P11): constants are refused, numbers are
capped in length, nesting is capped in depth, strings (keys too) with a lone
surrogate are refused, and only objects are accepted at the top.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from power.errors import InvalidRequest

__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "decode_body", "loads"]

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 40


def _parse_constant(name: str) -> Any:
    raise InvalidRequest(f"invalid JSON: {name} is not a valid JSON value")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_CHARS:
        raise InvalidRequest(f"invalid JSON: number with {len(text)} digits is too long")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS * 2:
        raise InvalidRequest(f"invalid JSON: number with {len(text)} characters is too long")
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequest(f"invalid JSON: number {text[:20]} is out of range")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(value: Any) -> None:
    """Refuse a string (or key) holding a lone surrogate, naming its place (a paired one decodes to one character)."""
    todo: list[tuple[Any, str]] = [(value, "")]
    while todo:
        item, where = todo.pop()
        if isinstance(item, dict):
            for key, v in item.items():
                place = f"{where}.{key}" if where else str(key)
                todo.append((key, f"{where or 'body'} key"))
                todo.append((v, place))
        elif isinstance(item, list):
            todo.extend((v, f"{where}.{i}") for i, v in enumerate(item))
        elif isinstance(item, str):
            m = _SURROGATE.search(item)
            if m is not None:
                shown = where.encode("utf-8", "backslashreplace").decode("utf-8")
                raise InvalidRequest(f"invalid JSON: {shown}: a lone surrogate (\\u{ord(m.group()):04x}) is not text")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _check_nesting(text: str, limit: int) -> None:
    """Refuse nesting deeper than ``limit`` before the recursive decoder sees it."""
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            if depth > limit:
                raise InvalidRequest(f"invalid JSON: nesting deeper than {limit} levels")
        else:
            depth -= 1


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode JSON text with the limits above; raise InvalidRequest on any problem."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"invalid JSON: not UTF-8 at byte {exc.start}") from exc
    if text.count("[") + text.count("{") > max_depth:
        _check_nesting(text, max_depth)
    try:
        value = json.loads(text, parse_constant=_parse_constant, parse_int=_parse_int,
                           parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:  # belt and braces: _check_nesting should have caught it
        raise InvalidRequest(f"invalid JSON: nesting deeper than {max_depth} levels") from exc
    except ValueError as exc:
        raise InvalidRequest(f"invalid JSON: {exc}") from exc
    if _SURROGATE_ESCAPE.search(text):  # only an escape can make one: UTF-8 input cannot hold a surrogate
        _check_text(value)
    return value


def decode_body(data: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object (Ollama's messages for the common faults)."""
    if not data or not data.strip():
        raise InvalidRequest("missing request body")
    value = loads(data)
    if not isinstance(value, dict):
        raise InvalidRequest(f"invalid JSON: expected an object, got {type(value).__name__}")
    return value
