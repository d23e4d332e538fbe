"""``/api/show`` reports the Jinja chat template a GGUF model really renders with, and copying it round-trips.

The tiny model's GGUF carries a Jinja template with tools (as Qwen2.5's does) and no TEMPLATE layer: show
must say so (litellm's ``get_model_info`` reads function calling from ``"tools" in template``), and a model
made from ``show --modelfile``, or from its ``template`` put on a GGUF that has none, must format prompts
byte for byte as the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from falcon import testing

from power.store import ModelStore, parse_modelfile
from tests.server.conftest import add_model
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_llama

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather \"now\" in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18C"}, {"role": "user", "content": "And tomorrow?"}]


def rendered(client: testing.TestClient, model: str, tools: Any = (WEATHER,)) -> str:
    r = client.simulate_post("/api/chat", json={"model": model, "messages": CHAT, "tools": list(tools) or None,
                                                "_debug_render_only": True})
    assert r.status_code == 200, r.text
    return str(r.json["_debug_info"]["rendered_template"])


def test_show_gives_the_jinja_template_and_a_copy_renders_the_same(
        client: testing.TestClient, library: ModelStore, tmp_path: Path) -> None:
    shown = client.simulate_post("/api/show", json={"model": "tiny"}).json
    assert shown["template"] == CHATML_TOOLS_TEMPLATE
    assert "tools" in shown["capabilities"] and "tools" in shown["template"].lower()  # litellm's test
    assert "{{ .Prompt }}" not in shown["modelfile"]
    original = rendered(client, "tiny")
    assert "# Tools" in original and "get_weather" in original and original.endswith("<|im_start|>assistant\n")

    # show --modelfile -> create, as a user copying it would (the FROM names the same GGUF blob)
    list(library.create_from_modelfile("copied", shown["modelfile"], tmp_path))
    # the template alone, on a GGUF that has no chat template of its own: stored and rendered as Jinja
    bare = write_llama(tmp_path / "bare.gguf", name="bare")
    add_model(library, "bare", bare)
    add_model(library, "rebuilt", bare, template=shown["template"])
    assert client.simulate_post("/api/show", json={"model": "bare"}).json["template"] == "{{ .Prompt }}"
    for name in ("copied", "rebuilt"):
        again = client.simulate_post("/api/show", json={"model": name}).json
        assert again["template"] == CHATML_TOOLS_TEMPLATE and again["capabilities"] == shown["capabilities"]
        assert parse_modelfile(again["modelfile"]).last("template") == CHATML_TOOLS_TEMPLATE
        assert rendered(client, name) == original
        assert rendered(client, name, tools=()) == rendered(client, "tiny", tools=())
        generate = client.simulate_post("/api/generate", json={
            "model": name, "prompt": "hi", "system": "Be brief.", "_debug_render_only": True}).json
        assert generate["_debug_info"]["rendered_template"] == (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


GO_PLAIN = "{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }}"
GO_TOOLS = "{{ if .Tools }}T:{{ .Tools }} {{ end }}{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }}"


def test_show_reports_whichever_template_renders(client: testing.TestClient, library: ModelStore,
                                                 tiny_gguf: Path, tmp_path: Path) -> None:
    bare = write_llama(tmp_path / "bare.gguf", name="bare")
    # A Go TEMPLATE that can do less than the GGUF's Jinja loses to it (as in Ollama): show says Jinja.
    cases = {"weaker": (tiny_gguf, GO_PLAIN, CHATML_TOOLS_TEMPLATE), "tools": (tiny_gguf, GO_TOOLS, GO_TOOLS),
             "alone": (bare, GO_PLAIN, GO_PLAIN)}
    for name, (gguf, template, want) in cases.items():
        add_model(library, name, gguf, template=template)
        shown = client.simulate_post("/api/show", json={"model": name}).json
        assert shown["template"] == want, name
        prompt = client.simulate_post("/api/generate", json={"model": name, "prompt": "hi", "system": "x",
                                                             "_debug_render_only": True}).json
        text = prompt["_debug_info"]["rendered_template"]
        assert (text == "S:x U:hi") is (want != CHATML_TOOLS_TEMPLATE), name
        assert ("tools" in shown["capabilities"]) is ("tools" in want.lower()), name
