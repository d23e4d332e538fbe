"""The Jinja chat-template sandbox: real templates, globals, and limits."""

from __future__ import annotations

import time

import pytest
from prompt_template_texts import QWEN25_JINJA, WEATHER_TOOL

from power.errors import TemplateError
from power.prompt import TemplateSource, render_chat
from power.prompt.jinja import JinjaTemplate


def test_qwen25_with_tools_renders_chatml_with_tool_call() -> None:
    source = TemplateSource(jinja=QWEN25_JINJA)
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"},
    ]
    out = render_chat(source, messages, tools=[WEATHER_TOOL])
    assert out.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather", ' in out
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", '
            '"arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n') in out
    assert '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n' in out
    assert out.endswith("<|im_start|>assistant\n")


def test_qwen25_without_tools_uses_given_system() -> None:
    out = render_chat(TemplateSource(jinja=QWEN25_JINJA),
                      [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}])
    assert out == ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_assistant_prefill_continues_the_turn() -> None:
    out = render_chat(TemplateSource(jinja=QWEN25_JINJA),
                      [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}])
    assert out.endswith("<|im_start|>assistant\nHel")


def test_special_tokens_and_globals() -> None:
    meta = {"tokenizer.ggml.tokens": ["<s>", "</s>", "x"], "tokenizer.ggml.bos_token_id": 0,
            "tokenizer.ggml.eos_token_id": 1}
    src = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}" \
          "{{ strftime_now('%Y') | length }}{% for i in range(5) %}{% if i == 2 %}{% break %}" \
          "{% endif %}{{ i }}{% endfor %}"
    out = render_chat(TemplateSource(jinja=src, metadata=meta), [{"role": "user", "content": "m"}])
    assert out == "<s>m</s>401"


def test_think_is_passed_as_enable_thinking() -> None:
    src = "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>{% endif %}ok"
    source = TemplateSource(jinja=src)
    assert render_chat(source, [], think=False) == "<think>\n\n</think>ok"
    assert render_chat(source, []) == "ok"


def test_raise_exception_is_a_template_error_naming_the_model() -> None:
    source = TemplateSource(jinja="{{ raise_exception('only user and assistant roles') }}", model="m:1")
    with pytest.raises(TemplateError, match="m:1.*only user and assistant"):
        render_chat(source, [{"role": "user", "content": "x"}])


def test_syntax_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError):
        JinjaTemplate("{% for x in %}")


@pytest.mark.parametrize("src", [
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ 'x' * 1000000000 }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ 'x' | center(1000000000) }}",
    "{{ 2 ** 100000000 }}",
    "{% for a in range(100000) %}{% for b in range(100000) %}{{ b }}{% endfor %}{% endfor %}",
    "{{ ''.__class__.__mro__ }}{{ cycler.__init__.__globals__ }}",
    "{{ messages.append(1) }}",  # the template's own lists may change (Kimi K2), not its inputs
    "{% set x = [1] %}{% for i in range(64) %}{% set _ = x.extend(x) %}{% endfor %}",
])
def test_hostile_templates_fail_fast(src: str) -> None:
    start = time.monotonic()
    with pytest.raises(TemplateError):
        JinjaTemplate(src).render(messages=[])
    assert time.monotonic() - start < 5
