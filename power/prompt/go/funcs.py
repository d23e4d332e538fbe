"""Values and functions of Ollama's Go templates: printing, comparison, builtins.

Template data is plain Python: dicts (Go structs and maps), lists, strings,
numbers, bools and None (a zero value). Printing follows Go's ``fmt`` for
scalars and lists of scalars; dicts and lists holding dicts print as JSON,
which is what Ollama's tool types do through their ``String`` methods.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from power.errors import TemplateError

__all__ = [
    "FUNCS",
    "compare_eq",
    "field_of",
    "go_json",
    "go_str",
    "to_typescript_type",
    "truth",
]

_MAX_WIDTH = 1000  # printf width/precision cap: "%0999999999d" must not eat memory


def go_json(value: Any) -> str:
    """Marshal like Go's ``encoding/json``: compact, with <, > and & escaped."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError) as exc:
        raise TemplateError(f"json: {exc}") from exc
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _holds_mapping(value: list[Any]) -> bool:
    return any(isinstance(v, dict) or (isinstance(v, list) and _holds_mapping(v)) for v in value)


def _go_float(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x.is_integer() and abs(x) < 1e21:
        return str(int(x))
    text = repr(x)
    if "e" in text:
        mant, exp = text.split("e")
        sign = exp[0] if exp[0] in "+-" else "+"
        text = f"{mant}e{sign}{exp.lstrip('+-').rjust(2, '0')}"
    return text


def go_str(value: Any) -> str:
    """Print a value the way ``{{ . }}`` would."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, dict):
        return go_json(value)
    if isinstance(value, (list, tuple)):
        if _holds_mapping(list(value)):
            return go_json(value)
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def truth(value: Any) -> bool:
    """Go's truth: false, zero, nil and empty things are false."""
    if value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def field_of(value: Any, name: str) -> Any:
    """Evaluate ``.name`` on a value; a missing key is a zero value (None)."""
    if value is None:
        return None
    if isinstance(value, dict):
        if name in value:
            return value[name]
        snake = _SNAKE.sub("_", name).lower()
        if snake in value:
            return value[snake]
        return value.get(name[:1].lower() + name[1:])
    raise TemplateError(f"can't evaluate field {name} in type {_go_type(value)}")


def _go_type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string", list: "[]interface {}",
            dict: "map[string]interface {}"}.get(type(value), type(value).__name__)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if _number(a) and _number(b):
        return bool(a == b)
    if type(a) is not type(b) and a is not None and b is not None:
        raise TemplateError(f"incompatible types for comparison: {_go_type(a)} and {_go_type(b)}")
    if isinstance(a, (dict, list)):
        raise TemplateError("non-comparable type in eq")
    return bool(a == b)


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    return any(compare_eq(first, o) for o in others)


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return op(a, b)
        raise TemplateError(f"incompatible types for comparison: {_go_type(a)} and {_go_type(b)}")
    return compare


def _len(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, (str, list, tuple, dict)):
        return len(value.encode() if isinstance(value, str) else value)
    raise TemplateError(f"len of type {_go_type(value)}")


def _index_int(i: Any, size: int, cap: int | None = None) -> int:
    if not isinstance(i, int) or isinstance(i, bool):
        raise TemplateError(f"cannot index slice/array with type {_go_type(i)}")
    if i < 0 or i > (size - 1 if cap is None else cap):
        raise TemplateError(f"index out of range: {i}")
    return i


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, (list, tuple)):
            value = value[_index_int(key, len(value))]
        elif isinstance(value, str):
            raw = value.encode()
            value = raw[_index_int(key, len(raw))]
        elif value is None:
            raise TemplateError("index of untyped nil")
        else:
            raise TemplateError(f"can't index item of type {_go_type(value)}")
    return value


def _slice(value: Any, *bounds: Any) -> Any:
    if not isinstance(value, (str, list, tuple)):
        raise TemplateError(f"can't slice item of type {_go_type(value)}")
    if len(bounds) > 2:
        raise TemplateError("too many slice indexes")
    size = len(value)
    lo = _index_int(bounds[0], size, size) if bounds else 0
    hi = _index_int(bounds[1], size, size) if len(bounds) > 1 else size
    if lo > hi:
        raise TemplateError(f"invalid slice index: {lo} > {hi}")
    return value[lo:hi]


def _not(value: Any) -> bool:
    return not truth(value)


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def _printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise TemplateError("printf: format must be a string")
    queue = list(args)
    out: list[str] = []
    pos = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if width == "*":
            width = str(queue.pop(0)) if queue else "0"
        if prec == "*":
            prec = str(queue.pop(0)) if queue else "0"
        if (width and int(width) > _MAX_WIDTH) or (prec and int(prec) > _MAX_WIDTH):
            raise TemplateError("printf: width or precision too large")
        if not queue:
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_format_one(queue.pop(0), flags, width, prec, verb))
    out.append(fmt[pos:])
    if queue:
        out.append("%!(EXTRA " + ", ".join(go_str(a) for a in queue) + ")")
    return "".join(out)


def _format_one(arg: Any, flags: str, width: str | None, prec: str | None, verb: str) -> str:
    spec_prec = f".{prec}" if prec is not None else ""
    if verb in "dxXobc" and isinstance(arg, int) and not isinstance(arg, bool):
        body = chr(arg) if verb == "c" and 0 <= arg < 0x110000 else format(arg, "d" if verb == "c" else verb)
    elif verb in "eEfFgG" and _number(arg):
        body = format(float(arg), (spec_prec or (".6" if verb in "eEfF" else "")) + verb)
    elif verb == "q":
        body = json.dumps(go_str(arg) if not isinstance(arg, str) else arg, ensure_ascii=False)
    elif verb == "t" and isinstance(arg, bool):
        body = go_str(arg)
    elif verb == "T":
        body = _go_type(arg)
    elif verb in "vs" or (verb in "xX" and isinstance(arg, str)):
        body = go_str(arg)
        if verb in "xX":
            body = body.encode().hex().upper() if verb == "X" else body.encode().hex()
        elif prec is not None:
            body = body[:int(prec)]
    else:
        body = f"%!{verb}({_go_type(arg)}={go_str(arg)})"
    if width:
        w = int(width)
        if "-" in flags:
            body = body.ljust(w)
        elif "0" in flags and _number(arg):
            sign = body[0] if body[:1] in "+-" else ""
            body = sign + body[len(sign):].rjust(w - len(sign), "0")
        else:
            body = body.rjust(w)
    return body


def _sprint(*args: Any) -> str:
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_str(arg))
    return "".join(out)


def _sprintln(*args: Any) -> str:
    return " ".join(go_str(a) for a in args) + "\n"


def _html(*args: Any) -> str:
    text = _sprint(*args)
    for a, b in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;")):
        text = text.replace(a, b)
    return text.replace("\0", "\uFFFD")


_JS = {"\\": "\\\\", "'": "\\'", '"': "\\\"", "<": "\\u003C", ">": "\\u003E", "&": "\\u0026",
       "=": "\\u003D", "\n": "\\u000A", "\r": "\\u000D", "\t": "\\u0009"}


def _js(*args: Any) -> str:
    return "".join(_JS.get(c) or (f"\\u{ord(c):04X}" if ord(c) < 32 else c) for c in _sprint(*args))


def _urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_sprint(*args))


def _json_func(value: Any) -> str:
    return go_json(value)


def _current_date() -> str:
    return _dt.date.today().isoformat()


def _yesterday_date() -> str:
    return (_dt.date.today() - _dt.timedelta(days=1)).isoformat()


_TS_SCALARS = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
               "null": "null", "object": "Record<string, any>"}


def to_typescript_type(prop: Any) -> str:
    """Describe a JSON-schema property as a TypeScript type (Ollama's ``toTypeScriptType``)."""
    if not isinstance(prop, dict):
        return "any"
    any_of = prop.get("anyOf") or prop.get("any_of")
    if isinstance(any_of, list) and any_of:
        return " | ".join(to_typescript_type(p) for p in any_of)
    kinds = prop.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    enum = prop.get("enum")
    parts: list[str] = []
    for kind in kinds or ["any"]:
        if kind == "string" and isinstance(enum, list) and enum:
            parts.append(" | ".join(json.dumps(str(e), ensure_ascii=False) for e in enum))
        elif kind == "array":
            inner = to_typescript_type(prop.get("items")) if prop.get("items") else "any"
            parts.append(f"({inner})[]" if " | " in inner else f"{inner}[]")
        else:
            parts.append(_TS_SCALARS.get(str(kind), "any"))
    return " | ".join(parts)


FUNCS: dict[str, Callable[..., Any]] = {
    "eq": _eq,
    "ne": lambda a, b: not compare_eq(a, b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "not": _not,
    "len": _len,
    "index": _index,
    "slice": _slice,
    "printf": _printf,
    "print": _sprint,
    "println": _sprintln,
    "html": _html,
    "js": _js,
    "urlquery": _urlquery,
    "json": _json_func,
    "currentDate": _current_date,
    "yesterdayDate": _yesterday_date,
    "toTypeScriptType": to_typescript_type,
}
