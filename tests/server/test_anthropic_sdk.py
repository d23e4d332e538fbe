"""The real ``anthropic`` SDK against real gunicorn, the real runner and tiny models.

Tiny models never end on their own (their EOS is never sampled), so every answer runs to ``max_tokens``
unless a grammar ends it; at temperature 0 they answer the same way each time.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from power.store import ModelStore
from tests.server.conftest import add_model
from tests.server.live import LiveServer
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, png, write_llama, write_mmproj

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

KEY = "sk-ant-local-test"
# A thinking model whose prompt opens the thinking: the tiny model thinks until it is stopped.
THINKER_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ if .Thinking }}<think>{{ .Thinking }}</think>\n{{ end }}{{ .Content }}<|im_end|>\n{{ end -}}"
    "<|im_start|>assistant\n{{ if .Think }}<think>\n{{ end }}"
)
SYSTEM = "You are a terse assistant who answers in one word."
ASK = [{"role": "user", "content": "Name a colour that the sky can have at dusk, please."}]
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                            "required": ["city"]}}
CLOCK = {"name": "get_time", "description": "The time in a city",
         "input_schema": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}},
                          "required": ["zone"]}}
RED = png(32, 32, (220, 20, 20))
T0: dict[str, Any] = {"extra_body": {"temperature": 0}}  # the 2.x SDK has no temperature argument


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("anthropic-sdk")
    library = ModelStore(home / "models", noprune=True)
    tiny = write_llama(home / "tiny.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    add_model(library, "tiny", tiny)
    add_model(library, "counter", write_llama(home / "counter.gguf", seed=2, chat_template=CHATML_TOOLS_TEMPLATE))
    add_model(library, "thinker", write_llama(home / "thinker.gguf", seed=3), template=THINKER_TEMPLATE)
    text, mmproj = write_llama(home / "seer.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE), \
        write_mmproj(home / "mmproj.gguf", n_embd_text=64)
    files = {text.name: library.blobs.add_file(text).digest, mmproj.name: library.blobs.add_file(mmproj).digest}
    for _ in library.create({"model": "seer", "files": files}):
        pass
    for _ in library.create({"model": "seer-thinker", "files": files, "template": THINKER_TEMPLATE}):
        pass
    live = LiveServer(home, {"A3S_POWER_API_KEY": KEY, "OLLAMA_MAX_LOADED_MODELS": "6"})
    yield live
    assert live.stop() == 0


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Any:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0,
                               default_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_create_and_stream_give_the_same_message(client: Any) -> None:
    made = client.messages.create(model="tiny", max_tokens=6, system=SYSTEM, messages=ASK, **T0)
    assert made.id.startswith("msg_") and made.type == "message" and made.role == "assistant"
    assert made.model == "tiny" and made.stop_reason == "max_tokens" and made.stop_sequence is None
    assert [b.type for b in made.content] == ["text"] and made.content[0].text
    assert made.usage.output_tokens == 6
    with client.messages.stream(model="tiny", max_tokens=6, system=SYSTEM, messages=ASK, **T0) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == final.content[0].text == made.content[0].text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 6
    whole = made.usage.input_tokens + made.usage.cache_read_input_tokens
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == whole
    assert final.usage.cache_read_input_tokens == whole - 1  # all but the last prompt token were cached


def test_raw_stream_events_in_order(server: LiveServer) -> None:
    body = {"model": "tiny", "max_tokens": 4, "messages": ASK, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.url + "/v1/messages", json=body, timeout=60,
                      headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["request-id"]
        events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "ping", "content_block_start"]
    assert set(events[3:-3]) == {"content_block_delta"}
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_count_tokens_is_what_the_request_then_evaluates(client: Any, server: LiveServer) -> None:
    # "counter" is loaded by the count itself (tokenizing generates nothing): the request after it finds an
    # empty KV cache and evaluates every prompt token.
    kwargs = {"model": "counter", "system": SYSTEM, "messages": ASK, "tools": [WEATHER, CLOCK]}
    counted = client.messages.count_tokens(**kwargs).input_tokens
    made = client.messages.create(max_tokens=2, **T0, **kwargs)
    assert made.usage.cache_read_input_tokens == 0
    assert made.usage.input_tokens == counted > 60  # the tools are in the prompt
    # The native API counts the same prompt the same way (its final chunk's prompt_eval_count).
    native = _call(server, "POST", "/api/chat", {
        "model": "counter", "stream": False, "options": {"num_predict": 1, "temperature": 0},
        "messages": [{"role": "system", "content": SYSTEM}, *ASK],
        "tools": [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                    "parameters": t["input_schema"]}} for t in (WEATHER, CLOCK)]})
    assert native.status_code == 200 and native.json()["prompt_eval_count"] == counted
    # tool_choice none hides the tools: fewer tokens, and again what is evaluated.
    hidden = client.messages.count_tokens(tool_choice={"type": "none"}, **kwargs).input_tokens
    again = client.messages.create(max_tokens=2, **T0, tool_choice={"type": "none"}, **kwargs)
    assert hidden < counted and again.usage.input_tokens + again.usage.cache_read_input_tokens == hidden


def test_count_tokens_with_an_image(client: Any) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _b64(RED)}}
    seen = [{"role": "user", "content": [image, {"type": "text", "text": "What colour is this?"}]}]
    plain = [{"role": "user", "content": "What colour is this?"}]
    counted = client.messages.count_tokens(model="seer", messages=seen).input_tokens
    without = client.messages.count_tokens(model="seer", messages=plain).input_tokens
    assert counted > without
    made = client.messages.create(model="seer", max_tokens=3, messages=seen, **T0)
    assert made.usage.input_tokens + made.usage.cache_read_input_tokens == counted
    assert made.stop_reason == "max_tokens" and made.content[0].type == "text"


def test_tool_round_trip(client: Any) -> None:
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = client.messages.create(model="tiny", max_tokens=200, messages=asked, tools=[WEATHER, CLOCK],
                                    tool_choice={"type": "any"}, **T0)
    assert called.stop_reason == "tool_use"
    uses = [b for b in called.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].id.startswith("toolu_") and uses[0].name in ("get_weather", "get_time")
    assert isinstance(uses[0].input, dict) and set(uses[0].input) <= {"city", "zone"} and uses[0].input
    answer = client.messages.create(model="tiny", max_tokens=5, tools=[WEATHER, CLOCK], **T0, messages=[
        *asked, {"role": "assistant", "content": [b.model_dump() for b in called.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                      "content": [{"type": "text", "text": "Sunny, 21 C"}]}]}])
    assert answer.stop_reason == "max_tokens" and [b.type for b in answer.content] == ["text"]


def test_a_named_tool_is_forced_in_a_stream(client: Any) -> None:
    with client.messages.stream(model="tiny", max_tokens=200, tools=[WEATHER, CLOCK], **T0,
                                tool_choice={"type": "tool", "name": "get_time"},
                                messages=[{"role": "user", "content": "What is the weather in Paris?"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert use.name == "get_time" and isinstance(use.input.get("zone"), str)


def test_an_image_on_the_vision_model(client: Any) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _b64(RED)}}
    made = client.messages.create(model="seer", max_tokens=3, **T0,
                                  messages=[{"role": "user", "content": [image, {"type": "text", "text": "Colour?"}]}])
    assert made.content[0].type == "text" and made.usage.output_tokens == 3
    with pytest.raises(anthropic.BadRequestError, match="does not support vision"):
        client.messages.create(model="tiny", max_tokens=3, messages=[{"role": "user", "content": [image]}])


def test_thinking_budget_is_enforced(client: Any, server: LiveServer) -> None:
    before = _usage_rows(server)
    ask = {"model": "thinker", "max_tokens": 24, "messages": ASK, **T0}
    # Unbounded, the tiny model thinks until max_tokens: only a thinking block.
    free = client.messages.create(thinking={"type": "enabled", "budget_tokens": 100}, **ask)
    assert [b.type for b in free.content] == ["thinking"] and free.stop_reason == "max_tokens"
    assert free.usage.output_tokens == 24
    # With a budget of 8 the thinking ends after 8 tokens and the answer follows in what is left.
    evaluated = _evaluated(server)
    made = client.messages.create(thinking={"type": "enabled", "budget_tokens": 8}, **ask)
    # The continuation found the prompt and the 8 thinking tokens in the KV cache: it evaluated the close tag
    # only (and the first part its last prompt token), not the 80 tokens before it.
    assert _evaluated(server) - evaluated <= 1 + len("\n</think>\n\n")
    assert [b.type for b in made.content] == ["thinking", "text"], made.content
    assert made.content[0].thinking and made.content[0].signature == "" and made.content[1].text
    assert made.stop_reason == "max_tokens" and made.usage.output_tokens == 24  # 8 thinking + 16 answer
    assert free.content[0].thinking.startswith(made.content[0].thinking[:8])  # the same start, cut short
    with client.messages.stream(thinking={"type": "enabled", "budget_tokens": 8}, **ask) as stream:
        kinds = [e.content_block.type for e in stream if e.type == "content_block_start"]
        final = stream.get_final_message()
    assert kinds == ["thinking", "text"] and [b.model_dump() for b in final.content] == \
        [b.model_dump() for b in made.content]
    assert final.usage.output_tokens == 24
    # One usage row per message, the thinking and the answer counted together.
    rows = _usage_rows(server)
    assert rows["requests"] - before["requests"] == 3
    assert rows["completion_tokens"] - before["completion_tokens"] == 72
    # Thinking off: the answer starts at once.
    plain = client.messages.create(thinking={"type": "disabled"}, **ask)
    assert [b.type for b in plain.content] == ["text"]


def test_thinking_budget_with_an_image(client: Any) -> None:
    # An image's embeddings are no tokens to send back: the continuation is the prompt text, images again.
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _b64(RED)}}
    made = client.messages.create(model="seer-thinker", max_tokens=20, thinking={"type": "enabled", "budget_tokens": 6},
                                  messages=[{"role": "user", "content": [image, {"type": "text", "text": "Colour?"}]}],
                                  **T0)
    assert [b.type for b in made.content] == ["thinking", "text"] and made.usage.output_tokens == 20


def test_typed_errors(client: Any, server: LiveServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=3, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="tiny", max_tokens=3, messages=[{"role": "user", "content": [
            {"type": "hologram", "data": "x"}]}])
    assert bad.value.body["type"] == "error" and bad.value.body["error"]["type"] == "invalid_request_error"
    assert "unknown content block type" in bad.value.message
    with pytest.raises(anthropic.BadRequestError, match="names no earlier tool_use"):
        client.messages.create(model="tiny", max_tokens=3, messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_nowhere", "content": "42"}]}])
    with pytest.raises(anthropic.BadRequestError, match="base64"):
        client.messages.create(model="seer", max_tokens=3, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%% not b64"}},
            {"type": "text", "text": "?"}]}])
    for wrong in (anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0),
                  anthropic.Anthropic(base_url=server.url, auth_token="wrong", max_retries=0)):
        with pytest.raises(anthropic.AuthenticationError) as denied:
            wrong.messages.create(model="tiny", max_tokens=3, messages=ASK)
        assert denied.value.body["error"]["type"] == "authentication_error"
    # ANTHROPIC_AUTH_TOKEN (a bearer token) is as good as ANTHROPIC_API_KEY (x-api-key).
    bearer = anthropic.Anthropic(base_url=server.url, auth_token=KEY, max_retries=0)
    assert bearer.messages.create(model="tiny", max_tokens=1, messages=ASK).usage.output_tokens == 1
    # Missing max_tokens (the SDK will not send that): a 400 in Anthropic's shape, and the server goes on.
    refused = _call(server, "POST", "/v1/messages", {"model": "tiny", "messages": ASK})
    assert refused.status_code == 400 and refused.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens is required"}}
    assert client.messages.create(model="tiny", max_tokens=1, messages=ASK).stop_reason == "max_tokens"


def test_usage_is_the_same_on_every_api(client: Any, server: LiveServer) -> None:
    messages = [{"role": "system", "content": SYSTEM}, *ASK]
    answer = _call(server, "POST", "/api/chat", {
        "model": "tiny", "messages": messages, "stream": False, "options": {"num_predict": 3, "temperature": 0}})
    assert answer.status_code == 200
    native = answer.json()
    whole = native["prompt_eval_count"]
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY).chat.completions.create(
        model="tiny", messages=messages, max_tokens=3, temperature=0)
    made = client.messages.create(model="tiny", system=SYSTEM, messages=ASK, max_tokens=3, **T0)
    assert oa.usage.prompt_tokens == whole == made.usage.input_tokens + made.usage.cache_read_input_tokens
    assert oa.usage.prompt_tokens_details.cached_tokens == made.usage.cache_read_input_tokens == whole - 1
    assert native["eval_count"] == oa.usage.completion_tokens == made.usage.output_tokens == 3
    assert oa.choices[0].message.content == made.content[0].text == native["message"]["content"]


def _call(server: LiveServer, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, server.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"},
                         timeout=60)


def _evaluated(server: LiveServer) -> float:
    """Prompt tokens the thinker's runner evaluated so far (those reused from the KV cache not counted)."""
    metrics = _call(server, "GET", "/metrics").text
    return float(re.search(r'^a3s_power_prompt_tokens_total\{model="thinker:latest"\} (\S+)$', metrics, re.M)[1])


def _usage_rows(server: LiveServer) -> dict[str, Any]:
    answer = _call(server, "GET", "/v1/usage?model=thinker")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["totals"])
