"""Hostile values at the HTTP boundary: lone surrogates in any string of any body, token ids out of range."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.server.realapp import RealApp, real_app
from tests.tinymodels import write_llama

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                           "parameters": {"type": "object", "properties": {"city": {
                                               "type": "string"}}}}}]
BODIES: list[tuple[str, dict[str, Any]]] = [
    ("/api/generate", {"model": "tiny", "prompt": "hello", "system": "sys", "template": "{{ .Prompt }}",
                       "options": {"stop": ["x", "y"]}, "stream": False}),
    ("/api/chat", {"model": "tiny", "messages": MSGS + [{"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}], "tools": TOOLS,
        "stream": False}),
    ("/api/embed", {"model": "embedder", "input": ["one text", "two text"]}),
    ("/api/embeddings", {"model": "embedder", "prompt": "a text"}),
    ("/api/create", {"model": "made", "from": "tiny", "system": "you are", "template": "{{ .Prompt }}",
                     "license": ["MIT"], "messages": MSGS, "parameters": {"stop": ["<end>"]}}),
    ("/api/show", {"model": "tiny"}),
    ("/api/copy", {"source": "tiny", "destination": "copy"}),
    ("/v1/chat/completions", {"model": "tiny", "messages": MSGS + [{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}],
        "stop": ["\n\n"], "tools": TOOLS, "user": "someone"}),
    ("/v1/completions", {"model": "tiny", "prompt": "once", "stop": "end", "user": "u"}),
    ("/v1/embeddings", {"model": "embedder", "input": "a text"}),
    ("/v1/messages", {"model": "tiny", "max_tokens": 8, "system": "sys", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stop_sequences": ["zz"]}),
    ("/v1/responses", {"model": "tiny", "instructions": "be kind", "input": [
        {"role": "user", "content": "hello"}, {"type": "function_call", "call_id": "c1", "name": "get_weather",
                                               "arguments": '{"city": "Oslo"}'}]}),
]


def string_places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], bool]]:
    """Every string of ``value``: (path, is_key) pairs."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield path + (k,), True
            yield from string_places(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from string_places(v, path + (i,))
    elif isinstance(value, str):
        yield path, False


def with_surrogate(body: Any, path: tuple[Any, ...], is_key: bool, at: int, ch: str, nested: bool) -> Any:
    """``body`` with ``ch`` put into the string at ``path`` (or its key); ``nested`` puts it into a JSON string."""
    body = json.loads(json.dumps(body))
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if is_key:
        parent[last[:at % (len(last) + 1)] + ch + last[at % (len(last) + 1):]] = parent.pop(last)
        return body
    text = parent[last]
    if nested and text.startswith('{"'):  # a JSON string inside JSON (tool call arguments): the escape goes inside
        inner = json.loads(text)
        key = next(iter(inner))
        inner[key] = str(inner[key]) + ch
        parent[last] = json.dumps(inner)
        return body
    i = at % (len(text) + 1)
    parent[last] = text[:i] + ch + text[i:]
    return body


PLACES = [(route, body, path, is_key) for route, body in BODIES for path, is_key in string_places(body)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(PLACES), at=st.integers(0, 40),
       ch=st.sampled_from(["\ud800", "\udfff", "\udc80", "\ud83d"]), nested=st.booleans())
def test_a_lone_surrogate_anywhere_is_a_400(client: Any, place: tuple[str, dict[str, Any], tuple[Any, ...], bool],
                                            at: int, ch: str, nested: bool) -> None:
    route, body, path, is_key = place
    raw = json.dumps(with_surrogate(body, path, is_key, at, ch, nested)).encode("ascii")  # "\ud800" escapes
    r = client.simulate_post(route, body=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (route, path, r.status_code, r.text[:300])
    assert "surrogate" in r.text


@pytest.mark.parametrize("route,body", BODIES)
def test_each_body_is_accepted_without_the_surrogate(client: Any, route: str, body: dict[str, Any]) -> None:
    """The bodies above are valid: the 400 comes from the surrogate, not from some other fault."""
    r = client.simulate_post(route, body=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code < 400, (route, r.status_code, r.text[:300])


def test_a_paired_surrogate_escape_is_text(client: Any) -> None:
    raw = b'{"model": "tiny", "prompt": "\\ud83d\\ude00", "stream": false}'
    assert client.simulate_post("/api/generate", body=raw).status_code == 200


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApp]:
    d = tmp_path_factory.mktemp("hostile")
    yield from real_app(d / "home", {"tiny": write_llama(d / "tiny.gguf", seed=0)}, context_length=512)


@pytest.mark.parametrize("context", [[2**31], [-1], [10**20], [1.5], ["7"], [True], [1, None], "12", [1, [2]],
                                     [2**31 - 1], [10**6]])
def test_context_ids_out_of_range_are_400(app: RealApp, context: Any) -> None:
    body = {"model": "tiny", "prompt": "hi", "context": context, "options": {"num_predict": 2}, "stream": False}
    r = app.client.simulate_post("/api/generate", json=body)
    assert r.status_code == 400, r.text
    r = app.client.simulate_post("/api/generate", json={**body, "context": [1, 2, 3]})
    assert r.status_code == 200 and r.json["done"]


def test_a_raw_token_prompt_outside_the_vocabulary_is_a_400_and_the_runner_lives(app: RealApp) -> None:
    r = app.client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "warm", "stream": False,
                                                        "options": {"num_predict": 1}})
    pid = app.scheduler.ps()[0]["pid"]
    for tokens in ([10**6], [-5], [2**31 + 3]):
        with pytest.raises(Exception) as info:
            app.scheduler.generate("tiny", tokens, options={"num_predict": 2})
        assert getattr(info.value, "status", None) == 400, info.value
    assert app.scheduler.ps()[0]["pid"] == pid
    assert r.status_code == 200


@pytest.mark.parametrize("options", [{"num_predict": 1e308}, {"num_predict": 2.5}, {"top_k": 2**31},
                                     {"repeat_last_n": 2**31}, {"num_thread": 1e10}, {"num_batch": -1},
                                     {"temperature": -1}, {"top_p": 2}, {"num_ctx": 2**40}, {"seed": 1e30}])
def test_option_values_out_of_range_are_400_on_every_generation_route(app: RealApp, options: dict[str, Any]) -> None:
    key = next(iter(options))
    for route, body in (("/api/generate", {"model": "tiny", "prompt": "hi", "stream": False}),
                        ("/api/chat", {"model": "tiny", "messages": MSGS, "stream": False})):
        r = app.client.simulate_post(route, json={**body, "options": options})
        assert r.status_code == 400 and key in r.json["error"], (route, r.text)
