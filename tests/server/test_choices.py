"""OpenAI's ``n``: several choices of one prompt, through real gunicorn, a real runner and the openai client."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from power.store import ModelStore
from tests.server.conftest import add_model
from tests.server.live import LiveServer
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_llama

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

SLOTS = 3
SAMPLED: dict[str, Any] = {"temperature": 1.5, "max_tokens": 12}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("choices-home")
    gguf = write_llama(home / "tiny.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    add_model(ModelStore(home / "models", noprune=True), "tiny", gguf)
    live = LiveServer(home, {"OLLAMA_NUM_PARALLEL": str(SLOTS)})
    yield live
    assert live.stop() == 0


@pytest.fixture()
def client(server: LiveServer) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def counters(server: LiveServer) -> dict[str, float]:
    """The /metrics samples of the tiny model, by name with labels."""
    status, body = server.request("GET", "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        m = re.fullmatch(r'([a-z0-9_:]+)\{(model="tiny:latest"[^}]*)\} (\S+)', line)
        if m:
            out[f"{m.group(1)}{{{m.group(2)}}}"] = float(m.group(3))
    return out


def test_three_seeded_choices_from_one_prompt_evaluation(server: LiveServer, client: Any) -> None:
    messages = ask("tell me three different stories about a lighthouse keeper and the sea at night")
    client.chat.completions.create(model="tiny", messages=ask("load the model"), max_tokens=1)
    before = counters(server)
    out = client.chat.completions.create(model="tiny", messages=messages, n=3, seed=5, **SAMPLED)
    after = counters(server)
    assert [c.index for c in out.choices] == [0, 1, 2]
    texts = [c.message.content for c in out.choices]
    assert len(set(texts)) == 3 and all(texts)
    assert [c.finish_reason for c in out.choices] == ["length"] * 3
    # OpenAI's usage: the prompt once, the completions of every choice
    single = client.chat.completions.create(model="tiny", messages=messages, seed=5, **SAMPLED)
    assert out.usage.prompt_tokens == single.usage.prompt_tokens > 10
    assert out.usage.completion_tokens == 3 * 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + 36
    assert single.choices[0].message.content == texts[0]  # choice 0 is what n=1 with the seed answers
    # one evaluation: the runner's cache reused the whole prompt for choices 1 and 2, and the server counts
    # only choice 0's evaluated tokens
    cached = out.usage.prompt_tokens_details.cached_tokens
    tiers = [f'a3s_power_prompt_cache_restored_tokens_total{{model="tiny:latest",tier="{t}"}}' for t in ("kv", "ram")]
    assert sum(after.get(t, 0) - before.get(t, 0) for t in tiers) == cached + 2 * out.usage.prompt_tokens
    evaluated = 'a3s_power_prompt_tokens_total{model="tiny:latest"}'
    assert after[evaluated] - before[evaluated] == out.usage.prompt_tokens - cached
    again = client.chat.completions.create(model="tiny", messages=messages, n=3, seed=5, **SAMPLED)
    assert [c.message.content for c in again.choices] == texts


def test_streamed_choices_carry_their_index_and_finish_each(client: Any) -> None:
    messages = ask("a poem about winter mornings in the mountains, please")
    whole = client.chat.completions.create(model="tiny", messages=messages, n=3, seed=9, **SAMPLED)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, n=3, seed=9, stream=True,
                                                 stream_options={"include_usage": True}, **SAMPLED))
    text: dict[int, str] = defaultdict(str)
    finishes: dict[int, list[str]] = defaultdict(list)
    roles: dict[int, str] = {}
    for chunk in chunks[:-1]:
        [choice] = chunk.choices
        i = choice.index
        assert not finishes[i], "nothing of a choice comes after its finish chunk"
        if choice.delta.role:
            roles.setdefault(i, choice.delta.role)
        assert i in roles, "a choice's first chunk says its role"
        text[i] += choice.delta.content or ""
        if choice.finish_reason:
            finishes[i].append(choice.finish_reason)
    assert dict(finishes) == {0: ["length"], 1: ["length"], 2: ["length"]}
    assert [text[i] for i in range(3)] == [c.message.content for c in whole.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 36
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_tool_calls_and_logprobs_per_choice(client: Any) -> None:
    messages = ask("What is the weather in Paris?")
    forced = {"type": "function", "function": {"name": "get_weather"}}
    out = client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER], tool_choice=forced,
                                         n=2, seed=4, max_tokens=400)
    for choice in out.choices:
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    streamed = list(client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER],
                                                   tool_choice=forced, n=2, seed=4, max_tokens=400, stream=True))
    called = {c.choices[0].index for c in streamed if c.choices and c.choices[0].delta.tool_calls}
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in streamed if c.choices[0].finish_reason}
    assert called == {0, 1} and finished == {0: "tool_calls", 1: "tool_calls"}
    lp = client.chat.completions.create(model="tiny", messages=ask("hello"), n=2, logprobs=True, top_logprobs=2,
                                        seed=1, **{**SAMPLED, "max_tokens": 5})
    for choice in lp.choices:
        assert len(choice.logprobs.content) == 5
        assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)


def test_legacy_completions_with_n(client: Any) -> None:
    prompt = "Once upon a time, far away, there was a little town by a river"
    out = client.completions.create(model="tiny", prompt=prompt, n=2, seed=3, **SAMPLED)
    assert [c.index for c in out.choices] == [0, 1] and out.choices[0].text != out.choices[1].text
    assert out.usage.completion_tokens == 24
    chunks = list(client.completions.create(model="tiny", prompt=prompt, n=2, seed=3, stream=True, **SAMPLED))
    text: dict[int, str] = defaultdict(str)
    finished: dict[int, str] = {}
    for chunk in chunks:
        [choice] = chunk.choices
        assert choice.index not in finished
        text[choice.index] += choice.text
        if choice.finish_reason:
            finished[choice.index] = choice.finish_reason
    assert finished == {0: "length", 1: "length"}
    assert [text[0], text[1]] == [c.text for c in out.choices]


def test_n_beyond_the_parallel_sequences_or_not_a_positive_integer_is_a_400(server: LiveServer,
                                                                             client: Any) -> None:
    with pytest.raises(openai.BadRequestError, match=f"at most {SLOTS} choices at once"):
        client.chat.completions.create(model="tiny", messages=ask("hi"), n=SLOTS + 1, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match=f"between 1 and {SLOTS}"):
        client.completions.create(model="tiny", prompt="hi", n=10**12, max_tokens=2)
    for path, body in (("/v1/chat/completions", {"messages": ask("hi")}), ("/v1/completions", {"prompt": "hi"})):
        for n in (0, -2, 1.5, "2", True):
            status, answer = server.request("POST", path, {"model": "tiny", "n": n, "max_tokens": 2, **body})
            assert status == 400, (n, answer)
            assert json.loads(answer)["error"]
    one = client.chat.completions.create(model="tiny", messages=ask("hi"), n=1, max_tokens=3)
    assert [c.index for c in one.choices] == [0] and one.usage.completion_tokens == 3


def test_the_native_api_is_unaffected(server: LiveServer) -> None:
    native = ollama.Client(host=server.url)
    out = native.chat(model="tiny", messages=ask("hi"), options={"num_predict": 4, "seed": 2})
    assert out.message.role == "assistant" and out.eval_count == 4
    gen = native.generate(model="tiny", prompt="hi", options={"num_predict": 3})
    assert gen.done and gen.eval_count == 3
