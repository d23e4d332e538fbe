"""Tool calls out of model output: families, lenient reading, streaming, tag inference."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_template_texts import LLAMA32, MISTRAL, QWEN25, QWEN25_JINJA, WEATHER_TOOL

from power.prompt import (
    Delta,
    TemplateSource,
    ToolCall,
    ToolCallParser,
    output_parser,
    parse_tool_calls,
    tool_call_tag,
)

TOOLS = [WEATHER_TOOL, {"type": "function", "function": {"name": "get_time", "parameters": {}}}]
PARIS = ("get_weather", {"city": "Paris"})


def run(text: str, tag: str | None, step: int) -> tuple[str, list[ToolCall]]:
    parser = ToolCallParser(TOOLS, tag)
    content, calls = "", []
    for i in range(0, len(text), step):
        delta = parser.feed(text[i:i + step])
        content += delta.content
        calls += delta.tool_calls
    delta = parser.finish()
    return content + delta.content, calls + list(delta.tool_calls)


CASES = [
    # (output, template tag, expected content, expected calls)
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     "<tool_call>", "", [PARIS]),
    (('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
      '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'),
     "<tool_call>", "Let me check.\n", [PARIS, ("get_time", {})]),
    (('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
      '{"name": "get_time", "arguments": {}}]'), "[TOOL_CALLS]", "", [PARIS, ("get_time", {})]),
    ('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', "[TOOL_CALLS]", "", [PARIS]),
    ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "{", "", [PARIS]),
    ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', "{", "", [PARIS]),
    ('```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', "<tool_call>", "",
     [PARIS]),
    ('Sure:\n```\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n```\nDone.',
     "<tool_call>", "Sure:\n\nDone.", [PARIS]),
    ('{"get_weather": {"city": "Paris"}}', "<tool_call>", "", [PARIS]),
    ('{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}',
     "<tool_call>", "", [PARIS]),
    ("{'name': 'get_weather', 'arguments': {'city': 'Paris'}}", "<tool_call>", "", [PARIS]),
    # Output cut off before the JSON closes: repaired at the end.
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris', "<tool_call>", "", [PARIS]),
    # Not calls: handed back untouched.
    ("The weather is fine.", "<tool_call>", "The weather is fine.", []),
    ('<tool_call>{"name": "unknown_tool", "arguments": {}}</tool_call>', "<tool_call>",
     '<tool_call>{"name": "unknown_tool", "arguments": {}}</tool_call>', []),
    ('{"a": 1} is JSON', "{", '{"a": 1} is JSON', []),
    ("```python\nprint('hi')\n```", "<tool_call>", "```python\nprint('hi')\n```", []),
    ('```json\n{"city": "Paris"}\n```', "<tool_call>", '```json\n{"city": "Paris"}\n```', []),
    ("a < b and [1, 2] {x}", "<tool_call>", "a < b and [1, 2] {x}", []),
    ("<tool_call", "<tool_call>", "<tool_call", []),
    ("[TOOL_CALLS] nothing", "[TOOL_CALLS]", "[TOOL_CALLS] nothing", []),
]


@pytest.mark.parametrize("step", [1, 2, 7, 10_000])
@pytest.mark.parametrize("text, tag, content, calls", CASES)
def test_parse(text: str, tag: str, content: str, calls: list, step: int) -> None:
    got_content, got_calls = run(text, tag, step)
    assert got_content == content
    assert [(c.name, c.arguments) for c in got_calls] == calls
    assert [c.index for c in got_calls] == list(range(len(calls)))


def test_content_streams_before_a_call_is_seen() -> None:
    parser = ToolCallParser(TOOLS, "<tool_call>")
    assert parser.feed("Hello there").content == "Hello there"
    assert parser.feed(" <tool").content == " "
    assert parser.feed("_call>{\"name\": \"get_time\"").content == ""
    delta = parser.feed(', "arguments": {}}</tool_call>')
    assert [c.name for c in delta.tool_calls] == ["get_time"]


def test_strict_parser_ignores_other_families() -> None:
    parser = ToolCallParser(TOOLS, "<tool_call>", lenient=False)
    text = '```json\n{"name": "get_time", "arguments": {}}\n```'
    delta = parser.feed(text) + parser.finish()
    assert delta.content == text and not delta.tool_calls


def test_without_tools_everything_is_content() -> None:
    parser = ToolCallParser([], "<tool_call>")
    text = '<tool_call>{"name": "get_time"}</tool_call>'
    assert (parser.feed(text) + parser.finish()).content == text


def test_call_ids_and_wire_shapes() -> None:
    (call,) = run('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
                  "<tool_call>", 1000)[1]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call.id)
    assert call.to_ollama() == {"id": call.id, "function": {
        "index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}
    openai = call.to_openai()
    assert openai["type"] == "function" and openai["index"] == 0 and openai["id"] == call.id
    assert json.loads(openai["function"]["arguments"]) == {"city": "Paris"}


def test_parse_tool_calls_whole_text() -> None:
    assert parse_tool_calls('{"name": "get_time", "arguments": {}}', ["get_time"]) == [
        ("get_time", {})]
    assert parse_tool_calls('hi {"name": "get_time"}', ["get_time"]) == []


def test_tag_inference_from_templates() -> None:
    assert tool_call_tag(QWEN25) == "<tool_call>"
    assert tool_call_tag(MISTRAL) == "[TOOL_CALLS]"
    assert tool_call_tag(LLAMA32) == "{"
    assert tool_call_tag("{{ .Prompt }}") is None
    assert tool_call_tag(None, QWEN25_JINJA) == "<tool_call>"
    assert tool_call_tag(None, "{{ '[TOOL_CALLS]' }}") == "[TOOL_CALLS]"
    assert tool_call_tag("{{ if }}") is None


def test_output_parser_for_qwen_jinja_model() -> None:
    parser = output_parser(TemplateSource(jinja=QWEN25_JINJA), tools=TOOLS)
    text = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    delta = parser.feed(text) + parser.finish()
    assert [(c.name, c.arguments) for c in delta.tool_calls] == [PARIS]
    assert delta.content == "" and delta.thinking == ""


_SOUP = st.lists(st.sampled_from([
    "<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "```", "json\n", "{", "}", "[",
    "]", '"name"', ":", '"other"', ",", '"arguments"', " ", "\n", "text", "\\", '"', "[ARGS]",
]), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(_SOUP, st.integers(min_value=1, max_value=8))
def test_text_without_a_known_tool_comes_back_unchanged(text: str, step: int) -> None:
    parser = ToolCallParser(["get_weather"], "<tool_call>")
    delta = Delta()
    for i in range(0, len(text), step):
        delta += parser.feed(text[i:i + step])
    delta += parser.finish()
    assert delta.content == text and not delta.tool_calls
