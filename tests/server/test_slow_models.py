"""Real small models through the HTTP API (slow): tool calls with Qwen2.5-Coder 0.5B, structured output.

The app runs in-process over the real Scheduler (runner processes, llama.cpp);
the OpenAI side goes through the official ``openai`` client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from tests.server.realapp import RealApp, real_app

pytestmark = pytest.mark.slow

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name"}},
                   "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0},
    "languages": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    "role": {"enum": ["engineer", "manager", "artist"]}}, "required": ["name", "age", "role"]}


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApp]:
    from tests.realmodels import gemma3_270m, qwen25_coder_05b

    home = tmp_path_factory.mktemp("slow-models")
    yield from real_app(home, {"qwen": qwen25_coder_05b(), "gemma": gemma3_270m()}, context_length=4096)


def _arguments(args: Any) -> dict[str, Any]:
    return json.loads(args) if isinstance(args, str) else dict(args)


def test_qwen_weather_tool_call_native_chat(real: RealApp) -> None:
    r = real.client.simulate_post("/api/chat", json={"model": "qwen", "messages": ASK, "tools": [WEATHER],
                                                     "stream": False, "options": {"temperature": 0}})
    assert r.status_code == 200, r.text
    print("native /api/chat:", json.dumps(r.json["message"]))
    calls = r.json["message"]["tool_calls"]
    assert calls[0]["function"]["name"] == "get_weather"
    assert "paris" in calls[0]["function"]["arguments"]["city"].lower()
    assert r.json["done_reason"] == "stop"


def test_qwen_weather_tool_call_openai_client(real: RealApp) -> None:
    client = real.openai()
    out = client.chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER], tool_choice="auto",
                                         temperature=0)
    print("openai /v1/chat/completions:", out.choices[0].model_dump_json(exclude_none=True))
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert "paris" in json.loads(call.function.arguments)["city"].lower()
    stream = client.chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER], temperature=0,
                                            stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    streamed = [tc for d in deltas for tc in d.tool_calls or ()]
    assert len(streamed) == 1 and streamed[0].index == 0 and streamed[0].function.name == "get_weather"


def test_qwen_tool_result_round_trip(real: RealApp) -> None:
    client = real.openai()
    first = client.chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER], tool_choice="required",
                                           temperature=0)
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in _arguments(call.function.arguments)
    messages = ASK + [first.choices[0].message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": "18 degrees Celsius and sunny"}]
    second = client.chat.completions.create(model="qwen", messages=messages, tools=[WEATHER],
                                            tool_choice="none", temperature=0, max_tokens=60)
    answer = second.choices[0].message.content or ""
    assert "18" in answer and not second.choices[0].message.tool_calls


@pytest.mark.parametrize("model", ["qwen", "gemma"])
def test_structured_output_validates(real: RealApp, model: str) -> None:
    r = real.client.simulate_post("/api/generate", json={
        "model": model, "prompt": "Describe a fictional software engineer as JSON.", "format": PERSON,
        "stream": False, "options": {"temperature": 0.7, "seed": 3, "num_predict": 400}})
    assert r.status_code == 200 and r.json["done_reason"] == "stop", r.text
    jsonschema.validate(json.loads(r.json["response"]), PERSON)
    out = real.openai().chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "Give me a person as JSON."}], max_tokens=400,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), PERSON)
