"""The ``anthropic`` SDK against real gunicorn and Qwen2.5-Coder 0.5B (slow): a real model's tool round trip,
stream, stop sequence and token count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from power.store import ModelStore
from tests.server.conftest import add_model
from tests.server.live import LiveServer

anthropic = pytest.importorskip("anthropic")
pytestmark = pytest.mark.slow

T0: dict[str, Any] = {"extra_body": {"temperature": 0}}
WEATHER = {"name": "get_weather", "description": "Get the current weather in a given city",
           "input_schema": {"type": "object", "required": ["city"],
                            "properties": {"city": {"type": "string", "description": "The city name"}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.realmodels import qwen25_coder_05b

    home = tmp_path_factory.mktemp("anthropic-qwen")
    add_model(ModelStore(home / "models", noprune=True), "qwen", qwen25_coder_05b())
    live = LiveServer(home, {"OLLAMA_CONTEXT_LENGTH": "4096"})
    yield anthropic.Anthropic(base_url=live.url, api_key="unused", max_retries=0, timeout=600)
    assert live.stop() == 0


def test_qwen_tool_round_trip(client: Any) -> None:
    called = client.messages.create(model="qwen", max_tokens=100, messages=ASK, tools=[WEATHER], **T0)
    print("tool_use:", called.model_dump_json(exclude_none=True))
    assert called.stop_reason == "tool_use"
    (use,) = [b for b in called.content if b.type == "tool_use"]
    assert use.name == "get_weather" and "paris" in use.input["city"].lower()
    # The 0.5B model calls the tool again while it may: tool_choice none has it answer from the result.
    history = [*ASK, {"role": "assistant", "content": [b.model_dump() for b in called.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                             "content": "Sunny, 21 degrees Celsius"}]}]
    answer = client.messages.create(model="qwen", max_tokens=60, tools=[WEATHER], tool_choice={"type": "none"},
                                    messages=history, **T0)
    print("answer:", answer.model_dump_json(exclude_none=True))
    text = "".join(b.text for b in answer.content if b.type == "text")
    assert "21" in text or "sunny" in text.lower()


def test_qwen_stream_ends_its_turn_and_counts_match(client: Any) -> None:
    haiku = [{"role": "user", "content": "Write a haiku about the sea."}]
    counted = client.messages.count_tokens(model="qwen", messages=haiku).input_tokens
    with client.messages.stream(model="qwen", max_tokens=60, messages=haiku, **T0) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.content[0].text.strip()
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == counted
    made = client.messages.create(model="qwen", max_tokens=60, messages=haiku, **T0)
    assert made.content[0].text == final.content[0].text


def test_qwen_stop_sequence(client: Any) -> None:
    made = client.messages.create(model="qwen", max_tokens=40, stop_sequences=["5"], **T0,
                                  messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}])
    assert (made.stop_reason, made.stop_sequence) == ("stop_sequence", "5")
    assert made.content[0].text.startswith("1, 2, 3, 4") and "5" not in made.content[0].text
