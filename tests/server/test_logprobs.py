"""Logprobs on both APIs: Ollama's items, OpenAI's ``choices[].logprobs.content`` and completions' lists."""

from __future__ import annotations

import json
from typing import Any

from falcon import testing

from tests.server.conftest import FakeScheduler, chunks_for


def lp(token: str, logprob: float, *top: tuple[str, float]) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": p, "bytes": list(t.encode())} for t, p in top]}


def scripted(scheduler: FakeScheduler) -> list[dict[str, Any]]:
    chunks = chunks_for(["Hel", "lo"])
    chunks[0]["logprobs"] = [lp("Hel", -0.5, ("Hel", -0.5), ("Hi", -1.5))]
    chunks[1]["logprobs"] = [lp("lo", -0.25, ("lo", -0.25), ("p", -2.0))]
    scheduler.script.append(chunks)
    return chunks


def sent_logprobs(scheduler: FakeScheduler) -> int:
    return int([c for c in scheduler.calls if c[0] == "generate"][-1][1]["logprobs"])


def test_native_generate_logprobs(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scripted(scheduler)
    r = client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "p", "stream": False,
                                                    "logprobs": True, "top_logprobs": 2})
    assert sent_logprobs(scheduler) == 2
    items = r.json["logprobs"]
    assert [i["token"] for i in items] == ["Hel", "lo"]
    assert items[0] == lp("Hel", -0.5, ("Hel", -0.5), ("Hi", -1.5))
    scripted(scheduler)
    r = client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "p", "logprobs": True})
    assert sent_logprobs(scheduler) == 0
    out = [json.loads(x) for x in r.text.splitlines()]
    assert [c["logprobs"][0]["token"] for c in out if "logprobs" in c] == ["Hel", "lo"]
    client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "p", "stream": False})
    assert sent_logprobs(scheduler) == -1


def test_native_chat_logprobs(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scripted(scheduler)
    r = client.simulate_post("/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "p"}],
                                                "stream": False, "logprobs": True, "top_logprobs": 1})
    assert r.json["message"]["content"] == "Hello" and len(r.json["logprobs"]) == 2
    assert set(r.json["logprobs"][1]) == {"token", "logprob", "bytes", "top_logprobs"}


def test_openai_chat_logprobs(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "p"}], "logprobs": True, "top_logprobs": 2}
    scripted(scheduler)
    r = client.simulate_post("/v1/chat/completions", json=body)
    assert sent_logprobs(scheduler) == 2
    content = r.json["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == ["Hel", "lo"]
    assert content[0]["top_logprobs"][1] == {"token": "Hi", "logprob": -1.5, "bytes": list(b"Hi")}
    scripted(scheduler)
    r = client.simulate_post("/v1/chat/completions", json={**body, "stream": True})
    events = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")]
    streamed = [e["choices"][0]["logprobs"]["content"][0]["token"] for e in events
                if e["choices"] and e["choices"][0].get("logprobs")]
    assert streamed == ["Hel", "lo"]
    r = client.simulate_post("/v1/chat/completions", json={**body, "logprobs": False})
    assert sent_logprobs(scheduler) == -1 and "logprobs" not in r.json["choices"][0]


def test_openai_completions_logprobs(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scripted(scheduler)
    r = client.simulate_post("/v1/completions", json={"model": "tiny", "prompt": "p", "logprobs": 2})
    assert sent_logprobs(scheduler) == 2
    got = r.json["choices"][0]["logprobs"]
    assert got == {"tokens": ["Hel", "lo"], "token_logprobs": [-0.5, -0.25],
                   "top_logprobs": [{"Hel": -0.5, "Hi": -1.5}, {"lo": -0.25, "p": -2.0}], "text_offset": [0, 3]}
    scripted(scheduler)
    r = client.simulate_post("/v1/completions", json={"model": "tiny", "prompt": "p", "logprobs": 0,
                                                      "stream": True})
    events = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")]
    parts = [e["choices"][0]["logprobs"] for e in events if e["choices"] and e["choices"][0]["logprobs"]]
    assert [p["tokens"] for p in parts] == [["Hel"], ["lo"]] and [p["text_offset"] for p in parts] == [[0], [3]]
    r = client.simulate_post("/v1/completions", json={"model": "tiny", "prompt": "p"})
    assert r.json["choices"][0]["logprobs"] is None
    assert client.simulate_post("/v1/completions", json={"model": "tiny", "prompt": "p",
                                                         "logprobs": 21}).status_code == 400
