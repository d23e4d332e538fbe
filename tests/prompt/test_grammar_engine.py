"""Grammars from JSON schemas run in llama.cpp's sampler (through the real engine and a tiny model).

llama.cpp must accept every generated grammar, and what the model writes under it
must parse as JSON and validate against the schema. The tiny model has random
weights, so its output explores the grammar; every bound in these schemas is
finite, so generation ends by the grammar, not by ``num_predict``.

One caveat from llama.cpp, not from the converter: its grammar reads overlong
UTF-8 (e.g. ``C1 81`` for ``A``) as a code point, and the tiny model's raw-byte
tokens produce such sequences, which decode to U+FFFD. Length bounds of strings
holding U+FFFD are therefore not checked; everything else is.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power.prompt.grammar import JSON_OBJECT_GRAMMAR, schema_to_grammar
from power.prompt.toolchoice import tool_call_grammar
from power.prompt.tools import parse_tool_calls
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
    jsonschema.validate(value, _without_lengths(schema) if "\ufffd" in text else schema)


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_schema_grammar_output_validates(engine: Any, index: int) -> None:
    schema = SCHEMAS[index]
    grammar = schema_to_grammar(schema)
    for seed in range(3):
        check_output(_generate(engine, grammar, seed), schema)


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


_LEAF = st.one_of(
    st.just({"type": "boolean"}), st.just({"type": "null"}), st.just({"type": "integer"}),
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

