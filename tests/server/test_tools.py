"""Tool calling through both APIs: tool_choice, forced-call grammars, call shapes, tool results rendered back."""

from __future__ import annotations

import json
from typing import Any

from falcon import testing

from tests.server.conftest import FakeScheduler, chunks_for

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def generate_call(scheduler: FakeScheduler) -> dict[str, Any]:
    return [c for c in scheduler.calls if c[0] == "generate"][-1][1]


def sse(result: testing.Result) -> list[Any]:
    events = [x[len("data: "):] for x in result.text.split("\n\n") if x.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_openai_required_forces_a_call_with_the_models_tag(client: testing.TestClient,
                                                           scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for([CALL[:20], CALL[20:]]))
    r = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, "tools": [WEATHER],
                                                            "tool_choice": "required"})
    assert r.status_code == 200, r.text
    sent = generate_call(scheduler)
    assert sent["grammar"].startswith('root ::= "<tool_call>\\n" call "\\n</tool_call>"')
    assert "# Tools" in sent["prompt"] and "get_weather" in sent["prompt"]
    choice = r.json["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == ""
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_") and call["index"] == 0
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_openai_named_function_and_streamed_deltas(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    scheduler.script.append(chunks_for(["<tool_call>", CALL[len("<tool_call>"):]]))
    r = client.simulate_post("/v1/chat/completions", json={
        "model": "tiny", "messages": ASK, "tools": [WEATHER, other], "stream": True,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    grammar = generate_call(scheduler)["grammar"]
    assert '"\\"get_weather\\""' in grammar and "get_time" not in grammar
    events = sse(r)
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert len(calls) == 1 and calls[0][0]["index"] == 0 and calls[0][0]["id"].startswith("call_")
    assert json.loads(calls[0][0]["function"]["arguments"]) == {"city": "Paris"}
    assert deltas[0]["role"] == "assistant"
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_auto_parses_fenced_json_and_none_hides_tools(client: testing.TestClient,
                                                             scheduler: FakeScheduler) -> None:
    fenced = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    scheduler.script.append(chunks_for([fenced]))
    r = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, "tools": [WEATHER],
                                                            "tool_choice": "auto"})
    assert generate_call(scheduler)["grammar"] is None
    assert r.json["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    scheduler.script.append(chunks_for([CALL]))
    r = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, "tools": [WEATHER],
                                                            "tool_choice": "none"})
    sent = generate_call(scheduler)
    assert sent["grammar"] is None and "# Tools" not in sent["prompt"]
    message = r.json["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"] == CALL
    assert r.json["choices"][0]["finish_reason"] == "stop"


def test_native_chat_tools_give_object_arguments(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for([CALL]))
    r = client.simulate_post("/api/chat", json={"model": "tiny", "messages": ASK, "tools": [WEATHER],
                                                "stream": False})
    calls = r.json["message"]["tool_calls"]
    assert calls[0]["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert calls[0]["id"].startswith("call_") and len(calls[0]["id"]) == len("call_") + 8
    scheduler.script.append(chunks_for([CALL[:9], CALL[9:]]))
    r = client.simulate_post("/api/chat", json={"model": "tiny", "messages": ASK, "tools": [WEATHER],
                                                "tool_choice": "required"})
    assert generate_call(scheduler)["grammar"].startswith('root ::= "<tool_call>')
    out = [json.loads(x) for x in r.text.splitlines()]
    with_calls = [c for c in out if c["message"].get("tool_calls")]
    assert len(with_calls) == 1 and not with_calls[0]["done"] and with_calls[0]["message"]["content"] == ""
    assert out[-1]["done"]


def test_tool_results_are_rendered_back(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    history = ASK + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_abc12345", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc12345", "content": "18C and sunny"}]
    r = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": history,
                                                            "tools": [WEATHER]})
    assert r.status_code == 200
    assert "<|im_start|>tool\n18C and sunny<|im_end|>" in generate_call(scheduler)["prompt"]
    native = ASK + [{"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "18C and sunny"}]
    r = client.simulate_post("/api/chat", json={"model": "tiny", "messages": native, "tools": [WEATHER],
                                                "stream": False})
    assert r.status_code == 200 and "18C and sunny" in generate_call(scheduler)["prompt"]
