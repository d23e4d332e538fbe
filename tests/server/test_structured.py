"""Structured output through the HTTP API: format, response_format, options.grammar, and bad input (400s)."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from falcon import testing

from power.errors import InvalidRequest
from power.prompt.grammars import JSON_OBJECT_GRAMMAR
from power.server.ports import ModelView
from power.server.prompting import check_images
from tests.server.conftest import FakeScheduler
from tests.tinymodels import png

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
RECURSIVE = {"$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array",
                                                                          "items": {"$ref": "#/$defs/node"}}}}},
             "$ref": "#/$defs/node"}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False}
OA = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def _huge() -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(30_000)}}


def last_grammar(scheduler: FakeScheduler) -> Any:
    return [c for c in scheduler.calls if c[0] == "generate"][-1][1]["grammar"]


def test_native_format_json_and_schema(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    r = client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "p", "format": "json",
                                                    "stream": False})
    assert r.status_code == 200 and last_grammar(scheduler) == JSON_OBJECT_GRAMMAR
    r = client.simulate_post("/api/chat", json={**CHAT, "format": PERSON})
    assert r.status_code == 200
    grammar = last_grammar(scheduler)
    assert grammar.startswith("root ::= ") and '"\\"age\\""' in grammar


def test_openai_response_format(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    assert client.simulate_post("/v1/chat/completions", json={
        **OA, "response_format": {"type": "json_object"}}).status_code == 200
    assert last_grammar(scheduler) == JSON_OBJECT_GRAMMAR
    r = client.simulate_post("/v1/chat/completions", json={
        **OA, "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}})
    assert r.status_code == 200 and '"\\"name\\""' in last_grammar(scheduler)
    assert client.simulate_post("/v1/chat/completions", json={
        **OA, "response_format": {"type": "text"}}).status_code == 200
    assert last_grammar(scheduler) is None


def test_user_grammar_option(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    grammar = 'root ::= "yes" | "no"'
    r = client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "p", "stream": False,
                                                    "options": {"grammar": grammar, "temperature": 0}})
    assert r.status_code == 200 and last_grammar(scheduler) == grammar
    options = [c for c in scheduler.calls if c[0] == "generate"][-1][1]["options"]
    assert "grammar" not in options and options["temperature"] == 0
    r = client.simulate_post("/api/chat", json={**CHAT, "options": {"grammar": grammar}})
    assert r.status_code == 200 and last_grammar(scheduler) == grammar


@pytest.mark.parametrize("path, body, message", [
    ("/api/generate", {"prompt": "p", "format": {"type": 5}}, "invalid JSON schema in format"),
    ("/api/generate", {"prompt": "p", "format": RECURSIVE}, "recursive \\$ref"),
    ("/api/chat", {"messages": CHAT["messages"], "format": RECURSIVE}, "recursive \\$ref"),
    ("/api/chat", {"messages": CHAT["messages"], "format": _huge()}, "too large"),
    ("/api/generate", {"prompt": "p", "format": "xml"}, "invalid format"),
    ("/api/generate", {"prompt": "p", "options": {"grammar": "root ::= " + "(" * 5000 + ")" * 5000}},
     "nest deeper"),
    ("/api/generate", {"prompt": "p", "options": {"grammar": "nonsense"}}, "no root rule"),
    ("/api/generate", {"prompt": "p", "format": "json", "options": {"grammar": 'root ::= "a"'}}, "either"),
    ("/api/chat", {"messages": CHAT["messages"], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"properties": "x"}}}]}, "properties"),
    ("/api/chat", {"messages": CHAT["messages"], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
            "a": {"type": "nope"}}}}}], "tool_choice": "required"}, "invalid parameters of tool 'f'"),
    ("/api/generate", {"prompt": "p", "images": ["aGVsbG8="]}, '"tiny:latest" does not support vision'),
    ("/api/chat", {"messages": [{"role": "user", "content": "what is this", "images": ["%%%"]}]},
     "does not support vision"),
    ("/api/generate", {"prompt": "p", "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/api/chat", {"messages": CHAT["messages"], "think": True}, '"tiny:latest" does not support thinking'),
])
def test_bad_input_is_400_and_the_server_keeps_serving(client: testing.TestClient, scheduler: FakeScheduler,
                                                       path: str, body: dict[str, Any], message: str) -> None:
    r = client.simulate_post(path, json={"model": "tiny", "stream": False, **body})
    assert r.status_code == 400, r.text
    assert re.search(message, r.json["error"]), r.json
    assert not [c for c in scheduler.calls if c[0] == "generate"]  # refused before any work
    ok = client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "p", "stream": False})
    assert ok.status_code == 200 and ok.json["response"] == "Hello world"


@pytest.mark.parametrize("body, message", [
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": RECURSIVE}}}, "recursive"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": []}}}}, "invalid JSON"),
    ({"top_logprobs": 30, "logprobs": True}, "top_logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "often"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64,AAAA"}}]}]}, "does not support vision"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "https://example.com/cat.png"}}]}]}, "data URL"),
    ({"reasoning_effort": "high"}, "does not support thinking"),
])
def test_openai_bad_input_is_400(client: testing.TestClient, body: dict[str, Any], message: str) -> None:
    r = client.simulate_post("/v1/chat/completions", json={**OA, **body})
    assert r.status_code == 400, r.text
    assert message in r.json["error"]["message"] and r.json["error"]["type"] == "invalid_request_error"
    assert client.simulate_post("/v1/chat/completions", json=OA).status_code == 200


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_check_images_on_a_vision_model() -> None:
    view = ModelView(name="llava:latest", digest="sha256:" + "0" * 64, modified_at=0,
                     capabilities=("completion", "vision"))
    image = png(4, 3)
    webp = b"RIFF\0\0\0\0WEBPVP8X" + b"\x0a\0\0\0" + b"\0" * 4 + b"\x03\0\0\x02\0\0"
    assert check_images(view, [base64.b64encode(image).decode(), base64.b64encode(webp).decode()]) == [image, webp]
    assert check_images(view, []) == []
    for bad, message in [("not base64!", "not valid base64"), (base64.b64encode(b"hello").decode(), "not a PNG"),
                         (7, "expected base64")]:
        with pytest.raises(InvalidRequest, match=message):
            check_images(view, [bad])
    plain = ModelView(name="tiny:latest", digest="sha256:" + "0" * 64, modified_at=0)
    with pytest.raises(InvalidRequest, match='"tiny:latest" does not support vision'):
        check_images(plain, [base64.b64encode(PNG).decode()])
