"""``/v1/responses`` with a real small model (slow): Qwen2.5-Coder 0.5B through the ``openai`` SDK.

The app runs in-process over the real Scheduler; the model chooses its own tool calls and answers from the
tool's result, a schema constrains its JSON, and a stored conversation grows over three turns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from tests.server.realapp import real_app
from tests.server.responses_kit import sdk

pytestmark = pytest.mark.slow

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a given city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                          "required": ["city"]}}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "role": {"enum": ["engineer", "manager", "artist"]}}, "required": ["name", "age", "role"],
    "additionalProperties": False}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.realmodels import qwen25_coder_05b

    home = tmp_path_factory.mktemp("responses-slow")
    for app in real_app(home, {"qwen": qwen25_coder_05b()}, context_length=4096):
        yield sdk(app.app)


def test_the_model_calls_the_tool_then_answers_from_its_result(client: Any) -> None:
    first = client.responses.create(model="qwen", input="What is the weather in Paris?", tools=[WEATHER],
                                    temperature=0, max_output_tokens=128)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather", first.output
    assert "paris" in json.loads(calls[0].arguments)["city"].lower()
    answer = client.responses.create(
        model="qwen", previous_response_id=first.id, tools=[WEATHER], temperature=0, max_output_tokens=64,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": json.dumps({"temperature_c": 18, "sky": "sunny"})}])
    assert answer.output[-1].type == "message", answer.output
    text = answer.output_text.lower()
    assert "18" in text or "sunny" in text, text
    assert answer.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens


def test_streamed_tool_call_with_the_stream_helpers(client: Any) -> None:
    with client.responses.stream(model="qwen", input="What is the weather in Tokyo?", tools=[WEATHER],
                                 tool_choice="required", temperature=0, max_output_tokens=128) as stream:
        events = [e for e in stream]
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.function_call_arguments.delta" in [e.type for e in events]
    call = [o for o in final.output if o.type == "function_call"][0]
    assert "tokyo" in json.loads(call.arguments)["city"].lower()


def test_json_schema_output_validates(client: Any) -> None:
    out = client.responses.create(model="qwen", input="Invent an engineer called Ada, aged 36.", temperature=0,
                                  max_output_tokens=128, text={"format": {
                                      "type": "json_schema", "name": "person", "schema": PERSON, "strict": True}})
    assert out.status == "completed"
    person = json.loads(out.output_text)
    jsonschema.validate(person, PERSON)
    assert person["role"] == "engineer"


def test_three_turns_reuse_the_prefix_and_remember(client: Any) -> None:
    previous, turns = None, []
    for question in ("My name is Ada. Reply with one word: ok.", "What is 2 + 2? Reply with the number only.",
                     "What is my name? Reply with the name only."):
        out = client.responses.create(model="qwen", input=question, instructions="You are a terse assistant.",
                                      temperature=0, max_output_tokens=16, previous_response_id=previous)
        previous = out.id
        turns.append(out)
    inputs = [t.usage.input_tokens for t in turns]
    cached = [t.usage.input_tokens_details.cached_tokens for t in turns]
    assert inputs[0] < inputs[1] < inputs[2]
    assert cached[1] >= inputs[0] and cached[2] >= inputs[1] and cached[1] < cached[2], (inputs, cached)
    assert "4" in turns[1].output_text
    assert "ada" in turns[2].output_text.lower()


def test_usage_agrees_with_chat_completions(client: Any) -> None:
    messages = [{"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "Name a primary colour."}]
    # a warm-up: evaluated whole or from the KV cache, a prompt's logits differ by rounding, which can change
    # a greedy answer; after it both requests below reuse all but the prompt's last token alike
    client.chat.completions.create(model="qwen", messages=messages, max_tokens=8, temperature=0)
    chat = client.chat.completions.create(model="qwen", messages=messages, max_tokens=8, temperature=0)
    out = client.responses.create(model="qwen", instructions=messages[0]["content"], input=messages[1]["content"],
                                  max_output_tokens=8, temperature=0, store=False)
    assert out.usage.input_tokens == chat.usage.prompt_tokens
    assert out.usage.input_tokens_details.cached_tokens == chat.usage.prompt_tokens_details.cached_tokens
    assert out.usage.output_tokens == chat.usage.completion_tokens
    assert out.output_text == chat.choices[0].message.content
