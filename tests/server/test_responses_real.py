"""``/v1/responses`` with the real ``openai`` SDK over the real scheduler and runners, on tiny models.

A tiny chat model (tools, structured output, stored conversations, usage), a
tiny thinking model (its template opens ``<think>``, so all it says is
reasoning) and a tiny vision model (text GGUF + projector).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from power.server.usage import UsageStore
from tests.server.conftest import add_model
from tests.server.realapp import RealApp, real_app
from tests.server.responses_kit import TOOL, check_events, check_response, sdk
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, png, write_llama, write_mmproj

openai = pytest.importorskip("openai")

THINKING_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>\n{{ end -}}"
    "<|im_start|>assistant\n{{ if .Think }}<think>{{ end }}"
)
SHORT_CITY = {**TOOL, "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                                     "required": ["city"]}}
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                           "maximum": 999}},
          "required": ["ok", "n"], "additionalProperties": False}
INSTRUCTIONS = "You are a terse assistant who answers in one word."


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApp]:
    home = tmp_path_factory.mktemp("responses-real")
    tiny = write_llama(home / "tiny.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    text = write_llama(home / "text.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    mmproj = write_mmproj(home / "mmproj.gguf", n_embd_text=64)
    usage = UsageStore(home / "usage.db")
    for app in real_app(home, {"tiny": tiny, "seer": text}, projectors={"seer": mmproj}, usage=usage):
        add_model(app.library, "thinker", tiny, template=THINKING_TEMPLATE)
        yield app


@pytest.fixture(scope="module")
def client(real: RealApp) -> Any:
    return sdk(real.app)


def test_create_and_stream_agree(client: Any) -> None:
    out = client.responses.create(model="tiny", input="Say hi.", instructions=INSTRUCTIONS, max_output_tokens=6,
                                  temperature=0)
    check_response(out.model_dump(mode="json", exclude_unset=True))
    assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"
    assert out.output[0].type == "message" and out.output_text
    assert out.usage.output_tokens == 6 and out.usage.total_tokens == out.usage.input_tokens + 6
    with client.responses.stream(model="tiny", input="Say hi.", instructions=INSTRUCTIONS, max_output_tokens=6,
                                 temperature=0) as stream:
        events = [e for e in stream]
        final = stream.get_final_response()
    assert final.output_text == out.output_text  # greedy: the same words
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == out.output_text
    assert final.usage.input_tokens == out.usage.input_tokens
    raw = client.responses.create(model="tiny", input="Say hi.", max_output_tokens=3, stream=True)
    assert check_events([e.model_dump(mode="json", exclude_unset=True) for e in raw])[-1] == "response.completed"


def test_a_tool_round_trip(client: Any) -> None:
    first = client.responses.create(model="tiny", input="What is the weather in Paris?", tools=[SHORT_CITY],
                                    tool_choice="required", temperature=0, max_output_tokens=200)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert isinstance(json.loads(call.arguments)["city"], str)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}
    # stateless: the whole conversation sent back, as Codex does with store=false
    answer = client.responses.create(model="tiny", input=[{"role": "user", "content": "What is the weather?"},
                                                          *[o.model_dump() for o in first.output], result],
                                     tools=[SHORT_CITY], max_output_tokens=5, temperature=0, store=False)
    assert answer.output[0].type == "message" and answer.output_text
    # stateful: only the output, continuing the stored response
    stateful = client.responses.create(model="tiny", input=[result], previous_response_id=first.id,
                                       tools=[SHORT_CITY], max_output_tokens=5, temperature=0)
    assert stateful.output[0].type == "message" and stateful.previous_response_id == first.id


def test_a_named_function_is_forced_and_streamed(client: Any) -> None:
    other = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    with client.responses.stream(model="tiny", input="Weather in Paris?", tools=[other, SHORT_CITY],
                                 tool_choice={"type": "function", "name": "get_weather"}, temperature=0,
                                 max_output_tokens=200) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    calls = [o for o in final.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)


def test_json_schema_output_validates(client: Any) -> None:
    fmt = {"format": {"type": "json_schema", "name": "record", "schema": SCHEMA, "strict": True}}
    out = client.responses.create(model="tiny", input="A record.", text=fmt, max_output_tokens=200, temperature=0)
    assert out.status == "completed"
    jsonschema.validate(json.loads(out.output_text), SCHEMA)
    streamed = client.responses.create(model="tiny", input="A record.", max_output_tokens=20, temperature=1.0,
                                       text={"format": {"type": "json_object"}}, stream=True)
    done = [e for e in streamed][-1]
    assert done.response.output_text.startswith("{")  # any object: a random model's keys may run past 20 tokens


def test_an_image_on_the_vision_model(client: Any) -> None:
    def ask(rgb: tuple[int, int, int]) -> Any:
        url = "data:image/png;base64," + base64.b64encode(png(32, 32, rgb)).decode()
        return client.responses.create(model="seer", max_output_tokens=4, temperature=0, store=False, input=[
            {"role": "user", "content": [{"type": "input_text", "text": "what colour is this?"},
                                         {"type": "input_image", "image_url": url}]}])

    plain = client.responses.create(model="seer", input="what colour is this?", max_output_tokens=4,
                                    temperature=0, store=False)
    red = ask((220, 20, 20))
    assert red.usage.input_tokens > plain.usage.input_tokens  # the image's tokens are in the prompt
    assert red.usage.output_tokens == 4
    with pytest.raises(openai.BadRequestError, match="base64"):
        client.responses.create(model="seer", max_output_tokens=4, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,not-an-image!"}]}])
    with pytest.raises(openai.BadRequestError, match="does not support vision"):
        client.responses.create(model="tiny", max_output_tokens=4, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,"
             + base64.b64encode(png(8, 8)).decode()}]}])


def test_reasoning_on_the_thinking_model(client: Any) -> None:
    out = client.responses.create(model="thinker", input="Why is the sky blue?", max_output_tokens=8,
                                  temperature=0, reasoning={"effort": "low"})
    assert [o.type for o in out.output] == ["reasoning"]
    assert out.output[0].content[0].type == "reasoning_text" and out.output[0].content[0].text
    assert out.usage.output_tokens_details.reasoning_tokens == out.usage.output_tokens == 8
    assert out.reasoning.effort == "low"
    with client.responses.stream(model="thinker", input="Why is the sky blue?", max_output_tokens=8,
                                 temperature=0, reasoning={"effort": "low"}) as stream:
        deltas = [e.delta for e in stream if e.type == "response.reasoning_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output[0].content[0].text == out.output[0].content[0].text
    off = client.responses.create(model="thinker", input="Why is the sky blue?", max_output_tokens=4,
                                  temperature=0, reasoning={"effort": "none"})
    assert [o.type for o in off.output] == ["message"] and off.usage.output_tokens_details.reasoning_tokens == 0


def test_previous_response_id_over_three_turns_reuses_the_prefix(client: Any) -> None:
    turns: list[Any] = []
    previous = None
    for question in ("Name a colour.", "Name another.", "And one more."):
        out = client.responses.create(model="tiny", input=question, instructions=INSTRUCTIONS, temperature=0,
                                      max_output_tokens=4, previous_response_id=previous)
        previous = out.id
        turns.append(out)
    inputs = [t.usage.input_tokens for t in turns]
    cached = [t.usage.input_tokens_details.cached_tokens for t in turns]
    assert inputs[0] < inputs[1] < inputs[2]
    # each turn's prompt starts with the last one and its answer, all held in the KV cache
    for i in (1, 2):
        assert cached[i] >= inputs[i - 1], (inputs, cached)
        assert cached[i] < inputs[i]
    assert cached[1] < cached[2]
    assert client.responses.retrieve(turns[1].id).output_text == turns[1].output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="tiny", input="x", previous_response_id="resp_gone")


MESSAGES = [{"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": "Name a colour that the sky can have at dusk, please."}]


def test_usage_counts_agree_with_chat_completions_and_native_chat(real: RealApp, client: Any) -> None:
    native = real.client.simulate_post("/api/chat", json={"model": "tiny", "messages": MESSAGES, "stream": False,
                                                          "options": {"num_predict": 3, "temperature": 0}}).json
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, temperature=0)
    out = client.responses.create(model="tiny", instructions=INSTRUCTIONS, input=MESSAGES[1]["content"],
                                  max_output_tokens=3, temperature=0, store=False)
    items = client.responses.create(model="tiny", input=[{"type": "message", **m} for m in MESSAGES],
                                    max_output_tokens=3, temperature=0, store=False, stream=True)
    streamed = [e for e in items][-1].response
    whole = native["prompt_eval_count"]
    assert chat.usage.prompt_tokens == out.usage.input_tokens == streamed.usage.input_tokens == whole
    assert chat.usage.completion_tokens == out.usage.output_tokens == native["eval_count"] == 3
    assert out.usage.total_tokens == whole + 3
    # the same prompt again: all but its last token comes from the KV cache, on every API alike
    assert chat.usage.prompt_tokens_details.cached_tokens == out.usage.input_tokens_details.cached_tokens == \
        streamed.usage.input_tokens_details.cached_tokens == whole - 1
    assert out.output_text == chat.choices[0].message.content == native["message"]["content"]
    totals = real.client.simulate_get("/v1/usage").json["totals"]
    assert totals["requests"] >= 4


def test_bad_input_keeps_the_server_serving(client: Any) -> None:
    for bad in ([{"type": "banana"}], [{"type": "function_call_output", "call_id": "call_x", "output": "1"}],
                [{"role": "user", "content": [{"type": "input_image", "image_url": "file:///etc/passwd"}]}]):
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="tiny", input=bad, max_output_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="tiny", input="x", text={"format": {"type": "json_schema", "name": "x"}})
    assert client.responses.create(model="tiny", input="still there?", max_output_tokens=2).output_text


def test_truncation_disabled_refuses_a_prompt_past_the_context_and_auto_fits_it(client: Any) -> None:
    history = [{"role": "user", "content": "old words " * 400}, {"role": "assistant", "content": "ok"},
               {"role": "user", "content": "Name a colour."}]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="tiny", input=history, max_output_tokens=2, store=False)
    fitted = client.responses.create(model="tiny", input=history, max_output_tokens=2, store=False,
                                     truncation="auto")
    assert fitted.usage.input_tokens <= 2048 and fitted.truncation == "auto"
