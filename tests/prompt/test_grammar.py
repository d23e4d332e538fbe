"""JSON Schema to GBNF: refusals of bad schemas, user-grammar bounds, and tool_choice plans."""

from __future__ import annotations

import json
from typing import Any

import pytest

from power.errors import InvalidRequest
from power.prompt.grammars import (
    JSON_OBJECT_GRAMMAR,
    MAX_DEPTH,
    check_gbnf,
    check_tools,
    plan_tools,
    schema_to_grammar,
    tool_call_grammar,
)

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def _deep(n: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(n):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("schema, message", [
    ({"type": 5}, "invalid JSON schema"),
    ({"type": "object", "properties": []}, "invalid JSON schema"),
    ({"type": "object", "required": "a"}, "invalid JSON schema"),
    ({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"},
     "recursive \\$ref"),
    ({"$ref": "https://example.com/schema.json"}, "only local \\$ref"),
    ({"$ref": "#/$defs/missing"}, "points at nothing"),
    (_deep(MAX_DEPTH), "nests deeper"),
    ({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(12_000)}}, "too large"),
    ({"type": "array", "items": {"type": "string"}, "minItems": 100_000}, "exceeds"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "below its minimum"),
    ({"type": "object", "properties": {"a": False}, "required": ["a"]}, "matches nothing"),
    ("json", "expected an object"),
    ({"type": "integer", "minimum": 3, "exclusiveMaximum": 3}, "no integer at root-value lies within"),
    ({"type": "number", "minimum": float("nan")}, "must be finite"),
    ({"type": "string", "pattern": "(?=x)"}, "lookahead \\(\\?=...\\) is not supported"),
    ({"type": "string", "pattern": "(a)\\1"}, "backreference \\\\1 is not supported"),
    ({"type": "string", "pattern": "a{2,1}"}, "is not a 'regex'"),
    ({"type": "string", "pattern": "^a{3}$", "minLength": 4}, "within minLength and maxLength"),
])
def test_bad_schemas_are_invalid_requests(schema: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        schema_to_grammar(schema)


def test_many_properties_need_many_rules_and_are_refused() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 3} for i in range(1500)}}
    with pytest.raises(InvalidRequest, match="grammar rules"):
        schema_to_grammar(schema)


def test_grammar_shape_for_required_and_optional_properties() -> None:
    g = schema_to_grammar({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                           "required": ["b"]})
    assert g.startswith("root ::= ")
    assert '"\\"a\\"" space ":" space string' in g and '"\\"b\\"" space ":" space integer' in g
    # no additional properties by default: no generic key rule
    assert "string \":\" space value" not in g


def test_grammar_shape_for_integer_bounds() -> None:
    # after the minus 1..37; then 0..999, and 1000..1234 as "1" 000..234 (as "2" 00..34)
    assert schema_to_grammar({"type": "integer", "minimum": -37, "maximum": 1234}) == r"""root ::= root-value-integer-4
space ::= | " " | "\n" [ \t]{0,20}
root-value-integer ::= [1-2] [0-9] | "3" [0-7]
root-value-integer-2 ::= [0-2] [0-9] | "3" [0-4]
root-value-integer-3 ::= [0-1] [0-9]{2} | "2" root-value-integer-2
root-value-integer-4 ::= ("-" ([1-9] | root-value-integer) | [0-9] | [1-9] [0-9]{1,2} | "1" root-value-integer-3) space
"""
    assert "root ::= uint" in schema_to_grammar({"type": "integer", "minimum": 0})
    assert "root ::= integer" in schema_to_grammar({"type": "integer"})


def test_grammar_shape_for_patterns_and_formats() -> None:
    assert 'root-value-string ::= "\\"" [A-Z]{2} "-" [0-9]{3} "\\"" space' in \
        schema_to_grammar({"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"})
    # unanchored: any characters around; lengths folded into the one repeated class
    assert '"\\"" char* "ab" char* "\\"" space' in schema_to_grammar({"type": "string", "pattern": "ab"})
    assert '"\\"" "ab" char{0,2} "\\"" space' in schema_to_grammar({"type": "string", "pattern": "^ab",
                                                                     "maxLength": 4})
    assert '"\\"" [0-9A-Fa-f]{8} "-"' in schema_to_grammar({"type": "string", "format": "uuid"})
    assert "root ::= string" in schema_to_grammar({"type": "string", "format": "unknown-format"})


def test_enum_const_and_literals_are_json_text() -> None:
    g = schema_to_grammar({"enum": ["a\"b", 1, None, {"k": [True]}]})
    assert '"\\"a\\\\\\"b\\""' in g and '"1"' in g and '"null"' in g and '"{\\"k\\":[true]}"' in g
    assert '"\\"x\\""' in schema_to_grammar({"const": "x"})


def test_any_value_schemas_and_json_object_grammar() -> None:
    assert "root ::= value" in schema_to_grammar({})
    assert "root ::= value" in schema_to_grammar(True)
    assert JSON_OBJECT_GRAMMAR.startswith("root ::= object\n")


def test_user_grammar_bounds() -> None:
    assert check_gbnf('root ::= "a" ( [)(] | "(" ) # ((') .startswith("root")
    for bad, message in [("root ::= " + "(" * 1000 + ")" * 1000, "nest deeper"), ("root ::= (", "unbalanced"),
                         ('x ::= "a"', "no root"), ('root ::= "abc', "unterminated literal"),
                         ("root ::= [ab", "unterminated character class"), ("", "non-empty"), (5, "non-empty"),
                         ("root ::= " + '"a" ' * 20_000, "longer than")]:
        with pytest.raises(InvalidRequest, match=message):
            check_gbnf(bad)


def test_tool_plans() -> None:
    auto = plan_tools([WEATHER], "auto", "<tool_call>")
    assert auto.tools == [WEATHER] and auto.grammar is None
    assert plan_tools([WEATHER], None, "<tool_call>").grammar is None
    none = plan_tools([WEATHER], "none", "<tool_call>")
    assert none.tools is None and none.grammar is None
    required = plan_tools([WEATHER], "required", "<tool_call>")
    assert required.forced and required.grammar is not None
    assert required.grammar.startswith('root ::= "<tool_call>\\n" call "\\n</tool_call>"')
    named = plan_tools([WEATHER, {"type": "function", "function": {"name": "other"}}],
                       {"type": "function", "function": {"name": "other"}}, None)
    assert named.grammar is not None and "get_weather" not in named.grammar and '"\\"other\\""' in named.grammar
    assert '"[TOOL_CALLS]"' in tool_call_grammar([WEATHER], "[TOOL_CALLS]")


@pytest.mark.parametrize("tools, choice, message", [
    ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "no tool named"),
    ([WEATHER], "sometimes", "invalid tool_choice"),
    ([WEATHER], {"type": "function"}, "invalid tool_choice"),
    (None, "required", "requires tools"),
    ([{"type": "function", "function": {"name": "f", "parameters": "object"}}], "auto", "expected a JSON schema"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"properties": ["a"]}}}], "auto",
     "properties"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"required": "a"}}}], "auto", "required"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "strnig"}}}}}], "required", "invalid parameters of tool 'f'"),
    ([{"type": "function", "function": {"name": "f", "parameters": _deep(40)}}], "auto", "nests deeper"),
    ([{"type": "function", "function": {}}], "auto", "a function with a name"),
])
def test_bad_tools_and_choices(tools: Any, choice: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        plan_tools(tools, choice, "<tool_call>")


def test_check_tools_accepts_loose_but_wellformed_parameters() -> None:
    loose = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "required": True}}}}}
    assert check_tools([loose]) == [loose]
    assert json.dumps(check_tools([WEATHER]))
