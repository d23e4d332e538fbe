"""Thinking through both APIs: think true/false/levels, reasoning_effort, thinking and reasoning fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from power.store import ModelStore
from tests.server.conftest import FakeScheduler, add_model, chunks_for

THINK_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>\n{{ end -}}"
    "<|im_start|>assistant\nlevel={{ .ThinkLevel }} think={{ .Think }}\n"
)
ASK = [{"role": "user", "content": "why?"}]


@pytest.fixture
def thinker(library: ModelStore, tiny_gguf: Path, make_client: Any) -> testing.TestClient:
    add_model(library, "thinker", tiny_gguf, template=THINK_TEMPLATE)
    client: testing.TestClient = make_client()
    return client


def prompt_of(scheduler: FakeScheduler) -> str:
    return str([c for c in scheduler.calls if c[0] == "generate"][-1][1]["prompt"])


def test_thinking_is_on_by_default_and_split(thinker: testing.TestClient, scheduler: FakeScheduler) -> None:
    assert "thinking" in thinker.simulate_post("/api/show", json={"model": "thinker"}).json["capabilities"]
    scheduler.script.append(chunks_for(["<think>hm", "m</think>", "Because."]))
    r = thinker.simulate_post("/api/chat", json={"model": "thinker", "messages": ASK, "stream": False})
    assert "level=medium think=true" in prompt_of(scheduler)
    assert r.json["message"] == {"role": "assistant", "content": "Because.", "thinking": "hmm"}


@pytest.mark.parametrize("think, expect", [(True, "level=medium think=true"), ("high", "level=high think=true"),
                                           ("max", "level=max think=true"), (False, "level= think=false")])
def test_native_think_values(thinker: testing.TestClient, scheduler: FakeScheduler, think: Any,
                             expect: str) -> None:
    r = thinker.simulate_post("/api/chat", json={"model": "thinker", "messages": ASK, "think": think,
                                                 "stream": False})
    assert r.status_code == 200 and expect in prompt_of(scheduler)


def test_generate_streams_thinking(thinker: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for(["<think>a", "b</think>c"]))
    r = thinker.simulate_post("/api/generate", json={"model": "thinker", "prompt": "q", "think": "low"})
    out = [json.loads(x) for x in r.text.splitlines()]
    assert "".join(c.get("thinking", "") for c in out) == "ab" and "".join(c["response"] for c in out) == "c"


@pytest.mark.parametrize("body, expect", [
    ({"reasoning_effort": "minimal"}, "level=low think=true"), ({"reasoning_effort": "xhigh"}, "level=max"),
    ({"reasoning": {"effort": "medium"}}, "level=medium"), ({"reasoning_effort": "none"}, "think=false"),
    ({}, "level=medium think=true"),
])
def test_openai_reasoning_effort(thinker: testing.TestClient, scheduler: FakeScheduler, body: dict[str, Any],
                                 expect: str) -> None:
    r = thinker.simulate_post("/v1/chat/completions", json={"model": "thinker", "messages": ASK, **body})
    assert r.status_code == 200 and expect in prompt_of(scheduler)


def test_openai_reasoning_field_and_stream_split(thinker: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for(["<think>hmm</think>Yes"]))
    r = thinker.simulate_post("/v1/chat/completions", json={"model": "thinker", "messages": ASK})
    assert r.json["choices"][0]["message"] == {"role": "assistant", "content": "Yes", "reasoning": "hmm"}
    scheduler.script.append(chunks_for(["<think>hmm</think>Yes"]))
    r = thinker.simulate_post("/v1/chat/completions", json={"model": "thinker", "messages": ASK, "stream": True})
    events = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0] == {"role": "assistant", "reasoning": "hmm"} and deltas[1] == {"content": "Yes"}
    bad = thinker.simulate_post("/v1/chat/completions", json={"model": "thinker", "messages": ASK,
                                                              "reasoning_effort": "extreme"})
    assert bad.status_code == 400 and "invalid reasoning effort" in bad.json["error"]["message"]


def _grammar_of(scheduler: FakeScheduler) -> str:
    return str([c for c in scheduler.calls if c[0] == "generate"][-1][1]["grammar"])


@pytest.mark.parametrize("think", [True, "high"])
def test_format_constrains_the_answer_after_thinking(thinker: testing.TestClient, scheduler: FakeScheduler,
                                                     think: Any) -> None:
    scheduler.script.append(chunks_for(["<think>let me see", "</think>", '{"a": 1}']))
    r = thinker.simulate_post("/api/chat", json={"model": "thinker", "messages": ASK, "think": think,
                                                 "format": "json", "stream": False})
    grammar = _grammar_of(scheduler)
    assert grammar.startswith('root ::= (think-ws "<think>" think-body "</think>" think-ws)? answer-root')
    assert r.json["message"] == {"role": "assistant", "content": '{"a": 1}', "thinking": "let me see"}
    client_openai = thinker.simulate_post("/v1/chat/completions", json={
        "model": "thinker", "messages": ASK, "response_format": {"type": "json_object"}})
    assert client_openai.status_code == 200 and "think-body" in _grammar_of(scheduler)


def test_without_thinking_format_constrains_from_the_start(thinker: testing.TestClient,
                                                            scheduler: FakeScheduler) -> None:
    thinker.simulate_post("/api/chat", json={"model": "thinker", "messages": ASK, "think": False,
                                             "format": "json", "stream": False})
    assert "think-body" not in _grammar_of(scheduler) and _grammar_of(scheduler).startswith("root ::=")
