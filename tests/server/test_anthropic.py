"""Anthropic's Messages API on the scripted scheduler: wire shapes, block events, errors, stop sequences, pings,
the enforced thinking budget and count_tokens."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

import pytest
from falcon import testing

from power.config import Settings
from power.errors import Busy, EngineError
from power.server import create_app
from power.server.storeport import StorePort
from power.store import ModelStore
from tests.server.conftest import FakeScheduler, ScriptedStream, add_model, chunks_for

ASK = [{"role": "user", "content": "hi"}]
THINKER_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ if .Thinking }}<think>{{ .Thinking }}</think>\n{{ end }}{{ .Content }}<|im_end|>\n{{ end -}}"
    "<|im_start|>assistant\n{{ if .Think }}<think>\n{{ end }}"
)
WEATHER = {"name": "get_weather", "description": "weather",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def sse(result: testing.Result) -> list[tuple[str, Any]]:
    """(event, data) pairs; each event line names its data's type."""
    assert result.headers["content-type"].startswith("text/event-stream"), result.text
    out = []
    for block in result.text.split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            data = json.loads(lines["data"])
            assert data["type"] == lines["event"]
            out.append((lines["event"], data))
    return out


def post(client: testing.TestClient, **body: Any) -> testing.Result:
    return client.simulate_post("/v1/messages", json={"model": "tiny", "max_tokens": 16, "messages": ASK, **body})


def generated(scheduler: FakeScheduler) -> list[dict[str, Any]]:
    return [c[1] for c in scheduler.calls if c[0] == "generate"]


class TextScheduler(FakeScheduler):
    """Detokenizes the scripted token ids (``100 + i``) back into the texts that chunk ``i`` carried."""

    def __init__(self, texts: Sequence[str] = ()) -> None:
        super().__init__()
        self.texts = dict(enumerate(texts, 100))
        self.generate_calls: list[Any] = []

    def detokenize(self, name: str, tokens: Sequence[int]) -> str:
        return "".join(self.texts[t] for t in tokens)


class SlowStream(ScriptedStream):
    def __next__(self) -> dict[str, Any]:
        time.sleep(0.15)
        return super().__next__()


class SlowScheduler(FakeScheduler):
    def generate(self, *args: Any, **kwargs: Any) -> ScriptedStream:
        stream = super().generate(*args, **kwargs)
        return SlowStream(stream._items)


@pytest.fixture
def thinker(library: ModelStore, tiny_gguf: Path) -> ModelStore:
    add_model(library, "thinker", tiny_gguf, template=THINKER_TEMPLATE)
    return library


def app_with(settings: Settings, library: ModelStore, scheduler: FakeScheduler, **changes: Any) -> testing.TestClient:
    return testing.TestClient(create_app(settings.with_(**changes), StorePort(library), scheduler),
                              headers={"Host": "127.0.0.1:11434"})


# ---- answers ---------------------------------------------------------------------------------------------
def test_a_whole_message(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    r = post(client, max_tokens=5, metadata={"user_id": "u"})
    assert r.status_code == 200, r.text
    body = r.json
    assert re.fullmatch(r"msg_[A-Za-z0-9]{24}", body.pop("id")) and r.headers["request-id"]
    assert body == {"type": "message", "role": "assistant", "model": "tiny",
                    "content": [{"type": "text", "text": "Hello world"}], "stop_reason": "end_turn",
                    "stop_sequence": None, "usage": {"input_tokens": 7, "cache_creation_input_tokens": 0,
                                                     "cache_read_input_tokens": 0, "output_tokens": 2}}
    opts = generated(scheduler)[-1]["options"]
    assert opts["num_predict"] == 5 and "temperature" not in opts  # Anthropic's sampling only where asked


def test_sampling_and_max_tokens_stop_reason(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for(["a", "b"], done_reason="length"))
    r = post(client, max_tokens=2, temperature=0.2, top_p=0.5, top_k=7)
    assert r.json["stop_reason"] == "max_tokens"
    opts = generated(scheduler)[-1]["options"]
    assert (opts["temperature"], opts["top_p"], opts["top_k"], opts["num_predict"]) == (0.2, 0.5, 7, 2)


def test_the_event_stream(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append([{"text": "Hel", "tokens": [1], "done": False}, {"text": "lo", "tokens": [2],
                                                                           "done": False},
                             {"text": "", "tokens": [], "done": True, "done_reason": "stop", "prompt_eval_count": 9,
                              "cached_tokens": 4, "eval_count": 2}])
    events = sse(post(client, stream=True))
    names = [e for e, _ in events]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["id"].startswith("msg_")
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert events[6][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"input_tokens": 5, "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 4, "output_tokens": 2}}


def test_text_then_a_tool_use_block(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for(["Let me check.", "\n", CALL]))
    events = sse(post(client, stream=True, tools=[WEATHER]))
    starts = [d for e, d in events if e == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "text"), (1, "tool_use")]
    use = starts[1]["content_block"]
    assert re.fullmatch(r"toolu_[A-Za-z0-9]{24}", use["id"]) and use["name"] == "get_weather" and use["input"] == {}
    deltas = [d for e, d in events if e == "content_block_delta" and d["index"] == 1]
    assert deltas == [{"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}}]
    assert [d["index"] for e, d in events if e == "content_block_stop"] == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    scheduler.script.append(chunks_for(["\n\n", CALL]))  # whitespace before a call opens no text block
    whole = post(client, tools=[WEATHER]).json
    assert [b["type"] for b in whole["content"]] == ["tool_use"] and whole["stop_reason"] == "tool_use"
    assert whole["content"][0]["input"] == {"city": "Paris"}


def test_thinking_block_then_text(thinker: ModelStore, settings: Settings) -> None:
    scheduler = FakeScheduler()
    scheduler.script.append(chunks_for(["hm", "m</think>", "Because."]))
    client = app_with(settings, thinker, scheduler)
    whole = post(client, model="thinker", thinking={"type": "enabled", "budget_tokens": 50}).json
    assert whole["content"] == [{"type": "thinking", "thinking": "hmm", "signature": ""},
                                {"type": "text", "text": "Because."}]
    assert generated(scheduler)[-1]["prompt"].endswith("<think>\n")
    client.simulate_post("/v1/messages", json={"model": "thinker", "max_tokens": 4, "messages": ASK,
                                               "thinking": {"type": "disabled"}})
    assert not generated(scheduler)[-1]["prompt"].endswith("<think>\n")


def test_a_model_that_cannot_think_just_answers(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    r = post(client, thinking={"type": "enabled", "budget_tokens": 1024})
    assert r.status_code == 200 and r.json["content"][0]["type"] == "text"


# ---- requests in native terms ----------------------------------------------------------------------------
def test_messages_tools_and_results_reach_the_prompt(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    r = post(client, system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
             tools=[WEATHER], messages=[
                 {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                 {"role": "assistant", "content": [
                     {"type": "thinking", "thinking": "use the tool", "signature": "sig"},
                     {"type": "redacted_thinking", "data": "opaque"},
                     {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                 {"role": "user", "content": [
                     {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                      "content": [{"type": "text", "text": "service down"}]},
                     {"type": "text", "text": "Try again?"}]}])
    assert r.status_code == 200, r.text
    prompt = generated(scheduler)[-1]["prompt"]
    assert "Be brief." in prompt and '"get_weather"' in prompt
    assert "Error: service down" in prompt and prompt.index("Error: service down") < prompt.index("Try again?")


def test_documents_search_results_and_server_tools_reach_the_prompt(client: testing.TestClient,
                                                                    scheduler: FakeScheduler) -> None:
    """What Claude Code and the Anthropic SDK send beyond text: plain-text documents and search results become
    text, earlier server-tool turns (web search) a call and its result; PDFs and uploads are left out."""
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    r = post(client, tools=[WEATHER], messages=[
        {"role": "user", "content": [
            {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain",
                                                              "data": "The sky is green."}},
            {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Page two."}]}},
            pdf, {"type": "container_upload", "file_id": "file_1"},
            {"type": "search_result", "source": "https://a.example", "title": "A",
             "content": [{"type": "text", "text": "Result text."}]},
            {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "sky"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                {"type": "web_search_result", "title": "Sky facts", "url": "https://sky.example",
                 "encrypted_content": "zz"}]},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                {"type": "text", "text": "Cold."}, pdf, {"type": "tool_reference", "tool_name": "get_weather"},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Report."}}]},
            {"type": "text", "text": "And now?"}]}])
    assert r.status_code == 200, r.text
    prompt = generated(scheduler)[-1]["prompt"]
    order = ["Notes\n\nThe sky is green.", "Page two.", "A - https://a.example\nResult text.", "What colour?",
             "- Sky facts: https://sky.example", "Cold.\n\nReport.", "And now?"]
    assert all(p in prompt for p in order), prompt
    assert [prompt.index(p) for p in order] == sorted(prompt.index(p) for p in order)
    assert "JVBERi0" not in prompt and "file_1" not in prompt


def test_structured_output_and_forced_tools_are_grammars(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    post(client, output_config={"format": {"type": "json_schema", "schema": schema}})
    assert "ok" in generated(scheduler)[-1]["grammar"]
    scheduler.script.append(chunks_for([CALL]))
    forced = post(client, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"})
    assert "<tool_call>" in generated(scheduler)[-1]["grammar"] and forced.json["stop_reason"] == "tool_use"
    post(client, tools=[WEATHER], tool_choice={"type": "any"})
    assert "get_weather" in generated(scheduler)[-1]["grammar"]
    post(client, tools=[WEATHER], tool_choice={"type": "none"})
    assert generated(scheduler)[-1]["grammar"] is None and "get_weather" not in generated(scheduler)[-1]["prompt"]
    post(client, tools=[WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}])
    assert "web_search" not in generated(scheduler)[-1]["prompt"]  # no server tools here


# ---- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, needle", [
    ({"max_tokens": None}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "hologram"}]}]}, "unknown content block type"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": "x"}]}]}, "document needs a source"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": 3}}]}]},
     "content.0.source.data"),
    ({"messages": [{"role": "user", "content": [{"type": "search_result", "content": "x"}]}]}, "content.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search",
                                                 "input": {}}]}]}, "belong in assistant messages"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                                 "content": "4"}]}]}, "names no earlier tool_use"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]},
     "belong in user messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "url", "url": "http://169.254.169.254/"}}]}]}, "only base64 image sources"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/tiff", "data": "AAAA"}}]}]}, "media_type"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}, "does not support vision"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "no tool named"),
    ({"tool_choice": {"type": "any"}}, "tool_choice requires tools"),
    ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
    ({"output_config": {"format": {"type": "xml"}}}, "output_config.format"),
    ({"system": [{"type": "image"}]}, "only text blocks"),
    ({"thinking": {"type": "enabled", "budget_tokens": 0}}, "budget_tokens"),
    ({"system": "a\ud800b"}, "lone surrogate"),
])
def test_bad_input_is_a_400_in_anthropics_shape(client: testing.TestClient, body: dict[str, Any],
                                                needle: str) -> None:
    full = {"model": "tiny", "max_tokens": 8, "messages": ASK, **body}
    r = client.simulate_post("/v1/messages", body=json.dumps({k: v for k, v in full.items() if v is not None}),
                             headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json["type"] == "error" and r.json["error"]["type"] == "invalid_request_error"
    assert needle in r.json["error"]["message"]
    assert post(client).status_code == 200  # and the server goes on


def test_unknown_model_and_route(client: testing.TestClient) -> None:
    r = post(client, model="nowhere")
    assert r.status_code == 404 and r.json == {"type": "error", "error": {
        "type": "not_found_error", "message": "model 'nowhere' not found"}}
    r = client.simulate_post("/v1/messages/nowhere", json={})
    assert r.status_code == 404 and r.json["error"]["type"] == "not_found_error"
    r = client.simulate_get("/v1/messages")
    assert r.status_code == 405 and r.json["type"] == "error"


def test_a_full_queue_is_529_overloaded(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(Busy())
    r = post(client, stream=True)
    assert r.status_code == 529 and r.headers["retry-after"] == "1"
    assert r.json["error"]["type"] == "overloaded_error"
    scheduler.script.append(Busy())
    assert client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": ASK}).status_code == 503


def test_api_key_by_x_api_key_or_bearer(make_client: Any) -> None:
    c = make_client(api_key="s3cret")
    body = {"model": "tiny", "max_tokens": 4, "messages": ASK}
    denied = c.simulate_post("/v1/messages", json=body, headers={"x-api-key": "wrong"})
    assert denied.status_code == 401 and denied.json["error"]["type"] == "authentication_error"
    assert c.simulate_post("/v1/messages/count_tokens", json=body).status_code == 401
    for headers in ({"x-api-key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
        ok = c.simulate_post("/v1/messages", json=body, headers={
            **headers, "anthropic-version": "2023-06-01", "anthropic-beta": "fine-grained-tool-streaming-2025-05-14"})
        assert ok.status_code == 200


def test_an_error_mid_stream_is_an_error_event(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append([{"text": "Hi", "tokens": [1], "done": False}, EngineError("inference failed: boom")])
    events = sse(post(client, stream=True))
    assert [e for e, _ in events][-2:] == ["content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "inference failed: boom"}}


def test_pings_while_waiting(monkeypatch: pytest.MonkeyPatch, settings: Settings, library: ModelStore) -> None:
    monkeypatch.setattr("power.server.anthropic.sse.PING_INTERVAL", 0.05)
    client = app_with(settings, library, SlowScheduler())
    names = [e for e, _ in sse(post(client, stream=True))]
    assert names.count("ping") > 2 and names[-1] == "message_stop"


# ---- stop sequences --------------------------------------------------------------------------------------
@pytest.mark.parametrize("pieces, text", [(["Hello", " wor", "ld STOP more"], "Hello world "),
                                          (["He", "llo ST", "OP", "!"], "Hello ")])
def test_a_stop_sequence_ends_the_answer_and_is_named(client: testing.TestClient, scheduler: FakeScheduler,
                                                      pieces: list[str], text: str) -> None:
    scheduler.script.append(chunks_for(pieces))
    r = post(client, stop_sequences=["STOP", "never"])
    assert r.json["content"] == [{"type": "text", "text": text}]
    assert (r.json["stop_reason"], r.json["stop_sequence"]) == ("stop_sequence", "STOP")
    assert scheduler.streams[-1].closed  # the generation was cancelled at the match
    assert "STOP" not in (generated(scheduler)[-1]["options"].get("stop") or [])
    scheduler.script.append(chunks_for(["no stop here"]))
    assert post(client, stop_sequences=["STOP"]).json["stop_sequence"] is None


# ---- the thinking budget ---------------------------------------------------------------------------------
def _budget_run(thinker: ModelStore, settings: Settings, first: list[dict[str, Any]], texts: Sequence[str],
                budget: int, **body: Any) -> tuple[TextScheduler, testing.Result]:
    scheduler = TextScheduler(texts)
    scheduler.script += [first, chunks_for(["Because."], prompt_tokens=20)]
    client = app_with(settings, thinker, scheduler)
    r = client.simulate_post("/v1/messages", json={"model": "thinker", "max_tokens": 10, "messages": ASK,
                                                   "thinking": {"type": "enabled", "budget_tokens": budget}, **body})
    return scheduler, r


def test_the_budget_closes_the_thinking_and_the_answer_follows(thinker: ModelStore, settings: Settings) -> None:
    scheduler, r = _budget_run(thinker, settings, chunks_for(["a", "b", "c", "d", "e"]), "abcde", 3)
    assert r.json["content"] == [{"type": "thinking", "thinking": "abc", "signature": ""},
                                 {"type": "text", "text": "Because."}]
    first, second = generated(scheduler)
    assert scheduler.streams[0].closed
    # The continuation is the first prompt's tokens, the 3 thinking tokens, then the close tag's tokens.
    assert second["prompt"] == [1, 2, 3, 100, 101, 102] + list(range(len("\n</think>\n\n")))
    assert second["options"]["num_predict"] == 10 - 3 and second["grammar"] is None
    assert r.json["usage"] == {"input_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                               "output_tokens": 3 + 1}


def test_the_budget_cuts_inside_a_chunk_of_many_tokens(thinker: ModelStore, settings: Settings) -> None:
    first = [{"text": "abcde", "tokens": [100, 101, 102, 103, 104], "done": False},
             *chunks_for([], prompt_tokens=7)]
    _, r = _budget_run(thinker, settings, first, "abcde", 2, stream=True)
    events = sse(r)
    thinking = "".join(d["delta"]["thinking"] for e, d in events if e == "content_block_delta"
                       and d["delta"]["type"] == "thinking_delta")
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta"
                   and d["delta"]["type"] == "text_delta")
    assert (thinking, text) == ("ab", "Because.")
    assert [d["content_block"]["type"] for e, d in events if e == "content_block_start"] == ["thinking", "text"]


def test_thinking_that_ends_within_the_budget_is_left_alone(thinker: ModelStore, settings: Settings) -> None:
    first = [{"text": "ab</think>xy", "tokens": [100, 101, 102, 103], "done": False}, *chunks_for([])]
    scheduler, r = _budget_run(thinker, settings, first, ["a", "b", "</think>", "xy"], 3)
    assert r.json["content"] == [{"type": "thinking", "thinking": "ab", "signature": ""},
                                 {"type": "text", "text": "xy"}]
    assert len(generated(scheduler)) == 1


def test_a_forced_tool_call_follows_the_budget(thinker: ModelStore, settings: Settings, tiny_gguf: Path) -> None:
    add_model(thinker, "thinktools", tiny_gguf, template=THINKER_TEMPLATE.replace(
        "{{- range .Messages }}", "{{ if .Tools }}Tools: {{ json .Tools }}\n{{ end }}{{- range .Messages }}"))
    scheduler = TextScheduler("abcde")
    scheduler.script += [chunks_for(list("abcde")), chunks_for(['{"name": "get_weather", "arguments": '
                                                                 '{"city": "Paris"}}'])]
    client = app_with(settings, thinker, scheduler)
    r = client.simulate_post("/v1/messages", json={
        "model": "thinktools", "max_tokens": 50, "messages": ASK, "tools": [WEATHER], "tool_choice": {"type": "any"},
        "thinking": {"type": "enabled", "budget_tokens": 3}})
    assert r.status_code == 200, r.text
    first, second = generated(scheduler)
    assert "think-body" in first["grammar"]  # free thinking first, then the call
    assert second["grammar"] and "think-body" not in second["grammar"]  # the call from the first token
    assert [b["type"] for b in r.json["content"]] == ["thinking", "tool_use"]
    assert r.json["content"][1]["input"] == {"city": "Paris"} and r.json["stop_reason"] == "tool_use"


# ---- count_tokens ----------------------------------------------------------------------------------------
def test_count_tokens_counts_the_prompt_that_generates(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    body = {"model": "tiny", "system": "Be brief.", "messages": ASK, "tools": [WEATHER]}
    counted = client.simulate_post("/v1/messages/count_tokens", json=body)
    assert counted.status_code == 200 and counted.headers["request-id"]
    assert not generated(scheduler)  # a text prompt is counted by the tokenizer, nothing generates
    post(client, **{k: v for k, v in body.items() if k != "model"})
    prompt = generated(scheduler)[-1]["prompt"]
    assert counted.json == {"input_tokens": len(prompt.encode())}  # the fake tokenizer: one token a byte
    bad = client.simulate_post("/v1/messages/count_tokens", json={"model": "tiny"})
    assert bad.status_code == 400 and bad.json["error"]["message"] == "messages is required"


def test_usage_is_recorded_once_per_message(thinker: ModelStore, settings: Settings, usage: Any) -> None:
    scheduler = TextScheduler("abcde")
    scheduler.script += [chunks_for(list("abcde")), chunks_for(["Because."])]
    client = testing.TestClient(create_app(settings, StorePort(thinker), scheduler, usage=usage),
                                headers={"Host": "127.0.0.1:11434"})
    client.simulate_post("/v1/messages", json={"model": "thinker", "max_tokens": 10, "messages": ASK,
                                               "thinking": {"type": "enabled", "budget_tokens": 2}})
    totals = usage.query()["totals"]
    assert totals["requests"] == 1 and totals["prompt_tokens"] == 7 and totals["completion_tokens"] == 2 + 1


def test_openapi_documents_the_routes(client: testing.TestClient) -> None:
    doc = client.simulate_get("/openapi.json").json
    post_ = doc["paths"]["/v1/messages"]["post"]
    assert post_["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/MessagesRequest")
    assert "529" in post_["responses"] and "/AnthropicError" in json.dumps(post_["responses"]["404"])
    count = doc["paths"]["/v1/messages/count_tokens"]["post"]
    assert count["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CountTokensResponse")



def test_browsers_may_send_anthropics_headers(client: testing.TestClient) -> None:
    r = client.simulate_options("/v1/messages", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "anthropic-version,anthropic-beta,x-api-key"})
    assert r.status_code == 204
    allowed = r.headers["access-control-allow-headers"].lower()
    assert all(h in allowed for h in ("anthropic-version", "anthropic-beta", "x-api-key",
                                      "anthropic-dangerous-direct-browser-access"))


def test_the_sdk_raises_overloaded_and_stream_errors(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    anthropic = pytest.importorskip("anthropic")
    try:  # the 2.x SDK is built on httpx2, earlier ones on httpx
        import httpx2 as http_client
    except ImportError:
        import httpx as http_client

    http = http_client.Client(transport=http_client.WSGITransport(app=client.app),
                              headers={"Host": "127.0.0.1:11434"})
    sdk = anthropic.Anthropic(base_url="http://127.0.0.1:11434", api_key="unused", http_client=http, max_retries=0)
    scheduler.script.append(Busy())
    with pytest.raises(anthropic.OverloadedError) as busy:
        sdk.messages.create(model="tiny", max_tokens=4, messages=ASK)
    assert busy.value.status_code == 529 and busy.value.body["error"]["type"] == "overloaded_error"
    scheduler.script.append([{"text": "Hi", "tokens": [1], "done": False}, EngineError("inference failed: boom")])
    with pytest.raises(anthropic.APIStatusError, match="boom"):
        with sdk.messages.stream(model="tiny", max_tokens=4, messages=ASK) as stream:
            stream.get_final_message()
