"""``show`` on Qwen2.5-Coder 0.5B (slow): its GGUF's Jinja template with tools, and the show --modelfile round trip.

Without a TEMPLATE layer the model renders with the GGUF's Jinja chat template; ``show`` must report that
source (litellm's ``get_model_info`` says a model calls functions when ``"tools"`` is in ``template``), and a
model created from ``show --modelfile`` must format a chat with a system message and tools byte for byte as
the original.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.store import parse_modelfile
from tests.server.realapp import RealApp, real_app

pytestmark = pytest.mark.slow

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name"}},
                   "required": ["city"]}}}
CHAT = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18 degrees and sunny"},
        {"role": "user", "content": "Should I take a coat?"}]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApp]:
    from tests.realmodels import qwen25_coder_05b

    yield from real_app(tmp_path_factory.mktemp("show-slow"), {"qwen": qwen25_coder_05b()}, context_length=4096)


def rendered(real: RealApp, model: str, tools: Any) -> str:
    r = real.client.simulate_post("/api/chat", json={"model": model, "messages": CHAT, "tools": tools,
                                                     "_debug_render_only": True})
    assert r.status_code == 200, r.text
    return str(r.json["_debug_info"]["rendered_template"])


def test_qwen_show_template_and_round_trip(real: RealApp, tmp_path: Path) -> None:
    shown = real.client.simulate_post("/api/show", json={"model": "qwen"}).json
    template = shown["template"]
    assert "{%" in template and "<|im_start|>" in template and template != "{{ .Prompt }}"
    assert "tools" in shown["capabilities"]
    assert "tools" in template.lower()  # litellm: supports_function_calling
    original = rendered(real, "qwen", [WEATHER])
    assert "get_weather" in original and "You are a helpful assistant." in original
    assert original.endswith("<|im_start|>assistant\n")

    assert parse_modelfile(shown["modelfile"]).last("template") == template
    list(real.library.create_from_modelfile("qwen-copy", shown["modelfile"], tmp_path))
    copy = real.client.simulate_post("/api/show", json={"model": "qwen-copy"}).json
    assert copy["template"] == template and copy["capabilities"] == shown["capabilities"]
    assert rendered(real, "qwen-copy", [WEATHER]) == original
    assert rendered(real, "qwen-copy", None) == rendered(real, "qwen", None)
    assert real.library.get("qwen-copy").digest == real.library.get("qwen").digest  # the very same model
    # /api/create's template field, as a client copying show's template would send it
    r = real.client.simulate_post("/api/create", json={"model": "qwen-from", "from": "qwen", "template": template,
                                                       "stream": False})
    assert r.status_code == 200, r.text
    assert real.client.simulate_post("/api/show", json={"model": "qwen-from"}).json["template"] == template
    assert rendered(real, "qwen-from", [WEATHER]) == original
    # and it still answers, its load reported on the way: 491 MB of weights, one line a percent at most
    r = real.client.simulate_post("/api/chat", json={"model": "qwen-copy", "messages": CHAT[:2], "load_progress": True,
                                                     "options": {"num_predict": 8, "temperature": 0}})
    out = [json.loads(x) for x in r.text.splitlines() if x.strip()]
    progress = [x for x in out if x.get("status") == "loading model"]
    assert len(progress) >= 10 and out[:len(progress)] == progress
    assert [p["completed"] for p in progress] == sorted({p["completed"] for p in progress})
    assert progress[-1]["completed"] == progress[-1]["total"] >= 491_400_064
    assert out[-1]["done"] is True and out[-1]["eval_count"] <= 8
