"""A forced tool call in its family's own syntax (``Family.forced``), as GBNF.

The texts around the name and the arguments are literals (where a family says
so, their newlines optional: its templates differ in little more than that), a
``CALL_ID`` any id. Arguments are one JSON object from the tool's parameter
schema, or (``Params``) one parameter after another in the schema's order, the
required ones always, the others maybe: a string as raw text that holds none of
the family's closing tags (as llama.cpp's parsers read them; only ``enum`` and
``const`` bound it), anything else as JSON of its schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from power.prompt.families.family import CALL_ID, PARAM_KEY, Family, Forced, Params
from power.prompt.grammars.gbnf import gbnf_literal
from power.prompt.grammars.schema import GrammarBuilder, check_schema
from power.prompt.grammars.thinking import text_without

__all__ = ["each_tool", "family_call_grammar"]


def _text(text: str, loose: bool = False) -> str:
    """``text`` as GBNF, its ``CALL_ID`` any id (and with ``loose``, its newlines optional)."""
    parts: list[str] = []
    for i, chunk in enumerate(text.split(CALL_ID)):
        if i:
            parts.append("call-id")
        if not loose:
            parts.append(gbnf_literal(chunk) if chunk else "")
            continue
        for j, line in enumerate(chunk.split("\n")):
            if j:
                parts.append('"\\n"?')
            if line:
                parts.append(gbnf_literal(line))
    return " ".join(p for p in parts if p) or '""'


def _is_string(schema: Any) -> bool:
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


def _choices(schema: Mapping[str, Any]) -> str | None:
    """A string parameter's ``enum`` (or ``const``) as literal alternatives, when it has only strings."""
    values = schema.get("enum") if "enum" in schema else [schema["const"]] if "const" in schema else None
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        return None
    return "(" + " | ".join(gbnf_literal(v) for v in values) + ")"


class _Writer:
    """The rules of one grammar: calls of each tool in each of the family's syntaxes."""

    def __init__(self, family: Family, builder: GrammarBuilder) -> None:
        self.family, self.builder = family, builder
        self.raws: dict[tuple[str, ...], str] = {}

    def raw(self, excludes: tuple[str, ...]) -> str:
        """Raw text holding none of ``excludes`` (rules shared by every parameter that needs them)."""
        excludes = tuple(sorted({e for e in excludes if e}))
        if excludes not in self.raws:
            prefix = f"raw-text-{len(self.raws)}"
            for line in text_without(excludes, prefix):
                name, _, body = line.partition(" ::= ")
                self.builder.rules[name] = body
            self.raws[excludes] = f"{prefix}-0"
        return self.raws[excludes]

    def call(self, syntax: Forced, name: str, params: Any) -> str:
        lit = partial(_text, loose=syntax.loose)
        shown = json.dumps(name, ensure_ascii=False)[1:-1] if syntax.name_json else name
        if syntax.params is None:
            args = self.builder.visit(params, f"{name}-arguments")
        else:
            args = self.params(syntax.params, name, params, lit)
        body = f"{lit(syntax.before)} {gbnf_literal(shown)} {lit(syntax.between)} {args} {lit(syntax.after)}"
        if syntax.lead is not None:
            opening, end = syntax.lead
            body = f"({lit(opening)} {self.raw(('<|',))} {lit(end)})? {body}"
        return self.builder.add(f"{name}-call", body)

    def params(self, p: Params, tool: str, schema: Any, lit: Callable[[str], str]) -> str:
        props = schema.get("properties") if isinstance(schema, Mapping) else None
        props = props if isinstance(props, Mapping) else {}
        required = schema.get("required") if isinstance(schema, Mapping) else None
        required = set(required) if isinstance(required, list) else set()
        closing = (p.quote,) if p.quote else (p.close.split(PARAM_KEY)[0].strip(),)
        raw = self.raw((*closing, *p.raw_excludes, self.family.close or ""))
        items: list[tuple[str, str]] = []
        for key, sub in props.items():
            if _is_string(sub):
                text = _choices(sub) or raw
                value, between = (f"{lit(p.quote)} {text} {lit(p.quote)}" if p.quote else text), p.value
            else:
                value, between = self.builder.visit(sub, f"{tool}-{key}"), p.json_value or p.value
            close = lit(p.close.replace(PARAM_KEY, key))
            rule = f"{lit(p.key)} {gbnf_literal(key)} {lit(between)} {value} {close}"
            items.append((self.builder.add(f"{tool}-{key}-param", rule), "req" if key in required else "opt"))
        if not items:
            return '""'
        return self.builder.members(items, f"{tool}-params", lit(p.sep) if p.sep else "")


def family_call_grammar(family: Family, tools: Sequence[Mapping[str, Any]], builder: GrammarBuilder) -> str:
    """GBNF for exactly one call of one of ``tools`` in ``family``'s own syntax."""
    writer = _Writer(family, builder)
    if any(CALL_ID in s.before + s.between + s.after for s in family.call_syntaxes):
        builder.rules["call-id"] = "[A-Za-z0-9_-]{1,40}"
    calls = [writer.call(syntax, name, params) for name, params in each_tool(tools, builder)
             for syntax in family.call_syntaxes]
    return builder.text(" | ".join(calls))


def each_tool(tools: Sequence[Mapping[str, Any]], builder: GrammarBuilder) -> Iterator[tuple[str, Any]]:
    """Each tool's name and parameter schema, checked, and the builder reading that schema's document."""
    for tool in tools:
        fn = tool["function"]
        name = fn["name"]
        params = fn.get("parameters") or {"type": "object"}
        where = f"parameters of tool {name[:60]!r}"
        check_schema(params, where)
        builder.document(params, where)
        yield name, params
