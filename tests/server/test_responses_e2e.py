"""``/v1/responses`` end to end: the real ``openai`` SDK against real gunicorn, runners and a tiny model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.store import ModelStore
from tests.server.conftest import add_model
from tests.server.live import LiveServer
from tests.server.responses_kit import TOOL, check_events
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_llama

openai = pytest.importorskip("openai")

SHORT_CITY = {**TOOL, "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                                     "required": ["city"]}}
INSTRUCTIONS = "You are a terse assistant who answers in one word."


def _home(home: Path) -> Path:
    library = ModelStore(home / "models", noprune=True)
    add_model(library, "tiny", write_llama(home / "tiny.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE))
    return home


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _home(tmp_path_factory.mktemp("responses-e2e"))


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[LiveServer]:
    live = LiveServer(home, {"OLLAMA_CONTEXT_LENGTH": "1024"})
    try:
        yield live
    finally:
        live.stop()


def _client(server: LiveServer, key: str = "unused") -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_create_stream_and_the_stream_helpers(server: LiveServer) -> None:
    client = _client(server)
    out = client.responses.create(model="tiny", input="Say hi.", instructions=INSTRUCTIONS, max_output_tokens=5,
                                  temperature=0)
    assert out.object == "response" and out.id.startswith("resp_") and out.output_text
    assert out.usage.output_tokens == 5 and out.usage.input_tokens > 10
    with client.responses.stream(model="tiny", input="Say hi.", instructions=INSTRUCTIONS, max_output_tokens=5,
                                 temperature=0) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == out.output_text
    assert final.usage.input_tokens_details.cached_tokens == final.usage.input_tokens - 1  # all but the last
    raw = [e.model_dump(mode="json", exclude_unset=True)
           for e in client.responses.create(model="tiny", input="Say hi.", max_output_tokens=3, stream=True)]
    kinds = check_events(raw)
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"


def test_a_tool_round_trip_and_forced_calls(server: LiveServer) -> None:
    client = _client(server)
    first = client.responses.create(model="tiny", input="What is the weather in Paris?", tools=[SHORT_CITY],
                                    tool_choice="required", temperature=0, max_output_tokens=200)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and "city" in json.loads(call.arguments)
    answer = client.responses.create(
        model="tiny", previous_response_id=first.id, tools=[SHORT_CITY], max_output_tokens=4, temperature=0,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}])
    assert answer.output[0].type == "message" and answer.output_text
    other = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    with client.responses.stream(model="tiny", input="Weather?", tools=[other, SHORT_CITY], temperature=0,
                                 max_output_tokens=200, tool_choice={"type": "function", "name": "get_weather"}
                                 ) as stream:
        final = stream.get_final_response()
    assert [o.name for o in final.output if o.type == "function_call"] == ["get_weather"]


MESSAGES = [{"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": "Name a colour that the sky can have at dusk, please."}]


def test_usage_is_the_same_on_all_three_apis(server: LiveServer) -> None:
    status, raw = server.request("POST", "/api/chat", {"model": "tiny", "messages": MESSAGES, "stream": False,
                                                       "options": {"num_predict": 3, "temperature": 0}})
    assert status == 200
    native = json.loads(raw)
    client = _client(server)
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, temperature=0)
    out = client.responses.create(model="tiny", instructions=INSTRUCTIONS, input=MESSAGES[1]["content"],
                                  max_output_tokens=3, temperature=0, store=False)
    assert native["prompt_eval_count"] == chat.usage.prompt_tokens == out.usage.input_tokens
    assert native["eval_count"] == chat.usage.completion_tokens == out.usage.output_tokens == 3
    assert chat.usage.prompt_tokens_details.cached_tokens == out.usage.input_tokens_details.cached_tokens


def test_three_turns_reuse_the_prefix_and_survive_a_restart(home: Path, server: LiveServer) -> None:
    """Last of the module's tests on ``server``: it restarts the server over the same home."""
    client = _client(server)
    previous, turns = None, []
    for question in ("Name a colour.", "Name another.", "And one more."):
        out = client.responses.create(model="tiny", input=question, instructions=INSTRUCTIONS, temperature=0,
                                      max_output_tokens=4, previous_response_id=previous)
        previous = out.id
        turns.append(out)
    inputs = [t.usage.input_tokens for t in turns]
    cached = [t.usage.input_tokens_details.cached_tokens for t in turns]
    assert inputs[0] < inputs[1] < inputs[2] and cached[1] < cached[2]
    assert cached[1] >= inputs[0] and cached[2] >= inputs[1], (inputs, cached)
    assert (home / "responses.db").is_file()
    server.stop()
    again = LiveServer(home, {"OLLAMA_CONTEXT_LENGTH": "1024"})
    try:
        client = _client(again)
        assert client.responses.retrieve(turns[2].id).output_text == turns[2].output_text
        fourth = client.responses.create(model="tiny", input="Last one.", instructions=INSTRUCTIONS,
                                         temperature=0, max_output_tokens=4, previous_response_id=turns[2].id)
        assert fourth.usage.input_tokens > inputs[2]
        client.responses.delete(turns[0].id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(turns[0].id)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="tiny", input="x", previous_response_id=turns[0].id)
    finally:
        again.stop()


def test_typed_errors_and_the_api_key(tmp_path: Path) -> None:
    locked = LiveServer(_home(tmp_path), {"A3S_POWER_API_KEY": "sesame"})
    try:
        with pytest.raises(openai.AuthenticationError):
            _client(locked, "wrong").responses.create(model="tiny", input="x", max_output_tokens=2)
        client = _client(locked, "sesame")
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="tiny", input=[{"type": "banana"}])
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="tiny", input=[{"role": "user", "content": [
                {"type": "input_image", "image_url": "data:image/png;base64,!!"}]}])
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="missing", input="x")
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve("resp_missing")
        assert client.responses.create(model="tiny", input="x", max_output_tokens=2).status == "incomplete"
    finally:
        locked.stop()
