"""JSON Schema to GBNF: the grammars that make llama.cpp's sampler emit JSON of a given shape.

``schema_to_grammar(schema)`` checks the schema (the JSON Schema meta-schema,
then bounds on size, nesting and the grammar it would make) and returns GBNF
text whose ``root`` rule produces exactly one JSON value of that shape.
``JSON_OBJECT_GRAMMAR`` is any JSON object (``format: "json"``).

This module walks the schema; the rules for a string's ``pattern`` come from
``gbnf_regex`` (over ``regex_nodes``), for its ``format`` from ``gbnf_formats``,
for numeric bounds from ``gbnf_numbers``, and the GBNF text itself (literals,
repetitions, the check on a user's grammar) from ``gbnf``. Each of those
modules says what it enforces exactly and where its grammar is wider or
narrower than the schema.

Enforced: ``type`` (one or a list), ``properties`` with ``required`` (in
declaration order; optional ones may be left out), ``additionalProperties``
(false unless given as true or a schema), ``items``/``prefixItems`` with
``minItems``/``maxItems``, ``enum``, ``const``, string ``minLength``/``maxLength``,
``anyOf``/``oneOf``, ``allOf`` of objects, ``$ref`` to ``#/$defs/...`` or
``#/definitions/...``, ``minimum``/``maximum`` and their exclusive forms
(``gbnf_numbers``), ``pattern`` (``gbnf_regex``) and ``format`` (``gbnf_formats``).

Not enforced (the grammar is wider than the schema): ``uniqueItems`` (no
grammar can say it), ``multipleOf``, ``minProperties``/``maxProperties``,
string and number keywords in a schema without ``type``, ``format`` beside a
``pattern`` (the pattern is used), ``minLength``/``maxLength`` beside a
``pattern`` or ``format`` where they cannot be fitted exactly
(``regex_nodes.fit_lengths``), and a ``maxItems`` or ``maxLength`` above
``REPEAT_MAX`` (a minimum above it is refused).

A recursive ``$ref`` is refused: a grammar for it could never be bounded.
Every refusal is an ``InvalidRequest`` (400) that names the problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from power.errors import InvalidRequest
from power.prompt.grammars.gbnf import (
    MAX_USER_GRAMMAR,
    REPEAT_MAX,
    check_gbnf,
    gbnf_literal,
    repeat,
)
from power.prompt.grammars.formats import FORMATS
from power.prompt.grammars.numbers import NumberRange, numeric_bounds
from power.prompt.grammars.regex import MAX_PATTERN, PatternWriter, parse_pattern
from power.prompt.grammars.regex_nodes import fit_lengths

__all__ = ["FORMATS", "JSON_OBJECT_GRAMMAR", "MAX_DEPTH", "MAX_NODES", "MAX_PATTERN", "MAX_RULES", "MAX_USER_GRAMMAR",
           "REPEAT_MAX", "GrammarBuilder", "check_gbnf", "check_schema", "gbnf_literal", "measure_schema",
           "schema_to_grammar"]

MAX_DEPTH = 32  # nesting of the schema document
MAX_NODES = 20_000  # values in the schema document
MAX_RULES = 2_000  # rules in the grammar
MAX_GRAMMAR = 256 * 1024  # characters of grammar text

PRIMITIVES: dict[str, str] = {
    "space": '| " " | "\\n" [ \\t]{0,20}',
    "boolean": '("true" | "false") space',
    "null": '"null" space',
    "integer": '("-"? ([0-9] | [1-9] [0-9]{0,15})) space',
    "uint": '([0-9] | [1-9] [0-9]{0,15}) space',
    "number": '("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})? space',
    "char": '[^"\\\\\\x7F\\x00-\\x1F\\uD800-\\uDFFF] | [\\\\] (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "string": '"\\"" char* "\\"" space',
    "value": 'object | array | string | number | boolean | null',
    "object": '"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space',
    "array": '"[" space ( value ("," space value)* )? "]" space',
}
_DEPENDS = {"boolean": ["space"], "null": ["space"], "integer": ["space"], "uint": ["space"],
            "number": ["space"], "string": ["char", "space"], "char": [],
            "value": ["object", "array", "string", "number", "boolean", "null"],
            "object": ["space", "string", "value"], "array": ["space", "value"], "space": []}
_TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")
_NAME_BAD = re.compile(r"[^A-Za-z0-9]+")


def measure_schema(schema: Any, where: str) -> None:
    """Refuse a schema document that is too deep or too big, without recursion."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InvalidRequest(f"{where} is too large (more than {MAX_NODES} values)")
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"{where} nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def check_schema(schema: Any, where: str = "JSON schema") -> None:
    """Bounds first, then the JSON Schema meta-schema: InvalidRequest naming the problem."""
    if not isinstance(schema, (Mapping, bool)):
        raise InvalidRequest(f"invalid {where}: expected an object")
    measure_schema(schema, where)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path)
        raise InvalidRequest(f"invalid {where}: {exc.message[:200]}" + (f" at {path}" if path else "")) from None
    except RecursionError:
        raise InvalidRequest(f"{where} nests too deeply") from None


class GrammarBuilder:
    """Rules accumulated while converting schemas; ``text()`` renders the grammar."""

    def __init__(self, root: Mapping[str, Any] | bool | None = None, where: str = "JSON schema") -> None:
        self.root_doc = root
        self.where = where
        self.rules: dict[str, str] = {}
        self._refs: dict[str, str] = {}
        self._expanding: list[str] = []
        self._shared: dict[tuple[Any, ...], str] = {}  # rules of ranges, patterns and formats, by their inputs
        self._patterns = PatternWriter(self)

    def document(self, root: Mapping[str, Any] | bool, where: str) -> None:
        """Convert schemas of another document next (its own ``$defs``) into the same grammar."""
        self.root_doc, self.where = root, where
        self._refs, self._expanding = {}, []

    # -- rules --
    def primitive(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = PRIMITIVES[name]
            for dep in _DEPENDS[name]:
                self.primitive(dep)
        return name

    def add(self, hint: str, body: str) -> str:
        """Add a rule under a fresh name derived from ``hint``; return its name."""
        base = _NAME_BAD.sub("-", hint).strip("-") or "r"
        name, n = base, 1
        while name in self.rules or name in PRIMITIVES:
            n += 1
            name = f"{base}-{n}"
        if len(self.rules) >= MAX_RULES:
            raise InvalidRequest(f"{self.where} needs more than {MAX_RULES} grammar rules")
        self.rules[name] = body
        return name

    def text(self, root_body: str) -> str:
        lines = [f"root ::= {root_body}"] + [f"{k} ::= {v}" for k, v in self.rules.items()]
        text = "\n".join(lines) + "\n"
        if len(text) > MAX_GRAMMAR:
            raise InvalidRequest(f"{self.where} makes a grammar over {MAX_GRAMMAR} characters")
        return text

    # -- schemas --
    def visit(self, schema: Any, hint: str) -> str:
        """A grammar expression for one JSON value matching ``schema``."""
        if schema is True or schema == {} or schema is None:
            return self.primitive("value")
        if schema is False:
            raise InvalidRequest(f"invalid {self.where}: a false schema at {hint} matches nothing")
        if not isinstance(schema, Mapping):
            raise InvalidRequest(f"invalid {self.where}: expected an object at {hint}")
        if "$ref" in schema:
            return self._ref(str(schema["$ref"]))
        if "const" in schema:
            return self._literal_value(schema["const"])
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise InvalidRequest(f"invalid {self.where}: enum at {hint} must be a non-empty array")
            return "(" + " | ".join(self._literal_value(v) for v in values) + ")"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                alts = [self.visit(s, f"{hint}-{i}") for i, s in enumerate(schema[key])]
                return self.add(hint, " | ".join(alts))
        if "allOf" in schema:
            return self.visit(_merge_all_of(schema, self.where), hint)
        kind = schema.get("type")
        if isinstance(kind, list):
            alts = [self.visit({**schema, "type": k}, f"{hint}-{k}") for k in kind]
            return self.add(hint, " | ".join(alts)) if len(alts) > 1 else alts[0]
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema or "required" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                return self.primitive("value")
        if kind not in _TYPES:
            raise InvalidRequest(f"invalid {self.where}: unknown type {str(kind)[:20]!r} at {hint}")
        if kind == "object":
            return self._object(schema, hint)
        if kind == "array":
            return self._array(schema, hint)
        if kind == "string":
            return self._string(schema, hint)
        if kind in ("integer", "number"):
            return self._numeric(schema, kind, hint)
        return self.primitive(kind)

    def _literal_value(self, value: Any) -> str:
        self.primitive("space")
        return gbnf_literal(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) + " space"

    def _ref(self, ref: str) -> str:
        if ref in self._refs:
            return self._refs[ref]
        if ref in self._expanding:
            raise InvalidRequest(f"invalid {self.where}: recursive $ref {ref[:80]!r} is not supported")
        m = re.fullmatch(r"#/(\$defs|definitions)/([^/]+)", ref)
        if m is None or not isinstance(self.root_doc, Mapping):
            raise InvalidRequest(f"invalid {self.where}: only local $ref to #/$defs/... is supported, "
                                 f"not {ref[:80]!r}")
        defs = self.root_doc.get(m.group(1))
        name = m.group(2).replace("~1", "/").replace("~0", "~")
        if not isinstance(defs, Mapping) or name not in defs:
            raise InvalidRequest(f"invalid {self.where}: $ref {ref[:80]!r} points at nothing")
        self._expanding.append(ref)
        try:
            expr = self.visit(defs[name], f"def-{name}")
        finally:
            self._expanding.pop()
        self._refs[ref] = expr
        return expr

    def _numeric(self, schema: Mapping[str, Any], kind: str, hint: str) -> str:
        lo, hi = numeric_bounds(schema, kind == "integer", self.where, hint)
        if lo is None and hi is None:
            return self.primitive(kind)
        if kind == "integer" and hi is None and lo is not None and lo.value == 0:
            return self.primitive("uint")
        key = (kind, lo, hi)
        if key not in self._shared:
            self.primitive("space")
            body = NumberRange(self, f"{hint}-{kind}", kind == "integer").expression(lo, hi)
            self._shared[key] = self.add(f"{hint}-{kind}", f"({body}) space")
        return self._shared[key]

    def _string(self, schema: Mapping[str, Any], hint: str) -> str:
        lo = _lower(schema.get("minLength"), self.where, hint)
        hi = _upper(schema.get("maxLength"), self.where, hint)
        pattern, fmt = schema.get("pattern"), schema.get("format")
        if isinstance(pattern, str):
            key: tuple[Any, ...] = ("pattern", pattern, lo, hi)
        elif isinstance(fmt, str) and fmt in FORMATS:
            key, pattern = ("format", fmt, lo, hi), FORMATS[fmt]
        elif lo == 0 and hi is None:
            return self.primitive("string")
        else:
            self.primitive("char")
            self.primitive("space")
            return self.add(f"{hint}-string", f'"\\"" {repeat("char", lo, hi)} "\\"" space')
        if key not in self._shared:
            if hi is not None and hi < lo:
                raise InvalidRequest(f"invalid {self.where}: a maximum length is below its minimum at {hint}")
            node = fit_lengths(parse_pattern(pattern, self.where, hint), lo, hi, self.where, hint)
            self.primitive("space")
            self._shared[key] = self.add(f"{hint}-string", f'"\\"" {self._patterns.term(node, hint)} "\\"" space')
        return self._shared[key]

    def _object(self, schema: Mapping[str, Any], hint: str) -> str:
        props = schema.get("properties") or {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        extra = schema.get("additionalProperties", not (props or required))
        if not props and not required and extra is True:
            return self.primitive("object")
        self.primitive("space")
        items: list[tuple[str, str]] = []  # (key-value expression, "req" | "opt" | "many")
        names = list(props) + [r for r in required if r not in props]
        for name in names:
            value = self.visit(props.get(name, True), f"{hint}-{name}")
            kv = self.add(f"{hint}-{name}-kv", f'{self._literal_value(name)} ":" space {value}')
            items.append((kv, "req" if name in required else "opt"))
        if extra is not False:
            value = self.visit(extra, f"{hint}-additional")
            self.primitive("string")
            items.append((self.add(f"{hint}-additional-kv", f'string ":" space {value}'), "many"))
        return self.add(hint, f'"{{" space {self.members(items, hint)} "}}" space')

    def members(self, items: list[tuple[str, str]], hint: str, sep: str = '"," space') -> str:
        """Members in order, ``sep`` between them whichever optional ones are present (linear size).

        ``items``: (expression, "req" | "opt" | "many").
        """
        after: dict[int, str] = {len(items): ""}  # i: the rest from i, something already written

        def rest(i: int) -> str:
            if i not in after:
                kv, how = items[i]
                step = {"req": f"{sep} {kv}".strip(), "opt": f"({sep} {kv})?",
                        "many": f"({sep} {kv})*"}[how]
                tail = rest(i + 1)
                after[i] = self.add(f"{hint}-after-{i}", f"{step} {tail}") if tail else step
            return after[i]

        for i in range(len(items) - 1, 0, -1):  # fill from the back: no deep recursion
            rest(i)
        last = next((i for i, (_, how) in enumerate(items) if how == "req"), len(items) - 1)
        first = ""  # the rest from i, nothing written yet
        for i in range(last, -1, -1):
            kv, how = items[i]
            body = f"{kv} {rest(i if how == 'many' else i + 1)}".strip()
            if how == "req":
                first = body
            elif i == 0:
                first = f"({body} | {first})" if first else f"({body})?"
            else:
                first = self.add(f"{hint}-from-{i}", f"{body} | {first}" if first else f"({body})?")
        return first

    def _array(self, schema: Mapping[str, Any], hint: str) -> str:
        self.primitive("space")
        prefix = [self.visit(s, f"{hint}-{i}") for i, s in enumerate(schema.get("prefixItems") or [])]
        items_schema = schema.get("items", True)
        lo = _lower(schema.get("minItems"), self.where, hint)
        hi = _upper(schema.get("maxItems"), self.where, hint)
        if prefix:
            body = ' "," space '.join(prefix)
            if items_schema is not False:
                item = self.visit(items_schema, f"{hint}-item")
                more_hi = None if hi is None else max(0, hi - len(prefix))
                body += " " + repeat(f'("," space {item})', max(0, lo - len(prefix)), more_hi)
            return self.add(hint, f'"[" space {body} "]" space')
        if items_schema is False or hi == 0:
            return self.add(hint, '"[" space "]" space')
        item = self.visit(items_schema, f"{hint}-item")
        tail = repeat(f'("," space {item})', max(0, lo - 1), None if hi is None else hi - 1)
        body = f"{item} {tail}"
        if lo == 0:
            body = f"({body})?"
        return self.add(hint, f'"[" space {body} "]" space')


def _bound(value: Any, where: str, hint: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"invalid {where}: a length bound at {hint} must be a non-negative integer")
    return value


def _lower(value: Any, where: str, hint: str) -> int:
    """A minimum count; one too large to expand is refused rather than silently not enforced."""
    lo = _bound(value, where, hint) or 0
    if lo > REPEAT_MAX:
        raise InvalidRequest(f"{where}: a minimum length of {lo} at {hint} exceeds {REPEAT_MAX}")
    return lo


def _upper(value: Any, where: str, hint: str) -> int | None:
    """A maximum count; one too large to expand is left to the model (None)."""
    hi = _bound(value, where, hint)
    return None if hi is None or hi > REPEAT_MAX else hi


def _merge_all_of(schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, Mapping) or part.get("type", "object") != "object" or "$ref" in part:
            raise InvalidRequest(f"invalid {where}: allOf is supported for object schemas only")
        merged["type"] = "object"
        merged["properties"] = {**(merged.get("properties") or {}), **(part.get("properties") or {})}
        merged["required"] = list(merged.get("required") or []) + list(part.get("required") or [])
    return merged


def schema_to_grammar(schema: Mapping[str, Any] | bool, where: str = "JSON schema") -> str:
    """GBNF whose ``root`` is one JSON value valid for ``schema`` (checked and bounded first)."""
    check_schema(schema, where)
    builder = GrammarBuilder(schema, where)
    return builder.text(builder.visit(schema, "root-value"))


def _any_object() -> str:
    builder = GrammarBuilder()
    return builder.text(builder.primitive("object"))


JSON_OBJECT_GRAMMAR = _any_object()
