"""Grammars from JSON schemas run in llama.cpp's sampler (through the real engine and a tiny model).

llama.cpp must accept every generated grammar, and what the model writes under it
must parse as JSON and validate against the schema. The tiny model has random
weights, so its output explores the grammar; every bound in these schemas is
finite, so generation ends by the grammar, not by ``num_predict``.

One caveat from llama.cpp, not from the converter: its grammar reads overlong
UTF-8 (e.g. ``C1 81`` for ``A``) as a code point, and the tiny model's raw-byte
tokens produce such sequences, which decode to U+FFFD. Length bounds of strings
holding U+FFFD are therefore not checked; everything else is. (Overlong forms of
ASCII are refused by llama.cpp, so patterns and formats made of ASCII classes are
checked in full.)

Formats that jsonschema checks only with optional packages (``time``,
``date-time``, ``hostname``) are checked here by ``FORMAT_CHECKER``; ``email``
and ``uri`` grammars are too open for the tiny model to finish, so for them the
engine only has to accept the grammar (their shapes are tested without it).
"""

from __future__ import annotations

import copy
import datetime
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power import native
from power.prompt.families import FAMILIES, FamilyParser
from power.prompt.grammars import JSON_OBJECT_GRAMMAR, schema_to_grammar, tool_call_grammar
from power.prompt.parsing import parse_tool_calls
from tests.tinymodels import write_llama

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                      "age": {"type": "integer", "minimum": 0},
                                      "tags": {"type": "array", "items": {"type": "string", "maxLength": 4},
                                               "maxItems": 3}},
     "required": ["name", "age"]},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 4},
    {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "null"}, "c": {"const": "k"}}},
    {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 3}]},
    {"oneOf": [{"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
               {"type": "array", "maxItems": 0}]},
    {"enum": ["red", "green", 3, None]},
    {"type": ["string", "null"], "maxLength": 5},
    {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                         "required": ["x", "y"]}},
     "type": "object", "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
     "required": ["from", "to"]},
    {"type": "object", "properties": {"k": {"type": "boolean"}}, "additionalProperties": {"type": "integer"},
     "maxProperties": 4},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}], "items": False},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
               {"type": "object", "properties": {"b": {"type": "boolean"}}, "required": ["b"]}]},
    {"type": "object", "properties": {"outer": {"type": "object", "properties": {
        "inner": {"type": "object", "properties": {"v": {"type": "string", "minLength": 1, "maxLength": 2}},
                  "required": ["v"]}}, "required": ["inner"]}}, "required": ["outer"]},
]


# numeric bounds, patterns and formats
KEYWORD_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": -37, "maximum": 1234},
                                      "m": {"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": 5},
                                      "big": {"type": "integer", "minimum": 10 ** 17},
                                      "x": {"type": "number", "minimum": -2.5, "exclusiveMaximum": 3.25},
                                      "p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
     "required": ["n", "m", "big", "x", "p"]},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
                                      "day": {"type": "string", "format": "date"},
                                      "id": {"type": "string", "format": "uuid"},
                                      "at": {"type": "string", "format": "date-time"}},
     "required": ["code", "day", "id", "at"]},
    {"type": "object", "properties": {"t": {"type": "string", "format": "time"},
                                      "ip": {"type": "string", "format": "ipv4"},
                                      "host": {"type": "string", "format": "hostname"}},
     "required": ["t", "ip", "host"]},
    {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}, "minItems": 1,
     "maxItems": 3},
    {"type": "array", "items": {"type": "string", "pattern": "^ab", "maxLength": 6}, "maxItems": 3},
    {"anyOf": [{"type": "integer", "exclusiveMaximum": -1000},
               {"type": "string", "pattern": "^(x|yz){1,3}-?[0-9]?$"}]},
    {"type": "array", "items": {"type": "number", "minimum": 99.99, "maximum": 100.01}, "minItems": 2,
     "maxItems": 4},
]

def _is_time(text: str) -> bool:
    shape = re.fullmatch(r"(\d\d:\d\d:)(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)", text)
    if shape is None:
        return False
    clock, second, fraction, offset = shape.groups()
    if second == "60":  # a leap second: 23:59:60 in UTC only
        if clock != "23:59:" or offset not in ("Z", "z", "+00:00", "-00:00"):
            return False
        second = "59"
    offset = "+00:00" if offset in "Zz" else offset
    datetime.time.fromisoformat(clock + second + (fraction or "") + offset)
    return True


def _is_date_time(text: str) -> bool:
    day, sep, time = text.partition("T") if "T" in text else text.partition("t")
    return bool(sep) and re.fullmatch(r"\d{4}-\d\d-\d\d", day) is not None \
        and bool(datetime.date.fromisoformat(day)) and _is_time(time)


def _is_hostname(text: str) -> bool:
    return len(text) <= 253 and all(
        re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label) for label in text.split("."))


FORMAT_CHECKER = jsonschema.FormatChecker()
for _name, _check in (("time", _is_time), ("date-time", _is_date_time), ("hostname", _is_hostname)):
    FORMAT_CHECKER.checks(_name)(_check)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from power.engine import Engine, LoadOptions

    path = write_llama(tmp_path_factory.mktemp("grammar") / "tiny.gguf", seed=1)
    eng = Engine(str(path), LoadOptions(num_ctx=2048, num_parallel=4, num_batch=128))
    yield eng
    eng.close()


def _without_lengths(schema: Any) -> Any:
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            node.pop("maxLength", None)
            node.pop("minLength", None)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


def _generate(engine: Any, grammar: str, seed: int) -> Any:
    out = engine.submit("x", {"temperature": 1.0, "seed": seed, "num_predict": 3000}, grammar=grammar).result()
    assert out.done_reason == "stop", out.text[-200:]
    return out.text


def check_output(text: str, schema: Any) -> None:
    value = json.loads(text)
    jsonschema.validate(value, _without_lengths(schema) if "\ufffd" in text else schema,
                        format_checker=FORMAT_CHECKER)


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_schema_grammar_output_validates(engine: Any, index: int) -> None:
    schema = SCHEMAS[index]
    grammar = schema_to_grammar(schema)
    for seed in range(3):
        check_output(_generate(engine, grammar, seed), schema)


@pytest.mark.parametrize("index", range(len(KEYWORD_SCHEMAS)))
def test_keyword_grammar_output_validates(engine: Any, index: int) -> None:
    schema = KEYWORD_SCHEMAS[index]
    grammar = schema_to_grammar(schema)
    for seed in range(8):
        check_output(_generate(engine, grammar, seed), schema)


# every shape the converter writes for the new keywords, including those too open to generate to the end
ACCEPTED = [
    *({"type": "string", "format": name} for name in ("date", "time", "date-time", "uuid", "ipv4", "hostname",
                                                      "email", "uri")),
    {"type": "string", "pattern": "ab+c"},
    {"type": "string", "pattern": "^[^a-z\"\\\\]?.\\s\\S\\D\\W(x*)*$"},
    {"type": "string", "pattern": "^\\uD83D\\uDE00[\\u00e9-\\u00ff\\t\\x01]|(a|)+$|^$"},
    {"type": "string", "pattern": "^(?:(?:a{2,5}|b){0,256}c)+$"},
    {"type": "string", "pattern": "", "minLength": 2},
    {"type": "integer", "minimum": -1e300, "maximum": 1e300},
    {"type": "integer", "exclusiveMinimum": 123456789012345678901234567890},
    {"type": "number", "exclusiveMinimum": -1e-30, "exclusiveMaximum": 1e-30},
    {"type": "number", "minimum": 0.1, "maximum": 0.1},
    {"type": "number", "exclusiveMaximum": -7.5},
]


@pytest.mark.parametrize("schema", ACCEPTED)
def test_llama_cpp_accepts_every_keyword_grammar(engine: Any, schema: Any) -> None:
    out = engine.submit("x", {"temperature": 1.0, "seed": 0, "num_predict": 6},
                        grammar=schema_to_grammar(schema)).result()
    assert out.text.strip()


def test_llama_cpp_refusals_would_show(engine: Any) -> None:
    with pytest.raises(native.GrammarError):
        engine.submit("x", {"num_predict": 2}, grammar='root ::= "a" ( "b"').result()


def test_json_object_grammar(engine: Any) -> None:
    grammar = JSON_OBJECT_GRAMMAR
    for seed in range(2):
        out = engine.submit("x", {"temperature": 1.0, "seed": seed, "num_predict": 200}, grammar=grammar).result()
        assert out.text.lstrip().startswith("{")
        if out.done_reason == "stop":  # generic JSON has no bounds: a long string may run out of tokens
            assert isinstance(json.loads(out.text), dict)


def test_forced_tool_call_parses_as_a_call(engine: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 6},
                                         "days": {"type": "integer", "minimum": 0}}, "required": ["city"]}}},
             {"type": "function", "function": {"name": "noop"}}]
    for tag in ("<tool_call>", None):
        grammar = tool_call_grammar(tools, tag)
        for seed in range(3):
            text = _generate(engine, grammar, seed)
            calls = parse_tool_calls(text, tools)
            assert len(calls) == 1 and calls[0][0] in ("get_weather", "noop"), text


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.forced], ids=lambda f: f.name)
def test_forced_call_in_a_familys_own_syntax_parses(engine: Any, family: Any) -> None:
    """``tool_choice: required`` for a family with its own syntax: what the sampler lets through is a call.

    Raw-text parameters (the XML families) are bounded only by ``enum``, so the strings here have one.
    """
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]},
                                         "days": {"type": "integer", "minimum": 1, "maximum": 9},
                                         "units": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city"]}}},
             {"type": "function", "function": {"name": "noop"}}]
    grammar = tool_call_grammar(tools, family.open, family)
    opened = not family.call_syntaxes[0].before  # the prompt wrote the open tag (Functionary v3.2's ">>>")
    for seed in range(2):
        text = _generate(engine, grammar, seed)
        parser = family.channels(tools) if family.channels else FamilyParser(family, tools, start_open=opened)
        delta = parser.feed(text) + parser.finish()
        assert [c.name for c in delta.tool_calls] in (["get_weather"], ["noop"]), text
        assert not delta.content.strip(), text
        args = delta.tool_calls[0].arguments
        if delta.tool_calls[0].name == "get_weather":
            assert args["city"] in ("Paris", "Oslo") and set(args) <= {"city", "days", "units"}, text
            assert 1 <= args.get("days", 1) <= 9 and args.get("units", "C") in ("C", "F"), text


_LEAF = st.one_of(
    st.just({"type": "boolean"}), st.just({"type": "null"}), st.just({"type": "integer"}),
    st.builds(lambda lo, span, key: {"type": "integer", key: lo, "exclusiveMaximum": lo + span},
              st.integers(-3000, 3000), st.integers(2, 5000), st.sampled_from(["minimum", "exclusiveMinimum"])),
    st.builds(lambda lo, span: {"type": "number", "exclusiveMinimum": lo / 8, "maximum": (lo + span) / 8},
              st.integers(-100, 100), st.integers(1, 200)),
    st.sampled_from([{"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"}, {"type": "string", "format": "date"},
                     {"type": "string", "format": "uuid"}, {"type": "string", "pattern": "^(ab|c){1,3}x?$"},
                     {"type": "string", "pattern": "^[0-9a-f]*$", "maxLength": 4}]),
    st.just({"type": "number"}), st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 6)),
    st.lists(st.one_of(st.integers(-5, 5), st.text("abc\"\\é", max_size=3), st.booleans(), st.none()),
             min_size=1, max_size=4, unique_by=lambda v: json.dumps(v)).map(lambda vs: {"enum": vs}),
)
_NAMES = st.text("abcdefgh_-. \"", min_size=1, max_size=5)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    obj = st.dictionaries(_NAMES, children, max_size=4).flatmap(
        lambda props: st.builds(lambda req: {"type": "object", "properties": props,
                                             "required": sorted(req)},
                                st.sets(st.sampled_from(sorted(props)) if props else st.nothing(),
                                        max_size=len(props))))
    arr = st.builds(lambda item, lo, extra: {"type": "array", "items": item, "minItems": lo,
                                             "maxItems": lo + extra}, children, st.integers(0, 2),
                    st.integers(0, 2))
    alt = st.lists(children, min_size=2, max_size=3).map(lambda xs: {"anyOf": xs})
    return st.one_of(obj, arr, alt)


SCHEMA_STRATEGY = st.recursive(_LEAF, _compound, max_leaves=8)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(schema=SCHEMA_STRATEGY, seed=st.integers(0, 1000))
def test_generated_schemas_are_accepted_and_followed(engine: Any, schema: Any, seed: int) -> None:
    grammar = schema_to_grammar(schema)
    check_output(_generate(engine, grammar, seed), schema)

