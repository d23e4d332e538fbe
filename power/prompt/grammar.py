"""JSON Schema to GBNF: the grammars that make llama.cpp's sampler emit JSON of a given shape.

``schema_to_grammar(schema)`` checks the schema (the JSON Schema meta-schema,
then bounds on size, nesting and the grammar it would make) and returns GBNF
text whose ``root`` rule produces exactly one JSON value of that shape.
``JSON_OBJECT_GRAMMAR`` is any JSON object (``format: "json"``).

Enforced: ``type`` (one or a list), ``properties`` with ``required`` (in
declaration order; optional ones may be left out), ``additionalProperties``
(false unless given as true or a schema), ``items``/``prefixItems`` with
``minItems``/``maxItems``, ``enum``, ``const``, string ``minLength``/``maxLength``,
``anyOf``/``oneOf``, ``allOf`` of objects, ``$ref`` to ``#/$defs/...`` or
``#/definitions/...``, and:

* ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` of
  integers and numbers, any sign and combination: digit-range rules, exact;
* ``pattern``, an ECMAScript regular expression made of literals, escapes,
  ``.``, classes (ranges, negation, ``\\d \\w \\s`` and their negations),
  groups, alternation and the quantifiers ``? * + {n} {n,} {n,m}`` (lazy ones
  too). ``^`` and ``$`` anchor the edges of the pattern or of a top-level
  alternative; an unanchored side may hold any characters, since a JSON Schema
  pattern searches the string. Other features (lookaround, backreferences,
  ``\\b``, inline flags) are refused, naming the feature;
* ``format``: ``date``, ``time``, ``date-time`` (RFC 3339, month lengths and
  leap years included), ``uuid`` and ``ipv4`` exactly; ``hostname``, ``email``
  and ``uri`` as common subsets, so every string written is valid but not every
  valid one can be written (no IP literals, quoted local parts, international
  names, or hostnames of more than four labels).

Not enforced (the grammar is wider than the schema): ``uniqueItems`` (no
grammar can say it), ``multipleOf``, ``minProperties``/``maxProperties``,
string and number keywords in a schema without ``type``, other formats,
``format`` beside a ``pattern`` (the pattern is used), the 64-character limit
of an email's local part, ``minLength``/``maxLength`` beside a ``pattern`` or
``format`` unless the expression's own lengths fit them or its one variable
part is a repeated character class (the bounds then go into that repetition),
and repetition bounds above ``REPEAT_MAX`` (in a pattern, ``{n,m}`` with a
larger ``m`` reads as ``{n,}``).

Narrower than the schema, never so far that nothing valid is left: numbers are
written in plain notation (with an exponent only where no bound is given), with
at most 16 integer digits on an unbounded side and at most 16 fraction digits,
more where a bound needs them; a leap second is written only as ``23:59:60``
in UTC; each character in a string has one spelling (an escape only where JSON
needs one), and lone surrogates are never written. Bounds are compared as exact
decimals: a validator that compares binary floats may disagree within one float
step of an exclusive bound.

A recursive ``$ref`` is refused: a grammar for it could never be bounded.
Every refusal is an ``InvalidRequest`` (400) that names the problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, NoReturn

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from power.errors import InvalidRequest

__all__ = ["FORMATS", "JSON_OBJECT_GRAMMAR", "MAX_DEPTH", "MAX_NODES", "MAX_PATTERN", "MAX_RULES", "MAX_USER_GRAMMAR",
           "REPEAT_MAX", "GrammarBuilder", "check_gbnf", "check_schema", "gbnf_literal", "measure_schema",
           "schema_to_grammar"]

MAX_DEPTH = 32  # nesting of the schema document
MAX_NODES = 20_000  # values in the schema document
MAX_RULES = 2_000  # rules in the grammar
MAX_GRAMMAR = 256 * 1024  # characters of grammar text
MAX_USER_GRAMMAR = 64 * 1024  # characters of a user-supplied grammar
MAX_GROUP_DEPTH = 64  # nested parentheses in a user-supplied grammar (llama.cpp's parser recurses on them)
REPEAT_MAX = 256  # larger minItems/maxLength... are not expanded into the grammar
MAX_PATTERN = 4096  # characters of a regular expression
MAX_PATTERN_DEPTH = 32  # nested groups in a regular expression
MAX_BOUND_DIGITS = 40  # integer or fraction digits of a numeric bound
INT_DIGITS = 16  # integer digits written on a side no bound limits, as in PRIMITIVES
FRAC_DIGITS = 16  # fraction digits written, unless a bound needs more

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


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


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
        lo, hi = _numeric_bounds(schema, kind == "integer", self.where, hint)
        if lo is None and hi is None:
            return self.primitive(kind)
        if kind == "integer" and hi is None and lo is not None and lo.value == 0:
            return self.primitive("uint")
        key = (kind, lo, hi)
        if key not in self._shared:
            self.primitive("space")
            body = _NumberRange(self, f"{hint}-{kind}", kind == "integer").expression(lo, hi)
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
            return self.add(f"{hint}-string", f'"\\"" {_repeat("char", lo, hi)} "\\"" space')
        if key not in self._shared:
            if hi is not None and hi < lo:
                raise InvalidRequest(f"invalid {self.where}: a maximum length is below its minimum at {hint}")
            node = _fit_lengths(_RegexParser(pattern, self.where, hint).parse(), lo, hi, self.where, hint)
            self.primitive("space")
            self._shared[key] = self.add(f"{hint}-string", f'"\\"" {self._regex(node, hint)} "\\"" space')
        return self._shared[key]

    def _regex(self, node: _Node, hint: str) -> str:
        """The GBNF for the JSON spelling of the strings ``node`` matches, as one term."""
        text, shape = self._emit(node, hint)
        return f"({text})" if shape == "alt" else text

    def _emit(self, node: _Node, hint: str) -> tuple[str, str]:
        """GBNF for ``node`` and its shape: "atom" (takes a quantifier), "seq", or "alt" (has a top-level |)."""
        if isinstance(node, _Chars):
            options = self._chars(node.ranges)
            return (options[0], "atom") if len(options) == 1 else ("(" + " | ".join(options) + ")", "atom")
        if isinstance(node, _Rep):
            text, shape = self._emit(node.item, hint)
            if shape != "atom" or isinstance(node.item, _Rep):  # a rule, so llama.cpp repeats one symbol
                key = ("part", text)
                if key not in self._shared:
                    self._shared[key] = self.add(f"{hint}-part", text)
                text = self._shared[key]
            return text + _quantifier(node.lo, node.hi), "atom"
        if isinstance(node, _Alt):
            texts = [self._emit(o, hint)[0] for o in node.options if o != _EMPTY]
            if len(texts) < len(node.options):
                return "(" + " | ".join(texts) + ")?", "atom"
            return " | ".join(texts), "alt"
        parts: list[str] = []
        run: list[str] = []  # single characters, written as one literal
        for item in node.items:
            if isinstance(item, _Chars) and len(item.ranges) == 1 and item.ranges[0][0] == item.ranges[0][1]:
                run.append(_json_spelling(item.ranges[0][0]))
                continue
            if run:
                parts.append(gbnf_literal("".join(run)))
                run = []
            parts.append(self._regex(item, hint))
        if run:
            parts.append(gbnf_literal("".join(run)))
        if len(parts) == 1:
            return parts[0], "atom"
        return (" ".join(parts), "seq") if parts else ('""', "atom")

    def _chars(self, ranges: _Ranges) -> list[str]:
        """Alternatives that write one character of ``ranges`` inside a JSON string."""
        if ranges == _SCALARS:
            return [self.primitive("char")]
        options = []
        raw = _cs_and(ranges, _RAW)
        if len(raw) == 1 and raw[0][0] == raw[0][1]:
            options.append(gbnf_literal(chr(raw[0][0])))
        elif raw:
            options.append(min(_gbnf_class(raw, False), _gbnf_class(_cs_not(raw), True), key=len))
        escaped = [cp for a, b in _cs_minus(ranges, _RAW) for cp in range(a, b + 1)]
        options += [gbnf_literal(_JSON_ESCAPES[cp]) for cp in escaped if cp in _JSON_ESCAPES]
        plain = [cp for cp in escaped if cp not in _JSON_ESCAPES]
        for high in sorted({cp >> 4 for cp in plain}):  # \u00XX, grouped by the first hex digit of XX
            lows = [ord(f"{cp & 15:x}") for cp in plain if cp >> 4 == high]
            prefix = "\\u00" + f"{high:x}"
            options.append(gbnf_literal(prefix + chr(lows[0])) if len(lows) == 1
                           else f"{gbnf_literal(prefix)} {_gbnf_class(_cs(*((c, c) for c in lows)), False)}")
        return options

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
        return self.add(hint, f'"{{" space {self._members(items, hint)} "}}" space')

    def _members(self, items: list[tuple[str, str]], hint: str) -> str:
        """Members in order, commas right whichever optional ones are present (linear size)."""
        after: dict[int, str] = {len(items): ""}  # i: the rest from i, something already written

        def rest(i: int) -> str:
            if i not in after:
                kv, how = items[i]
                step = {"req": f'"," space {kv}', "opt": f'("," space {kv})?',
                        "many": f'("," space {kv})*'}[how]
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
                body += " " + _repeat(f'("," space {item})', max(0, lo - len(prefix)), more_hi)
            return self.add(hint, f'"[" space {body} "]" space')
        if items_schema is False or hi == 0:
            return self.add(hint, '"[" space "]" space')
        item = self.visit(items_schema, f"{hint}-item")
        tail = _repeat(f'("," space {item})', max(0, lo - 1), None if hi is None else hi - 1)
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


def _repeat(expr: str, lo: int, hi: int | None) -> str:
    if hi is None:
        return f"{expr}{{{lo},}}" if lo else f"{expr}*"
    if hi < lo:
        raise InvalidRequest("invalid JSON schema: a maximum length is below its minimum")
    if lo == hi:
        return "" if lo == 0 else expr if lo == 1 else f"{expr}{{{lo}}}"
    return f"{expr}{{{lo},{hi}}}"


def _merge_all_of(schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, Mapping) or part.get("type", "object") != "object" or "$ref" in part:
            raise InvalidRequest(f"invalid {where}: allOf is supported for object schemas only")
        merged["type"] = "object"
        merged["properties"] = {**(merged.get("properties") or {}), **(part.get("properties") or {})}
        merged["required"] = list(merged.get("required") or []) + list(part.get("required") or [])
    return merged


# -- numbers --

@dataclass(frozen=True)
class _Bound:
    value: Decimal
    inclusive: bool


_ZERO = Decimal(0)


def _json_decimal(value: Any, where: str, hint: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"invalid {where}: a numeric bound at {hint} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"invalid {where}: a numeric bound at {hint} must be finite")
    # repr is the shortest decimal that reads back as the same float: the text the schema most likely held
    number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    return _ZERO if number == 0 else number  # no -0


def _numeric_bounds(schema: Mapping[str, Any], integer: bool, where: str,
                    hint: str) -> tuple[_Bound | None, _Bound | None]:
    """The tightest lower and upper bounds; an integer's are rounded inward and made inclusive."""
    lo: _Bound | None = None
    hi: _Bound | None = None
    for key, inclusive in (("minimum", True), ("exclusiveMinimum", False)):
        v = _json_decimal(schema.get(key), where, hint)
        if v is not None and (lo is None or v > lo.value or (v == lo.value and not inclusive)):
            lo = _Bound(v, inclusive)
    for key, inclusive in (("maximum", True), ("exclusiveMaximum", False)):
        v = _json_decimal(schema.get(key), where, hint)
        if v is not None and (hi is None or v < hi.value or (v == hi.value and not inclusive)):
            hi = _Bound(v, inclusive)
    if integer and lo is not None:
        up = int(lo.value.to_integral_value(ROUND_CEILING))
        lo = _Bound(Decimal(up + 1 if up == lo.value and not lo.inclusive else up), True)
    if integer and hi is not None:
        down = int(hi.value.to_integral_value(ROUND_FLOOR))
        hi = _Bound(Decimal(down - 1 if down == hi.value and not hi.inclusive else down), True)
    if lo is not None and hi is not None and (
            lo.value > hi.value or (lo.value == hi.value and not (lo.inclusive and hi.inclusive))):
        what = "integer" if integer else "number"
        raise InvalidRequest(f"invalid {where}: no {what} at {hint} lies within its minimum and maximum")
    return lo, hi


def _digits(value: Decimal) -> tuple[str, str]:
    """The integer digits of a non-negative decimal and its fraction digits without trailing zeros."""
    whole, _, frac = format(value, "f").partition(".")
    return whole, frac.rstrip("0")


class _NumberRange:
    """Decimals between two bounds: a minus sign and the magnitude's range, split by integer digits."""

    def __init__(self, builder: GrammarBuilder, hint: str, integer: bool) -> None:
        self.builder, self.hint, self.integer = builder, hint, integer

    def expression(self, lo: _Bound | None, hi: _Bound | None) -> str:
        alts = []
        if lo is None or lo.value < 0:
            mag_lo = _Bound(hi.value.copy_negate(), hi.inclusive) if hi is not None and hi.value < 0 \
                else _Bound(_ZERO, False)  # "-0" is left to the other side
            mag_hi = None if lo is None else _Bound(lo.value.copy_negate(), lo.inclusive)
            magnitude = self._magnitude(mag_lo, mag_hi)
            alts.append(f'"-" ({" | ".join(magnitude)})' if len(magnitude) > 1 else f'"-" {magnitude[0]}')
        if hi is None or hi.value > 0 or (hi.value == 0 and hi.inclusive):
            alts += self._magnitude(lo if lo is not None and lo.value >= 0 else _Bound(_ZERO, True), hi)
        return " | ".join(alts)

    def _magnitude(self, lo: _Bound, hi: _Bound | None) -> list[str]:
        lo_whole, lo_frac = _digits(lo.value)
        top = max(INT_DIGITS, len(lo_whole))
        if hi is not None and len(_digits(hi.value)[0]) > top:
            hi = None  # beyond every number written here
        hi_whole, hi_frac = _digits(hi.value) if hi is not None else ("", "")
        if max(len(lo_whole), len(lo_frac), len(hi_whole), len(hi_frac)) > MAX_BOUND_DIGITS:
            raise InvalidRequest(f"invalid {self.builder.where}: a numeric bound at {self.hint} has more than "
                                 f"{MAX_BOUND_DIGITS} digits before or after the point")
        frac = 0 if self.integer else max(FRAC_DIGITS, len(lo_frac) + 1, len(hi_frac) + 1)
        low = (lo_whole + lo_frac, lo.inclusive)
        high = (hi_whole + hi_frac, hi.inclusive) if hi is not None else None
        if high is not None and len(hi_whole) == len(lo_whole):
            alts = [_Digits(self, len(lo_whole), frac, low, high).state(0, True, True)]
        else:
            alts = [_Digits(self, len(lo_whole), frac, low, None).state(0, True, False)]
            first, last = len(lo_whole) + 1, (len(hi_whole) - 1 if high is not None else top)
            if first <= last:
                alts.append(f"[1-9] {_repeat('[0-9]', first - 1, last - 1)} {_fraction(frac)}".strip())
            if high is not None:
                alts.append(_Digits(self, len(hi_whole), frac, None, high).state(0, False, True))
        return [a for a in alts if a is not None]


_ZERO_DIGIT = '"0"'


def _fraction(frac: int) -> str:
    return f'("." [0-9]{{1,{frac}}})?' if frac else ""


class _Digits:
    """Decimals of ``n`` integer digits and up to ``frac`` fraction digits within digit-string bounds.

    A bound is its ``n`` integer digits then its fraction digits (no trailing zeros) and whether it is
    inclusive. Such strings compare digit by digit, so the grammar walks along each bound: a state is
    a position and whether the digits so far equal the lower bound's and the upper bound's. A state
    equal to neither is free; each other state is one rule. ``None`` is a state that accepts nothing.
    """

    def __init__(self, owner: _NumberRange, n: int, frac: int, lo: tuple[str, bool] | None,
                 hi: tuple[str, bool] | None) -> None:
        self.owner, self.n, self.frac = owner, n, frac
        self.lo, self.lo_inclusive = lo or ("", True)
        self.hi, self.hi_inclusive = hi or ("", True)
        self.memo: dict[tuple[int, bool, bool], str | None] = {}

    def state(self, i: int, on_lo: bool, on_hi: bool) -> str | None:
        if on_lo and self.lo_inclusive and not self.lo[i:].strip("0"):
            on_lo = False  # whatever follows is at least the lower bound
        if not on_lo and not on_hi:
            return self._free(i)
        if on_lo != on_hi and i >= len(self.lo if on_lo else self.hi):
            return self._past(i, on_lo)
        key = (i, on_lo, on_hi)
        if key not in self.memo:
            self.memo[key] = self._tight(i, on_lo, on_hi)
        return self.memo[key]

    def _free(self, i: int) -> str:
        if i < self.n:
            head = f"[1-9] {_repeat('[0-9]', self.n - 1, self.n - 1)}" if i == 0 and self.n > 1 \
                else _repeat("[0-9]", self.n - i, self.n - i)
            return f"{head} {_fraction(self.frac)}".strip()
        if i == self.n:
            return _fraction(self.frac)
        return _repeat("[0-9]", 0, self.n + self.frac - i)

    def _past(self, i: int, on_lo: bool) -> str | None:
        """Past the last digit of the one bound the prefix equals, where zeros keep it equal."""
        room = self.n + self.frac - i
        dot = '"." ' if i == self.n else ""
        if on_lo:  # an exclusive bound (an inclusive one freed the state): a non-zero digit must come
            if room <= 0:
                return None
            # the digits after the non-zero one may exceed ``frac``: a longer fraction is still valid
            return f'{dot}{_repeat(_ZERO_DIGIT, 0, room - 1)} [1-9] {_repeat("[0-9]", 0, room - 1)}'.strip()
        if not self.hi_inclusive:
            return None
        if i == self.n:
            return f'("." {_repeat(_ZERO_DIGIT, 1, self.frac)})?' if self.frac else ""
        return _repeat(_ZERO_DIGIT, 0, room)

    def _tight(self, i: int, on_lo: bool, on_hi: bool) -> str | None:
        steps: list[tuple[int, str]] = []  # (digit, what follows it)
        if i < self.n + self.frac:
            least = int(self.lo[i]) if on_lo and i < len(self.lo) else 0
            most = (int(self.hi[i]) if i < len(self.hi) else 0) if on_hi else 9
            for d in range(max(least, 1 if i == 0 and self.n > 1 else 0), most + 1):
                rest = self.state(i + 1, on_lo and d == least, on_hi and d == most)
                if rest is not None:
                    steps.append((d, rest))
        options = _digit_runs(steps)
        if i == self.n and options:
            options = [f'"." ({" | ".join(options)})' if len(options) > 1 else f'"." {options[0]}']
        # at the end, a prefix still on the lower bound is below it or (exclusive) equal; one on the upper
        # bound is below it while the bound has digits left, else equal
        accept = i >= self.n and not on_lo and (not on_hi or i < len(self.hi) or self.hi_inclusive)
        if not options:
            return "" if accept else None
        body = " | ".join(options)
        if accept:
            return f"({body})?"
        return body if len(options) == 1 else self.owner.builder.add(self.owner.hint, body)


def _digit_runs(steps: list[tuple[int, str]]) -> list[str]:
    """``[a-b] rest`` for each run of consecutive digits followed by the same ``rest``."""
    options: list[str] = []
    k = 0
    while k < len(steps):
        j = k
        while j + 1 < len(steps) and steps[j + 1][1] == steps[k][1] and steps[j + 1][0] == steps[j][0] + 1:
            j += 1
        a, b = steps[k][0], steps[j][0]
        digit = f'"{a}"' if a == b else f"[{a}-{b}]"
        options.append(f"{digit} {steps[k][1]}".strip())
        k = j + 1
    return options


# -- regular expressions (``pattern`` and ``format``) --

_Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, inclusive code point ranges
_MAX_CP = 0x10FFFF


def _cs(*ranges: tuple[int, int]) -> _Ranges:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return tuple(merged)


def _cs_not(ranges: _Ranges) -> _Ranges:
    out, start = [], 0
    for a, b in ranges:
        if a > start:
            out.append((start, a - 1))
        start = b + 1
    if start <= _MAX_CP:
        out.append((start, _MAX_CP))
    return tuple(out)


def _cs_and(a: _Ranges, b: _Ranges) -> _Ranges:
    return _cs_not(_cs(*_cs_not(a), *_cs_not(b)))


def _cs_minus(a: _Ranges, b: _Ranges) -> _Ranges:
    return _cs_and(a, _cs_not(b))


_SCALARS = _cs_not(((0xD800, 0xDFFF),))  # what UTF-8 can carry: no surrogates
_RAW = _cs_minus(((0x20, _MAX_CP),), ((0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F), (0xD800, 0xDFFF)))
_JSON_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_DIGIT = ((0x30, 0x39),)
_WORD = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_SPACE = _cs((0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029),
             (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF))  # ECMAScript's \s
_CLASS_ESCAPES = {"d": _DIGIT, "D": _cs_minus(_SCALARS, _DIGIT), "w": _WORD, "W": _cs_minus(_SCALARS, _WORD),
                  "s": _SPACE, "S": _cs_minus(_SCALARS, _SPACE)}
_DOT = _cs_minus(_SCALARS, ((0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)))  # no line terminators
_CONTROL_ESCAPES = {"t": 0x09, "n": 0x0A, "v": 0x0B, "f": 0x0C, "r": 0x0D}
_BRACES = re.compile(r"\{(\d+)(,(\d*))?\}")


def _json_spelling(cp: int) -> str:
    if cp in _JSON_ESCAPES:
        return _JSON_ESCAPES[cp]
    return f"\\u{cp:04x}" if cp < 0x20 or cp == 0x7F else chr(cp)


def _gbnf_class(ranges: _Ranges, negated: bool) -> str:
    def char(cp: int) -> str:
        if 0x21 <= cp <= 0x7E and chr(cp) not in '"-[\\]^':
            return chr(cp)
        return f"\\x{cp:02X}" if cp <= 0xFF else f"\\u{cp:04X}" if cp <= 0xFFFF else f"\\U{cp:08X}"

    body = "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)
    return f"[{'^' if negated else ''}{body}]"


@dataclass(frozen=True)
class _Chars:
    ranges: _Ranges


@dataclass(frozen=True)
class _Seq:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Alt:
    options: tuple[_Node, ...]


@dataclass(frozen=True)
class _Rep:
    item: _Node
    lo: int
    hi: int | None


_Node = _Chars | _Seq | _Alt | _Rep
_EMPTY = _Seq(())  # the empty string
_NOTHING = _Chars(())  # no string at all
_ANY = _Rep(_Chars(_SCALARS), 0, None)  # any characters: the unanchored side of a pattern


def _seq(*items: _Node) -> _Node:
    flat: list[_Node] = []
    for item in items:
        for part in item.items if isinstance(item, _Seq) else (item,):
            if part == _NOTHING:
                return _NOTHING
            last = flat[-1] if flat else None
            if isinstance(part, _Rep) and isinstance(last, _Rep) and last.item == part.item \
                    and last.lo + part.lo <= REPEAT_MAX:
                hi = None if last.hi is None or part.hi is None else last.hi + part.hi
                flat[-1] = _rep(part.item, last.lo + part.lo, hi if hi is None or hi <= REPEAT_MAX else None)
            else:
                flat.append(part)
    return flat[0] if len(flat) == 1 else _Seq(tuple(flat))


def _alt(*options: _Node) -> _Node:
    flat: list[_Node] = []
    chars: _Ranges = ()
    for option in options:
        for part in option.options if isinstance(option, _Alt) else (option,):
            if isinstance(part, _Chars):
                chars = _cs(*chars, *part.ranges)
            elif part not in flat:
                flat.append(part)
    if chars:
        flat.insert(0, _Chars(chars))
    if not flat:
        return _NOTHING
    return flat[0] if len(flat) == 1 else _Alt(tuple(flat))


def _rep(item: _Node, lo: int, hi: int | None) -> _Node:
    if hi == 0 or item == _EMPTY:
        return _EMPTY
    if item == _NOTHING:
        return _EMPTY if lo == 0 else _NOTHING
    if hi is None and _nullable(item):
        # X{n,} with the empty string in X is (X without it)*; llama.cpp refuses the left recursion otherwise
        return _rep(_nonempty(item), 0, None)
    if isinstance(item, _Rep) and item.hi is None and (lo >= 1 or item.lo <= 1) and item.lo * lo <= REPEAT_MAX:
        return _Rep(item.item, item.lo * lo, None)  # (X{a,}){b,c} is X{ab,} when b > 0, and X* when a <= 1
    return item if (lo, hi) == (1, 1) else _Rep(item, lo, hi)


def _nullable(node: _Node) -> bool:
    if isinstance(node, _Chars):
        return False
    if isinstance(node, _Seq):
        return all(_nullable(i) for i in node.items)
    if isinstance(node, _Alt):
        return any(_nullable(o) for o in node.options)
    return node.lo == 0 or _nullable(node.item)


def _nonempty(node: _Node) -> _Node:
    """``node`` without the empty string."""
    if not _nullable(node):
        return node
    if isinstance(node, _Alt):
        return _alt(*(_nonempty(o) for o in node.options))
    if isinstance(node, _Rep):  # X{0,m} or, with X nullable, X{n,m}: both are (X without it){1,m}
        return _rep(_nonempty(node.item), 1, node.hi)
    assert isinstance(node, _Seq)  # every item nullable: the first is not empty, or it is and the rest is not
    if not node.items:
        return _NOTHING
    first, rest = node.items[0], _seq(*node.items[1:])
    return _alt(_seq(_nonempty(first), rest), _nonempty(rest))


def _lengths(node: _Node) -> tuple[int, int | None]:
    """The fewest and most characters ``node`` matches (None: no limit)."""
    if isinstance(node, _Chars):
        return 1, 1
    if isinstance(node, _Rep):
        least, most = _lengths(node.item)
        return node.lo * least, None if node.hi is None or most is None else node.hi * most
    parts = [_lengths(n) for n in (node.items if isinstance(node, _Seq) else node.options)]
    if not parts:
        return 0, 0
    highs = [most for _, most in parts]
    if isinstance(node, _Seq):
        return sum(least for least, _ in parts), None if None in highs else sum(h for h in highs if h is not None)
    return min(least for least, _ in parts), None if None in highs else max(h for h in highs if h is not None)


def _fit_lengths(node: _Node, lo: int, hi: int | None, where: str, hint: str) -> _Node:
    """``node`` within minLength/maxLength where that stays exact; otherwise as it is (wider)."""
    least, most = _lengths(node)
    if (most is not None and most < lo) or (hi is not None and least > hi):
        raise InvalidRequest(f"invalid {where}: no string at {hint} matches its pattern or format "
                             f"within minLength and maxLength")
    if least >= lo and (hi is None or (most is not None and most <= hi)):
        return node
    items = node.items if isinstance(node, _Seq) else (node,)
    varying = [k for k, item in enumerate(items) if _lengths(item)[0] != _lengths(item)[1]]
    if len(varying) != 1:
        return node
    k = varying[0]
    rep = items[k]
    if not isinstance(rep, _Rep) or not isinstance(rep.item, _Chars):
        return node
    fixed = least - rep.lo
    new_hi = rep.hi if hi is None else hi - fixed if rep.hi is None else min(rep.hi, hi - fixed)
    return _seq(*items[:k], _rep(rep.item, max(rep.lo, lo - fixed), new_hi), *items[k + 1:])


def _quantifier(lo: int, hi: int | None) -> str:
    if hi is None:
        return {0: "*", 1: "+"}.get(lo, f"{{{lo},}}")
    if (lo, hi) == (0, 1):
        return "?"
    return f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"


class _RegexParser:
    """An ECMAScript regular expression, in the subset a grammar can hold, as a _Node; the rest refused.

    ``parse`` returns the strings that contain a match, as JSON Schema's ``pattern`` means: each
    top-level alternative without ``^`` may have any characters before it, without ``$`` after it.
    """

    def __init__(self, pattern: str, where: str, hint: str) -> None:
        self.text, self.pos, self.where, self.hint = pattern, 0, where, hint

    def fail(self, what: str) -> NoReturn:
        raise InvalidRequest(f"invalid {self.where}: pattern {self.text[:80]!r} at {self.hint}: {what}")

    def peek(self, ahead: int = 0) -> str:
        i = self.pos + ahead
        return self.text[i] if i < len(self.text) else ""

    def parse(self) -> _Node:
        if len(self.text) > MAX_PATTERN:
            self.fail(f"longer than {MAX_PATTERN} characters")
        options = []
        while True:
            start = self.peek() == "^"
            while self.peek() == "^":
                self.pos += 1
            node, end = self.sequence(0)
            options.append(_seq(*(() if start else (_ANY,)), node, *(() if end else (_ANY,))))
            if self.peek() != "|":
                break
            self.pos += 1
        if self.pos < len(self.text):
            self.fail("unbalanced ')'")
        node = _alt(*options)
        if node == _NOTHING:
            self.fail("it matches no string")
        return node

    def sequence(self, depth: int) -> tuple[_Node, bool]:
        """The items up to ``|``, ``)`` or the end, and whether a ``$`` ended them."""
        items: list[_Node] = []
        while self.peek() not in ("", "|", ")"):
            if self.peek() == "$":
                while self.peek() == "$":
                    self.pos += 1
                if depth or self.peek() not in ("", "|"):
                    self.fail("$ is supported only at the end of the pattern or of a top-level alternative")
                return _seq(*items), True
            items.append(self.quantified(self.atom(depth)))
        return _seq(*items), False

    def alternation(self, depth: int) -> _Node:
        options = [self.sequence(depth)[0]]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence(depth)[0])
        return _alt(*options)

    def atom(self, depth: int) -> _Node:
        ch = self.peek()
        if ch == "(":
            return self.group(depth)
        if ch == "[":
            return _Chars(self.char_class())
        self.pos += 1
        if ch == ".":
            return _Chars(_DOT)
        if ch == "\\":
            return self.escape()
        if ch == "^":
            self.fail("^ is supported only at the start of the pattern or of a top-level alternative")
        if ch in "*+?" or (ch == "{" and _BRACES.match(self.text, self.pos - 1)):
            self.fail(f"nothing to repeat before {ch!r}")
        cp = self.code_point(ch)
        return _Chars(((cp, cp),))

    def quantified(self, node: _Node) -> _Node:
        ch = self.peek()
        braces = _BRACES.match(self.text, self.pos) if ch == "{" else None
        if ch in ("*", "+", "?"):
            self.pos += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        elif braces is not None:
            self.pos = braces.end()
            lo = _count(braces.group(1))
            hi = lo if braces.group(2) is None else _count(braces.group(3)) if braces.group(3) else None
        else:
            return node
        if self.peek() == "?":
            self.pos += 1  # lazy: the same strings match
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and _BRACES.match(self.text, self.pos)):
            self.fail("a quantifier follows another quantifier")
        if hi is not None and hi < lo:
            self.fail(f"the repetition {{{lo},{hi}}} is out of order")
        if lo > REPEAT_MAX:
            self.fail(f"a repetition of at least {lo} exceeds {REPEAT_MAX}")
        return _rep(node, lo, None if hi is None or hi > REPEAT_MAX else hi)

    def group(self, depth: int) -> _Node:
        rest = self.text[self.pos:self.pos + 4]
        for prefix, what in (("(?=", "lookahead (?=...)"), ("(?!", "negative lookahead (?!...)"),
                             ("(?<=", "lookbehind (?<=...)"), ("(?<!", "negative lookbehind (?<!...)")):
            if rest.startswith(prefix):
                self.fail(f"{what} is not supported")
        if rest.startswith("(?:"):
            self.pos += 3
        elif rest.startswith("(?"):
            self.fail(f"the group syntax {rest[:3]!r} is not supported")
        else:
            self.pos += 1
        if depth >= MAX_PATTERN_DEPTH:
            self.fail(f"groups nest deeper than {MAX_PATTERN_DEPTH}")
        node = self.alternation(depth + 1)
        if self.peek() != ")":
            self.fail("missing ')'")
        self.pos += 1
        return node

    def escape(self) -> _Node:
        ch = self.peek()
        if ch in _CLASS_ESCAPES:
            self.pos += 1
            return _Chars(_CLASS_ESCAPES[ch])
        if ch in ("b", "B"):
            self.fail(f"the word boundary assertion \\{ch} is not supported")
        cp = self.char_escape()
        return _Chars(((cp, cp),))

    def char_escape(self) -> int:
        """The character of the escape after a backslash."""
        ch = self.peek()
        self.pos += 1
        if not ch:
            self.fail("it ends with a lone backslash")
        if ch in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[ch]
        if ch in "123456789" or ch == "k":
            self.fail(f"the backreference \\{ch} is not supported")
        if ch == "0":
            if self.peek().isdigit():
                self.fail("octal escapes are not supported")
            return 0
        if ch == "x":
            return self.hex_digits(2)
        if ch == "u":
            if self.peek() == "{":
                self.fail("\\u{...} escapes are not supported")
            cp = self.hex_digits(4)
            if 0xD800 <= cp <= 0xDBFF and self.text.startswith("\\u", self.pos):
                self.pos += 2
                low = self.hex_digits(4)
                if not 0xDC00 <= low <= 0xDFFF:
                    self.fail("a lone surrogate is not supported")
                return 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            return self.code_point(chr(cp))
        if ch == "c" and self.peek().isascii() and self.peek().isalpha():
            self.pos += 1
            return ord(self.text[self.pos - 1]) % 32
        if ch in ("p", "P"):
            self.fail(f"the Unicode property escape \\{ch} is not supported")
        if ch.isascii() and ch.isalnum():
            self.fail(f"the escape \\{ch} is not supported")
        return self.code_point(ch)

    def hex_digits(self, n: int) -> int:
        digits = self.text[self.pos:self.pos + n]
        if len(digits) != n or any(c not in "0123456789abcdefABCDEF" for c in digits):
            self.fail(f"an escape needs {n} hex digits")
        self.pos += n
        return int(digits, 16)

    def code_point(self, ch: str) -> int:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            self.fail("a lone surrogate is not supported")
        return ord(ch)

    def char_class(self) -> _Ranges:
        self.pos += 1
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        if self.peek() == "]":
            self.fail("an empty class [] or [^] is not supported (regex engines read it differently)")
        ranges: list[tuple[int, int]] = []
        while self.peek() != "]":
            if not self.peek():
                self.fail("missing ']'")
            first = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                last = self.class_atom()
                if isinstance(first, tuple) or isinstance(last, tuple):
                    self.fail("a range with a class escape, such as [\\d-z], is not supported")
                if first > last:
                    self.fail("a character range is out of order")
                ranges.append((first, last))
            else:
                ranges.extend(first if isinstance(first, tuple) else ((first, first),))
        self.pos += 1
        chars = _cs(*ranges)
        return _cs_minus(_SCALARS, chars) if negated else chars

    def class_atom(self) -> int | _Ranges:
        ch = self.peek()
        self.pos += 1
        if ch != "\\":
            return self.code_point(ch)
        ch = self.peek()
        if ch in _CLASS_ESCAPES:
            self.pos += 1
            return _CLASS_ESCAPES[ch]
        if ch in ("b", "-"):  # backspace inside a class; an escaped hyphen
            self.pos += 1
            return 0x08 if ch == "b" else 0x2D
        if ch == "B":
            self.fail("\\B inside a class is not supported")
        return self.char_escape()


def _count(digits: str) -> int:
    return int(digits) if len(digits) <= 9 else 10 ** 9


# Formats as ECMAScript patterns. date and time follow RFC 3339 to the day of the month; a leap second
# is valid only at 23:59:60 UTC, and written only where the offset makes that plain (Z or 00:00).
_DATE = (r"(\d{4}-(0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|\d{4}-(0[469]|11)-(0[1-9]|[12]\d|30)"
         r"|\d{4}-02-(0[1-9]|1\d|2[0-8])|(\d\d(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)-02-29)")
_TIME = (r"(([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)"
         r"|23:59:60(\.\d+)?([Zz]|[+-]00:00))")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"({_LABEL}\.){{0,3}}[A-Za-z0-9]([A-Za-z0-9-]{{0,59}}[A-Za-z0-9])?"  # at most 253 characters
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PCHAR = r"([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
_REG_NAME = r"([A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*"
FORMATS: dict[str, str] = {
    "date": rf"^{_DATE}$",
    "time": rf"^{_TIME}$",
    "date-time": rf"^{_DATE}[Tt]{_TIME}$",
    "uuid": r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",
    "ipv4": rf"^({_OCTET}\.){{3}}{_OCTET}$",
    "hostname": rf"^{_HOST}$",
    "email": rf"^{_ATOM}(\.{_ATOM})*@{_HOST}$",
    "uri": (rf"^[A-Za-z][A-Za-z0-9+.-]*:(//(([A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{{2}})*@)?{_REG_NAME}"
            rf"(:\d*)?(/{_PCHAR}*)*|/?({_PCHAR}+(/{_PCHAR}*)*)?)(\?({_PCHAR}|[/?])*)?(#({_PCHAR}|[/?])*)?$"),
}


def schema_to_grammar(schema: Mapping[str, Any] | bool, where: str = "JSON schema") -> str:
    """GBNF whose ``root`` is one JSON value valid for ``schema`` (checked and bounded first)."""
    check_schema(schema, where)
    builder = GrammarBuilder(schema, where)
    return builder.text(builder.visit(schema, "root-value"))


def _any_object() -> str:
    builder = GrammarBuilder()
    return builder.text(builder.primitive("object"))


JSON_OBJECT_GRAMMAR = _any_object()


def check_gbnf(text: Any, where: str = "options.grammar") -> str:
    """Bound a user-supplied GBNF grammar before llama.cpp parses it: size, nesting, a root rule.

    llama.cpp's grammar parser recurses on parentheses (60,000 of them crashed
    llama-server), so nesting is counted here, outside literals, classes and comments.
    Syntax errors beyond that are llama.cpp's to report (also a 400).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f"{where} must be a non-empty GBNF grammar")
    if len(text) > MAX_USER_GRAMMAR:
        raise InvalidRequest(f"{where} is longer than {MAX_USER_GRAMMAR} characters")
    depth = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"[":
            close = '"' if ch == '"' else "]"
            i += 1
            while i < n and text[i] != close:
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                what = "literal" if ch == '"' else "character class"
                raise InvalidRequest(f"invalid {where}: unterminated {what}")
        elif ch == "#":
            while i < n and text[i] not in "\r\n":
                i += 1
        elif ch == "(":
            depth += 1
            if depth > MAX_GROUP_DEPTH:
                raise InvalidRequest(f"invalid {where}: groups nest deeper than {MAX_GROUP_DEPTH}")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InvalidRequest(f"invalid {where}: unbalanced ')'")
        i += 1
    if depth:
        raise InvalidRequest(f"invalid {where}: unbalanced '('")
    if not re.search(r"(^|\n)\s*root\s*::=", text):
        raise InvalidRequest(f"invalid {where}: no root rule")
    return text
