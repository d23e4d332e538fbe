"""Structured output, forced tool calls, logprobs and adapters through the real scheduler and a tiny model."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import pytest

from tests.ggufgen import write_tiny_adapter
from tests.server.realapp import RealApp, real_app
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_llama

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0}},
          "required": ["ok", "n"]}
OPTIONS = {"temperature": 1.0, "seed": 4, "num_predict": 400}


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApp]:
    home = tmp_path_factory.mktemp("real-engine")
    model = write_llama(home / "tiny.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    lora = write_tiny_adapter(home / "lora.gguf", rank=4, seed=5)
    yield from real_app(home, {"tiny": model}, adapters={"tuned": ("tiny", lora)})


def test_format_schema_output_validates(real: RealApp) -> None:
    r = real.client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "a record", "stream": False,
                                                         "format": SCHEMA, "options": OPTIONS})
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json["response"]), SCHEMA)


def test_user_grammar_is_followed_and_a_broken_one_is_a_400(real: RealApp) -> None:
    r = real.client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False,
                                                         "options": {**OPTIONS, "grammar": 'root ::= "yes" | "no"'}})
    assert r.status_code == 200 and r.json["response"] in ("yes", "no")
    bad = real.client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False,
                                                           "options": {"grammar": "root ::= undefined-rule"}})
    assert bad.status_code == 400 and "rule 'undefined-rule' is used but not defined" in bad.json["error"]
    again = real.client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False,
                                                             "options": {"num_predict": 3}})
    assert again.status_code == 200



def test_a_grammar_that_cannot_be_followed_is_a_400_and_the_runner_lives(real: RealApp) -> None:
    def generate(grammar: str, stream: bool = False):
        return real.client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": stream,
                                                                "options": {"num_predict": 6, "grammar": grammar}})

    assert generate('root ::= "a"').status_code == 200
    pid = real.scheduler.ps()[0]["pid"]
    eog = generate('root ::= "a" <|im_end|>')  # an end-of-generation token, by name
    assert eog.status_code == 400 and "token <|im_end|> (id 267) ends the generation" in eog.json["error"]
    stuck = generate('root ::= "ab" [\\x00]')  # no token writes a NUL: stuck after two tokens
    assert stuck.status_code == 400 and "the grammar allows no token after 2 generated" in stuck.json["error"]
    lines = [json.loads(line) for line in generate('root ::= "ab" [\\x00]', stream=True).text.splitlines()]
    assert "".join(line.get("response", "") for line in lines[:-1]) == "ab"
    assert "the grammar allows no token" in lines[-1]["error"]
    assert generate('root ::= "yes"').json["response"] == "yes"
    assert real.scheduler.ps()[0]["pid"] == pid  # the same runner served every request

def test_forced_tool_call_through_both_apis(real: RealApp) -> None:
    r = real.client.simulate_post("/api/chat", json={"model": "tiny", "messages": ASK, "tools": [WEATHER],
                                                     "tool_choice": "required", "stream": False,
                                                     "options": OPTIONS})
    calls = r.json["message"]["tool_calls"]
    assert len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
    assert isinstance(calls[0]["function"]["arguments"]["city"], str)
    out = real.openai().chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER], seed=4, max_tokens=400,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert "city" in json.loads(choice.message.tool_calls[0].function.arguments)


def test_logprobs_from_the_engine(real: RealApp) -> None:
    r = real.client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False,
                                                         "logprobs": True, "top_logprobs": 3,
                                                         "options": {"num_predict": 4, "temperature": 0}})
    items = r.json["logprobs"]
    assert len(items) == 4 and "".join(i["token"] for i in items) == r.json["response"]
    for item in items:
        assert item["logprob"] <= 0 and len(item["top_logprobs"]) == 3
        assert item["top_logprobs"][0]["logprob"] >= item["top_logprobs"][-1]["logprob"]
        assert set(item["top_logprobs"][0]) == {"token", "logprob", "bytes"}
    out = real.openai().chat.completions.create(model="tiny", messages=ASK, max_tokens=3, logprobs=True,
                                                top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert len(content) == 3 and all(len(c.top_logprobs) == 2 for c in content)


def test_adapter_is_applied_at_load(real: RealApp) -> None:
    def text(model: str) -> str:
        r = real.client.simulate_post("/api/generate", json={"model": model, "prompt": "the", "stream": False,
                                                             "options": {"num_predict": 12, "temperature": 0}})
        assert r.status_code == 200, r.text
        return str(r.json["response"])

    show = real.client.simulate_post("/api/show", json={"model": "tuned"}).json
    assert "ADAPTER" in show["modelfile"]
    assert text("tiny") != text("tuned")
