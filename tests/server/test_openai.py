"""Golden shapes of the OpenAI-compatible API."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from falcon import testing

from tests.server.conftest import FakeScheduler, chunks_for

MESSAGES = [{"role": "user", "content": "hi"}]


def events(result: testing.Result) -> list[Any]:
    assert result.headers["content-type"].startswith("text/event-stream")
    out: list[Any] = []
    for block in result.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_chat_completion(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    body = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES}).json
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["system_fingerprint"] == "fp_ollama" and body["model"] == "tiny:latest"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                                "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    opts = scheduler.calls[-1][1]["options"]
    assert opts["temperature"] == 1.0 and opts["top_p"] == 1.0


def test_chat_completion_stream_with_usage(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for(["Hel", "lo"], done_reason="length"))
    out = events(client.simulate_post("/v1/chat/completions", json={
        "model": "tiny", "messages": MESSAGES, "stream": True, "max_tokens": 2,
        "stream_options": {"include_usage": True}}))
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["created"] for c in chunks}) == 1 and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert chunks[1]["choices"][0]["delta"] == {"content": "lo"}
    assert chunks[2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length"}
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["completion_tokens"] == 2
    assert scheduler.calls[-1][1]["options"]["num_predict"] == 2


def test_chat_completion_with_n_choices(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script += [chunks_for(["Hel", "lo"], done_reason="length"), chunks_for(["Yo"])]
    body = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, "n": 2}).json
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "length"},
        {"index": 1, "message": {"role": "assistant", "content": "Yo"}, "finish_reason": "stop"}]
    # the prompt once, every choice's completion
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    scheduler.script += [chunks_for(["Hel", "lo"], done_reason="length"), chunks_for(["Yo"])]
    out = events(client.simulate_post("/v1/chat/completions", json={
        "model": "tiny", "messages": MESSAGES, "stream": True, "n": 2, "stream_options": {"include_usage": True}}))
    assert [c["choices"][0] if c["choices"] else c["usage"]["completion_tokens"] for c in out[:-1]] == [
        {"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None},
        {"index": 0, "delta": {"content": "lo"}, "finish_reason": None},
        {"index": 0, "delta": {}, "finish_reason": "length"},
        {"index": 1, "delta": {"role": "assistant", "content": "Yo"}, "finish_reason": None},
        {"index": 1, "delta": {}, "finish_reason": "stop"},
        3]
    text = client.simulate_post("/v1/completions", json={"model": "tiny", "prompt": "hi", "n": 2}).json
    assert [(c["index"], c["text"], c["finish_reason"]) for c in text["choices"]] == [
        (0, "Hello world", "stop"), (1, "Hello world", "stop")]
    assert text["usage"]["completion_tokens"] == 4 and text["usage"]["prompt_tokens"] == 7


def test_chat_completion_tool_call_stream(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    scheduler.script.append(chunks_for(['<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
                                        "</tool_call>"]))
    out = events(client.simulate_post("/v1/chat/completions", json={
        "model": "tiny", "messages": MESSAGES, "tools": tools, "stream": True}))
    call = out[0]["choices"][0]["delta"]["tool_calls"][0]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_chat_completion_errors(client: testing.TestClient) -> None:
    r = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400
    assert r.json == {"error": {"message": "[] is too short - 'messages'", "type": "invalid_request_error",
                                "param": None, "code": None}}
    r = client.simulate_post("/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    assert r.status_code == 404 and r.json["error"]["type"] == "not_found_error"
    r = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]})
    assert r.status_code == 400 and "data URL" in r.json["error"]["message"]


def test_completions(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    body = client.simulate_post("/v1/completions", json={"model": "tiny", "prompt": "once"}).json
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "Hello world" and body["choices"][0]["finish_reason"] == "stop"
    out = events(client.simulate_post("/v1/completions", json={
        "model": "tiny", "prompt": "once", "stream": True, "stream_options": {"include_usage": True}}))
    assert out[-1] == "[DONE]" and out[-2]["choices"] == [] and out[-2]["usage"]["total_tokens"] == 9
    assert all(c["object"] == "text_completion" and "usage" in c for c in out[:-1])


def test_models(client: testing.TestClient) -> None:
    body = client.simulate_get("/v1/models").json
    assert body["object"] == "list"
    assert {m["id"] for m in body["data"]} == {"tiny:latest", "embedder:latest"}
    assert all(m["object"] == "model" and m["owned_by"] == "library" and m["created"] > 0 for m in body["data"])
    one = client.simulate_get("/v1/models/tiny:latest").json
    assert one["id"] == "tiny:latest"
    missing = client.simulate_get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json["error"]["type"] == "not_found_error"


def test_embeddings(client: testing.TestClient) -> None:
    body = client.simulate_post("/v1/embeddings", json={"model": "embedder", "input": ["a", "b"]}).json
    assert body["object"] == "list" and body["model"] == "embedder:latest"
    assert body["data"][1] == {"object": "embedding", "embedding": [0.6, 0.8, 0.0], "index": 1}
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    b64 = client.simulate_post("/v1/embeddings", json={"model": "embedder", "input": "a",
                                                       "encoding_format": "base64"}).json
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert [round(x, 5) for x in struct.unpack("<3f", raw)] == [0.6, 0.8, 0.0]
    bad = client.simulate_post("/v1/embeddings", json={"model": "embedder", "input": "a", "encoding_format": "hex"})
    assert bad.status_code == 400 and bad.json["error"]["type"] == "invalid_request_error"
