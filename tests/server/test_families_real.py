"""Real chat templates of three families through the real scheduler and runners, on tiny models.

``tool_choice`` required or named forces a call in the family's own syntax, and
what the model writes under it comes back as a proper tool call on both APIs:
gpt-oss's harmony (a tiny model whose vocabulary has harmony's special tokens,
so the engine's detokenizer shows them as it does for gpt-oss), Qwen3-Coder's
``<function=...>`` parameters and GLM 4.6's ``<arg_key>`` pairs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.prompt.templates_kit import FOLDER
from tests.server.realapp import RealApp, real_app
from tests.tinymodels import write_llama

TEMPLATES = {"gptoss": "openai-gpt-oss-120b", "qwen3coder": "Qwen3-Coder", "glm": "GLM-4.6"}
HARMONY = ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|constrain|>", "<|return|>", "<|call|>"]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]},
                                     "days": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["city", "days"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
OPTIONS = {"temperature": 1.0, "seed": 3, "num_predict": 300}

pytestmark = pytest.mark.skipif(not FOLDER.is_dir(), reason=f"{FOLDER} is absent")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApp]:
    home = tmp_path_factory.mktemp("families")
    models = {name: write_llama(home / f"{name}.gguf", seed=2, chat_template=(FOLDER / f"{stem}.jinja").read_text(),
                                specials=HARMONY if name == "gptoss" else ())
              for name, stem in TEMPLATES.items()}
    yield from real_app(home, models)


@pytest.mark.parametrize("model", sorted(TEMPLATES))
def test_required_call_in_the_familys_syntax_on_the_native_api(real: RealApp, model: str) -> None:
    r = real.client.simulate_post("/api/chat", json={"model": model, "messages": ASK, "tools": [WEATHER, CLOCK],
                                                     "tool_choice": "required", "think": False, "stream": False,
                                                     "options": OPTIONS})
    assert r.status_code == 200, r.text
    message = r.json["message"]
    assert [c["function"]["name"] for c in message["tool_calls"]] in (["get_weather"], ["get_time"]), message
    call = message["tool_calls"][0]["function"]
    if call["name"] == "get_weather":
        assert call["arguments"]["city"] in ("Paris", "Oslo") and 1 <= call["arguments"]["days"] <= 5
    assert message["content"] == ""


@pytest.mark.parametrize("model", sorted(TEMPLATES))
def test_named_call_streams_through_the_openai_client(real: RealApp, model: str) -> None:
    stream = real.openai().chat.completions.create(
        model=model, messages=ASK, tools=[WEATHER, CLOCK], seed=5, max_tokens=300, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, reasoning_effort="none")
    content, calls, finish = "", [], None
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None:
            content += delta.content or ""
            calls += delta.tool_calls or []
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls" and content == ""
    assert [c.function.name for c in calls] == ["get_weather"]
    args: dict[str, Any] = json.loads(calls[0].function.arguments)
    assert args["city"] in ("Paris", "Oslo") and 1 <= args["days"] <= 5


def test_gpt_oss_headers_never_reach_the_content(real: RealApp) -> None:
    """A harmony answer the sampler writes (through a user grammar) comes back split, on generate and chat."""
    grammar = ('root ::= "<|channel|>analysis<|message|>" [a-z]{3,8} "<|end|><|start|>assistant<|channel|>final'
               '<|message|>" [a-z]{3,8}')
    options = {**OPTIONS, "grammar": grammar}
    r = real.client.simulate_post("/api/chat", json={"model": "gptoss", "messages": ASK, "stream": False,
                                                     "options": options})
    assert r.status_code == 200, r.text
    message = r.json["message"]
    assert message["content"].isalpha() and message["thinking"].isalpha(), message
    g = real.client.simulate_post("/api/generate", json={"model": "gptoss", "prompt": "hi", "stream": False,
                                                         "think": False, "options": options})
    assert g.status_code == 200 and g.json["response"].isalpha() and "thinking" not in g.json, g.json


@pytest.mark.parametrize(("model", "thinks"), [("gptoss", True), ("glm", True), ("qwen3coder", False)])
def test_show_capabilities_follow_the_familys_tags(real: RealApp, model: str, thinks: bool) -> None:
    """gpt-oss thinks in its analysis channel (no <think> in its template), so it is a thinking model."""
    r = real.client.simulate_post("/api/show", json={"model": model})
    caps = r.json["capabilities"]
    assert "tools" in caps and ("thinking" in caps) == thinks, caps
    answer = real.client.simulate_post("/api/chat", json={"model": model, "messages": ASK, "think": True,
                                                          "stream": False, "options": {"num_predict": 2}})
    assert answer.status_code == (200 if thinks else 400), answer.text
