"""Every chat template llama.cpp ships renders the conversations clients send."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from power.prompt import TemplateSource, render_chat
from power.prompt.jinja import TemplateRefused
from tests.prompt.templates_kit import TOOLS, conversation, template_params


def _source(path: Path) -> TemplateSource:
    return TemplateSource(jinja=path.read_text(), bos_token="<s>", eos_token="</s>")


def _refusals(path: Path) -> list[str]:
    return re.findall(r"raise_exception\(\s*['\"](.*?)['\"]\s*\)", path.read_text())


@pytest.mark.parametrize("path", template_params())
@pytest.mark.parametrize("think", [None, True, False])
def test_five_message_conversation_with_tools(path: Path, think: bool | None) -> None:
    """Rendered, with the tool call's name and the result in the prompt; or refused in the
    template's own words (a 400), never a crash of ours."""
    try:
        text = render_chat(_source(path), conversation(), tools=TOOLS, think=think)
    except TemplateRefused as exc:
        assert any(msg and msg in str(exc) for msg in _refusals(path)), exc
        return
    if "tools" in path.read_text():
        assert "get_weather" in text
    if "tool" in path.read_text():  # some (Phi 3.5, RWKV) leave tool turns out
        assert "sunny, 22 C" in text
    assert "What is the weather in Paris?" in text


@pytest.mark.parametrize("path", template_params())
def test_plain_chat_with_system_renders(path: Path) -> None:
    """System + user renders everywhere: templates without a system role get it in the first turn."""
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    # The "tool_use" variants are what a GGUF names chat_template.tool_use: used with tools only.
    text = render_chat(_source(path), msgs, tools=TOOLS if "tool_use" in path.stem else None)
    assert "Hello there" in text
    assert "Be brief." in text


def test_template_lists_may_change_but_inputs_not() -> None:
    """A template may append to its own lists (Kimi K2 does); the messages it is given stay as they are."""
    from power.errors import TemplateError
    from power.prompt.jinja import JinjaTemplate

    own = JinjaTemplate("{% set xs = [] %}{% for m in messages %}{% set _ = xs.append(m.role) %}"
                        "{% endfor %}{{ xs | join(',') }}")
    assert own.render(messages=[{"role": "user"}, {"role": "assistant"}]) == "user,assistant"
    with pytest.raises(TemplateError, match="unsafe"):
        JinjaTemplate("{% set _ = messages.append(1) %}").render(messages=[])
    with pytest.raises(TemplateError, match="too large"):
        JinjaTemplate("{% set xs = [1] %}{% for i in range(64) %}{% set _ = xs.extend(xs) %}"
                      "{% endfor %}").render()


def test_generation_tag_renders_its_body() -> None:
    from power.prompt.jinja import JinjaTemplate

    assert JinjaTemplate("a{% generation %}{{ x }}{% endgeneration %}b").render(x="X") == "aXb"


def test_tool_results_get_the_id_of_their_call() -> None:
    """Solar-style templates look up a result's call by ``tool_call_id``: filled in when not sent."""
    from power.prompt.jinja import JinjaTemplate

    src = ("{% for m in messages %}{% for c in m.tool_calls or [] %}[{{ c.id }}]{% endfor %}"
           "{% if m.role == 'tool' %}<{{ m.tool_call_id }}>{% endif %}{% endfor %}")
    text = render_chat(TemplateSource(jinja=src), conversation(images=False), tools=TOOLS)
    ids = re.findall(r"\[(\w+)\]", text)
    assert len(ids) == 1 and re.fullmatch(r"[a-z0-9]{9}", ids[0])
    assert f"<{ids[0]}>" in text
