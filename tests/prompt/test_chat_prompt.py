"""Building prompts from chat and generate requests, with Ollama's templates."""

from __future__ import annotations

import pytest
from prompt_template_texts import (
    LLAMA2_LEGACY,
    LLAMA32,
    MISTRAL,
    QWEN3_THINKING,
    QWEN25,
    QWEN25_JINJA,
    WEATHER_TOOL,
)

from power.errors import InvalidRequest, TemplateError
from power.prompt import (
    TemplateSource,
    build_chat,
    builtin_format,
    capabilities_of,
    render_chat,
    render_generate,
    think_values,
)

TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "22C", "tool_name": "get_weather"},
]


def test_llama32_with_tools_and_tool_results() -> None:
    out = render_chat(TemplateSource(go=LLAMA32), TOOL_TURNS, tools=[WEATHER_TOOL],
                      system_default="SYS")
    assert out.startswith("<|start_header_id|>system<|end_header_id|>\n\n"
                          "Cutting Knowledge Date: December 2023\n\nSYSWhen you receive a tool call")
    assert ('<|start_header_id|>assistant<|end_header_id|>\n\n'
            '{"name": "get_weather", "parameters": {"city":"Paris"}}<|eot_id|>') in out
    assert out.endswith("<|start_header_id|>ipython<|end_header_id|>\n\n22C<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_llama32_lists_tools_in_last_user_turn() -> None:
    out = render_chat(TemplateSource(go=LLAMA32), [{"role": "user", "content": "hi"}],
                      tools=[WEATHER_TOOL])
    assert 'Given the following functions' in out
    assert '{"type":"function","function":{"name":"get_weather",' in out
    assert out.endswith("\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_qwen25_go_template_with_tools() -> None:
    out = render_chat(TemplateSource(go=QWEN25), TOOL_TURNS, tools=[WEATHER_TOOL])
    assert out.startswith("<|im_start|>system\n\n# Tools\n")
    assert '{"type": "function", "function": {"name":"get_weather",' in out
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city":"Paris"}}\n</tool_call><|im_end|>\n') in out
    assert out.endswith("<tool_response>\n22C\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_mistral_template() -> None:
    out = render_chat(TemplateSource(go=MISTRAL), TOOL_TURNS, tools=[WEATHER_TOOL])
    assert out == ('[INST] Weather in Paris?[/INST][TOOL_CALLS] [{"name": "get_weather", '
                   '"arguments": {"city":"Paris"}}]</s>[TOOL_RESULTS] {"content": 22C} [/TOOL_RESULTS]')
    out = render_chat(TemplateSource(go=MISTRAL), [{"role": "user", "content": "hi"}],
                      tools=[WEATHER_TOOL], system_default="S")
    assert out.startswith('[AVAILABLE_TOOLS] [{"type":"function",')
    assert out.endswith("[/AVAILABLE_TOOLS][INST] S\n\nhi[/INST]")


def test_system_default_history_and_merging() -> None:
    source = TemplateSource(go=QWEN25)
    history = [{"role": "user", "content": "h1"}, {"role": "assistant", "content": "h2"}]
    out = render_chat(source, [{"role": "user", "content": "a"}, {"role": "USER", "content": "b"}],
                      system_default="MODSYS", history=history)
    assert out == ("<|im_start|>system\nMODSYS<|im_end|>\n<|im_start|>user\nh1<|im_end|>\n"
                   "<|im_start|>assistant\nh2<|im_end|>\n<|im_start|>user\na\n\nb<|im_end|>\n"
                   "<|im_start|>assistant\n")
    # A request that brings its own system message replaces the Modelfile's.
    out = render_chat(source, [{"role": "system", "content": "MINE"}, {"role": "user", "content": "x"}],
                      system_default="MODSYS")
    assert "MINE" in out and "MODSYS" not in out


def test_tool_messages_are_not_merged() -> None:
    turns = TOOL_TURNS + [{"role": "tool", "content": "23C", "tool_name": "get_weather"}]
    out = render_chat(TemplateSource(go=QWEN25), turns)
    assert out.count("<tool_response>") == 2


def test_legacy_template_runs_once_per_turn_and_stops_at_response() -> None:
    out = render_chat(TemplateSource(go=LLAMA2_LEGACY), [
        {"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}])
    assert out == "[INST] <<SYS>>S<</SYS>>\n\nu1 [/INST] a1</s>[INST] <<SYS>><</SYS>>\n\nu2 [/INST] "


def test_template_without_response_gets_it_appended() -> None:
    source = TemplateSource(go="Q: {{ .Prompt }}\nA:")
    out = render_chat(source, [{"role": "user", "content": "1"}, {"role": "assistant", "content": "one"},
                               {"role": "user", "content": "2"}])
    assert out == "Q: 1\nA:oneQ: 2\nA:"


def test_think_values_reach_the_template() -> None:
    source = TemplateSource(go=QWEN3_THINKING)
    assert render_chat(source, [{"role": "user", "content": "q"}], think=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render_chat(source, [{"role": "user", "content": "q"}], think=True).endswith(
        "<|im_start|>assistant\n")
    assert think_values("high") == {"Think": True, "ThinkLevel": "high", "IsThinkSet": True}
    assert think_values(True)["ThinkLevel"] == "medium"
    with pytest.raises(InvalidRequest):
        think_values("extreme")


def test_images_get_markers_and_come_back_in_order() -> None:
    built = build_chat(TemplateSource(go=QWEN25), [
        {"role": "user", "content": "look", "images": ["IMG0"]},
        {"role": "user", "content": "and [img] here", "images": ["IMG1"]}])
    assert built.images == ["IMG0", "IMG1"]
    assert "[img-0] look\n\nand [img-1] here" in built.text


def test_truncation_keeps_system_and_last_message() -> None:
    msgs = [{"role": "system", "content": "S"}]
    msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " + "w " * 20}
             for i in range(9)]

    def count(text: str) -> int:
        return len(text.split())

    full = build_chat(TemplateSource(go=QWEN25), msgs)
    built = build_chat(TemplateSource(go=QWEN25), msgs, num_ctx=80, count_tokens=count)
    assert built.truncated > 0 and count(built.text) <= 80
    assert built.text.startswith("<|im_start|>system\nS<|im_end|>")
    assert "m8" in built.text and "m0" not in built.text
    assert count(full.text) > 80
    tiny = build_chat(TemplateSource(go=QWEN25), msgs, num_ctx=5, count_tokens=count)
    assert "m8" in tiny.text and "m7" not in tiny.text and tiny.truncated == 8
    kept = build_chat(TemplateSource(go=QWEN25), msgs, num_ctx=5, count_tokens=count, truncate=False)
    assert kept.text == full.text


def test_generate_paths() -> None:
    source = TemplateSource(go=QWEN25)
    assert render_generate(source, "hello", system="S") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
    assert render_generate(source, "hello", system_default="MS").startswith(
        "<|im_start|>system\nMS<|im_end|>")
    assert render_generate(source, "raw text", raw=True) == "raw text"
    with pytest.raises(InvalidRequest, match="raw mode"):
        render_generate(source, "x", raw=True, system="S")
    assert render_generate(source, "p", template="<<{{ .Prompt }}>>") == "<<p>>"
    assert render_generate(TemplateSource(go=LLAMA2_LEGACY), "hello", system="S") == \
        "[INST] <<SYS>>S<</SYS>>\n\nhello [/INST] "
    history = [{"role": "user", "content": "H"}]
    assert "H" in render_generate(source, "p", history=history)
    with_context = render_generate(source, "p", history=history, context="EARLIER")
    assert with_context.startswith("EARLIER<|im_start|>user\np") and "H" not in with_context


def test_generate_suffix_fill_in_the_middle() -> None:
    fim = TemplateSource(go="{{ if .Suffix }}<PRE>{{ .Prompt }}<SUF>{{ .Suffix }}<MID>"
                            "{{ else }}{{ .Prompt }}{{ end }}")
    assert render_generate(fim, "def f(", suffix="return 1") == "<PRE>def f(<SUF>return 1<MID>"
    vocab = {"tokenizer.ggml.tokens": ["<|im_start|>", "<|fim_prefix|>", "<|fim_suffix|>",
                                       "<|fim_middle|>"]}
    qwen_coder = TemplateSource(jinja=QWEN25_JINJA, metadata=vocab)
    assert render_generate(qwen_coder, "a", suffix="b") == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
    with pytest.raises(InvalidRequest, match="m does not support insert"):
        render_generate(TemplateSource(go=QWEN25, model="m"), "a", suffix="b")


@pytest.mark.parametrize("meta, name", [
    ({"tokenizer.ggml.tokens": ["<|im_start|>", "<|im_end|>"]}, "chatml"),
    ({"tokenizer.ggml.tokens": ["<|start_header_id|>"]}, "llama3"),
    ({"general.architecture": "gemma3"}, "gemma"),
    ({"general.architecture": "phi3"}, "phi3"),
    ({"tokenizer.ggml.tokens": ["[INST]"]}, "mistral"),
    ({"general.architecture": "llama", "tokenizer.ggml.model": "llama"}, "llama2"),
    ({"general.architecture": "gpt2"}, "generic"),
])
def test_builtin_format_choice(meta: dict, name: str) -> None:
    assert builtin_format(meta).name == name
    out = render_chat(TemplateSource(metadata=meta), [{"role": "system", "content": "S"},
                                                      {"role": "user", "content": "hello"}])
    assert "hello" in out and "S" in out


def test_builtin_gemma_renders_turns() -> None:
    out = render_chat(TemplateSource(metadata={"general.architecture": "gemma3"}), [
        {"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])
    assert out == "<start_of_turn>user\nS\n\nhi<end_of_turn>\n<start_of_turn>model\n"


def test_template_precedence() -> None:
    assert TemplateSource(go=QWEN25, jinja=QWEN25_JINJA).kind == "go"
    plain_go = "{{ range .Messages }}{{ .Content }}{{ end }}"
    assert TemplateSource(go=plain_go, jinja=QWEN25_JINJA).kind == "jinja"  # Jinja can do tools
    assert TemplateSource(go=plain_go, jinja=QWEN25_JINJA, prefer_go=True).kind == "go"
    assert TemplateSource(go=QWEN25, jinja=QWEN25_JINJA, prefer_go=False).kind == "jinja"
    assert TemplateSource(jinja=QWEN25_JINJA).kind == "jinja"
    assert TemplateSource().kind == "builtin"


def test_capabilities() -> None:
    assert capabilities_of(QWEN25, None) == {"tools"}
    assert capabilities_of(QWEN3_THINKING, None) == {"thinking"}
    assert capabilities_of("{{ .Prompt }}{{ .Suffix }}", None) == {"insert"}
    assert capabilities_of(None, QWEN25_JINJA) == {"tools"}
    assert capabilities_of(None, "{{ '<think>' }}") == {"thinking"}
    assert "insert" in capabilities_of(None, None, {"tokenizer.ggml.tokens": [
        "<fim_prefix>", "<fim_suffix>", "<fim_middle>"]})
    assert capabilities_of("{{ broken", None) == set()


@pytest.mark.parametrize("bad", [
    "not a list", [1], [{"role": 3}], [{"role": "user", "content": 5}],
    [{"role": "user", "images": "x"}],
    [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}],
])
def test_malformed_messages_are_invalid_requests(bad: object) -> None:
    with pytest.raises(InvalidRequest):
        render_chat(TemplateSource(go=QWEN25), bad)  # type: ignore[arg-type]


def test_malformed_tools_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequest, match="tool"):
        render_chat(TemplateSource(go=QWEN25), [], tools=[{"function": {}}])


def test_openai_style_arguments_string_is_accepted() -> None:
    out = render_chat(TemplateSource(go=QWEN25), [
        {"role": "assistant", "tool_calls": [{"type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Rome"}'}}]}])
    assert '"arguments": {"city":"Rome"}' in out


def test_broken_template_error_names_the_model() -> None:
    with pytest.raises(TemplateError, match="'llama:7b'"):
        render_chat(TemplateSource(go="{{ if }}", model="llama:7b"), [{"role": "user", "content": "x"}])
