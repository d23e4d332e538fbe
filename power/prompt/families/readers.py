"""How the bodies of tool calls are written, shared by the families: JSON, XML parameters, key/value tags.

A reader takes the text between a family's open and close tags and returns the
calls in it as (name, arguments), or None when the text is not calls at all.
``Coerce`` turns a parameter written as text into the value its schema wants.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["Calls", "Coerce", "Reader", "arg_pairs", "invoke_xml", "json_calls", "json_value",
           "named_json", "plain_coerce", "pythonic", "xml_calls", "xml_function"]

Calls = list[tuple[str, dict[str, Any]]]
Coerce = Callable[[str, str, str], Any]  # (tool, parameter, text) -> value
Reader = Callable[[str, Coerce], "Calls | None"]


def plain_coerce(tool: str, key: str, text: str) -> Any:
    """Without a schema: JSON where the text is JSON (numbers, objects), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def json_value(text: str) -> Any:
    """The JSON value the text holds (a code fence around it allowed); None when there is none."""
    text = text.strip()
    fence = re.fullmatch(r"```[a-z]*\s*(.*?)\s*```", text, re.S)
    if fence:
        text = fence.group(1)
    try:
        return json.loads(text)
    except ValueError:
        return None


def _one(obj: Any) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(obj, dict):
        return None
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name", obj.get("tool_name"))
    args = next((fn[k] for k in ("arguments", "parameters") if k in fn), {})
    if isinstance(args, str):
        args = json_value(args)
    if not isinstance(name, str) or not isinstance(args, dict):
        return None
    return name, args


def json_calls(body: str, coerce: Coerce = plain_coerce) -> Calls | None:
    """``{"name": ..., "arguments": ...}`` (or ``tool_name``/``parameters``), one, a list, or one a line."""
    value = json_value(body)
    if value is None:
        lines = [json_value(line) for line in body.strip().splitlines() if line.strip()]
        value = lines if lines and all(v is not None for v in lines) else None
    items = value if isinstance(value, list) else [value]
    calls = [_one(item) for item in items]
    return [c for c in calls if c] if calls and all(calls) else None


def named_json(body: str, coerce: Coerce = plain_coerce) -> Calls | None:
    """``[{"NAME": {arguments}}, ...]`` (Apertus)."""
    value = json_value(body)
    items = value if isinstance(value, list) else [value]
    out: Calls = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            return None
        (name, args), = item.items()
        if not isinstance(args, dict):
            return None
        out.append((name, args))
    return out or None


def _params(pairs: list[tuple[str, str]], tool: str, coerce: Coerce, strip: bool = True) -> dict[str, Any]:
    return {k.strip(): coerce(tool, k.strip(), v.strip("\n") if strip else v) for k, v in pairs}


def xml_calls(call: re.Pattern[str], par: re.Pattern[str], body: str, coerce: Coerce) -> Calls | None:
    """Calls that ``call`` matches (name, inner) whose inner is only ``par`` matches (key, string?, value)."""
    out: Calls = []
    pos = 0
    for m in call.finditer(body):
        if body[pos:m.start()].strip() or par.sub("", m.group(2)).strip():
            return None
        args: dict[str, Any] = {}
        for key, is_string, value in par.findall(m.group(2)):
            args[key.strip()] = value if is_string == "true" else (
                json_value(value) if is_string == "false" else coerce(m.group(1), key.strip(), value.strip("\n")))
        out.append((m.group(1), args))
        pos = m.end()
    return out if out and not body[pos:].strip() else None


_FUNCTION = re.compile(r"\s*<function=([^>\s]+)>(.*?)</function>\s*", re.S)
_PARAMETER = re.compile(r"<parameter=([^>]+)>()(.*?)</parameter>", re.S)


def xml_function(body: str, coerce: Coerce = plain_coerce) -> Calls | None:
    """``<function=NAME><parameter=K>V</parameter>...</function>`` (Qwen3-Coder, Seed-OSS, Nemotron 3)."""
    return xml_calls(_FUNCTION, _PARAMETER, body, coerce)


def invoke_xml(prefix: str = "", param: str = "parameter", invoke: str = "invoke") -> Reader:
    """``<invoke name="N"><parameter name="K">V</parameter></invoke>`` with a tag prefix (MiniMax-M2,
    DeepSeek's DSML, Muse); a ``string="false"`` parameter holds JSON, ``string="true"`` text."""
    p = re.escape(prefix)
    call = re.compile(rf'\s*<{p}{invoke} name="([^"]+)">(.*?)</{p}{invoke}>\s*', re.S)
    par = re.compile(rf'<{p}{param} name="([^"]+)"(?: string="(true|false)")?>(.*?)</{p}{param}>', re.S)
    return lambda body, coerce=plain_coerce: xml_calls(call, par, body, coerce)


def arg_pairs(suffix: str = "", sep: str | None = None) -> Reader:
    """``NAME<arg_key>K</arg_key><arg_value>V</arg_value>...`` (GLM 4.6+, Laguna, Ling; Hy3's ``:opensource``)."""
    s = re.escape(suffix)
    pair = re.compile(rf"<arg_key{s}>(.*?)</arg_key{s}>\s*<arg_value{s}>(.*?)</arg_value{s}>", re.S)

    def read(body: str, coerce: Coerce = plain_coerce) -> Calls | None:
        head, _, _ = body.partition(f"<arg_key{suffix}>")
        name = head.split(sep, 1)[0] if sep else head
        name = name.strip()
        if not re.fullmatch(r"[\w.\-]+", name) or pair.sub("", body[len(head):]).strip():
            return None
        return [(name, _params(pair.findall(body), name, coerce))]
    return read


_JSON_NAMES = {"true": True, "false": False, "null": None}


class _JsonNames(ast.NodeTransformer):
    """JSON's ``true``, ``false`` and ``null`` read as Python's constants."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Constant(_JSON_NAMES[node.id]) if node.id in _JSON_NAMES else node


def pythonic(body: str, coerce: Coerce = plain_coerce) -> Calls | None:
    """``[name(a='x', b=3), ...]`` (LFM2): Python literals only (and JSON's ``true``, ``false``, ``null``)."""
    try:
        tree = ast.parse(body.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None
    items = tree.elts if isinstance(tree, ast.List) else [tree]
    out: Calls = []
    for item in items:
        if not isinstance(item, ast.Call) or not isinstance(item.func, ast.Name) or item.args:
            return None
        try:
            args = {kw.arg: ast.literal_eval(_JsonNames().visit(kw.value)) for kw in item.keywords if kw.arg}
        except (ValueError, SyntaxError):
            return None
        out.append((item.func.id, args))
    return out or None
