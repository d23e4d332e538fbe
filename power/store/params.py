"""Model parameters (Modelfile ``PARAMETER``, the params layer): types, parsing, Go formatting.

Values are typed the way Ollama's ``api.FormatParams`` types them (ints,
float32s, bools, ``stop`` as a list), and ``show``'s ``parameters`` text is
printed the way Go's ``%-30s %#v`` prints it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any, Iterable, Mapping

from power.engine.options import DEPRECATED, OPTIONS, check_option
from power.errors import InvalidRequest
from power.store.ggml_types import f32_shortest

__all__ = [
    "PARAMETER_TYPES", "DEPRECATED_PARAMETERS", "parse_parameter", "coerce_parameter",
    "merge_parameters", "format_parameters", "go_quote", "go_value",
]

_KINDS = {int: "int", float: "float", bool: "bool", list: "list"}
# name -> "int" | "float" | "bool" | "list": the engine's option table, so both check the same types and ranges.
PARAMETER_TYPES: dict[str, str] = {name: _KINDS[o.kind] for name, o in OPTIONS.items()}
DEPRECATED_PARAMETERS = DEPRECATED

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_INT64 = 1 << 63


def parse_parameter(name: str, text: str) -> Any:
    """Type one textual value (``PARAMETER name text``) as Go's strconv would."""
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        raise InvalidRequest(f"unknown parameter '{name}'")
    if kind == "int":
        # int() of thousands of digits is slow and then refuses: no int64 has more than 19
        if not _INT.fullmatch(text) or len(text.lstrip("+-0")) > 19 or not -_INT64 <= int(text) < _INT64:
            raise InvalidRequest(f"invalid int value [{text}]")
        check_option(name, int(text))
        return int(text)
    if kind == "float":
        value = float(text) if _FLOAT.fullmatch(text) else math.nan
        if not math.isfinite(value) or abs(value) > 3.4028234663852886e38:
            raise InvalidRequest(f"invalid float value [{text}]")
        check_option(name, value)
        return f32_shortest(value)
    if kind == "bool":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise InvalidRequest(f"invalid bool value [{text}]")
    return text


def coerce_parameter(name: str, value: Any) -> Any:
    """Check a JSON parameter value (from ``/api/create``) against its type."""
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        raise InvalidRequest(f"unknown parameter '{name}'")
    if kind == "list":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise InvalidRequest(f"parameter '{name}' must be a list of strings")
        return list(items)
    if isinstance(value, str):
        return parse_parameter(name, value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
            check_option(name, value)
            return int(value)
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            check_option(name, value)
            return value
    raise InvalidRequest(f"option \"{name}\" must be of type {_GO_TYPES[kind]}")


_GO_TYPES = {"int": "integer", "float": "float32", "bool": "boolean", "str": "string", "list": "array"}


def merge_parameters(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Type ``(name, text)`` pairs in order; repeated ``stop`` lines gather into one list."""
    out: dict[str, Any] = {}
    for name, text in pairs:
        value = parse_parameter(name, text)
        if PARAMETER_TYPES[name] == "list":
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def go_quote(text: str) -> str:
    """Quote a string as Go's strconv.Quote does."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch == " " or (ch.isprintable() and code != 0x7F):
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_value(value: Any) -> str:
    """Format a JSON-decoded value as Go's ``%#v`` formats it (numbers are float64 there)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, (int, float)):
        return _go_float(float(value))
    return str(value)


def _go_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    # repr() gives the shortest round-trip digits, as strconv's shortest mode does.
    sign, raw_digits, exponent = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)
    full = "".join(map(str, raw_digits))
    point = len(full) + exponent  # value = 0.<full> * 10**point
    digits = full.rstrip("0")
    exp = point - 1
    prefix = "-" if value < 0 else ""
    if exp < -4 or exp >= 6:  # %v uses precision 6 to choose %e for shortest output
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{head}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def format_parameters(params: Mapping[str, Any]) -> str:
    """Render the ``parameters`` text of ``/api/show``: one ``name value`` line per value."""
    lines: list[str] = []
    for name, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name:<30} {go_value(item)}")
    return "\n".join(lines)
