"""Thinking vs content, streamed in any chunking, and tags declared by templates."""

from __future__ import annotations

import pytest
from prompt_template_texts import QWEN3_THINKING, QWEN25, WEATHER_TOOL

from power.prompt import (
    Delta,
    TemplateSource,
    ThinkingParser,
    output_parser,
    starts_thinking,
    thinking_tags,
)


def split(text: str, step: int, **kw: object) -> Delta:
    parser = ThinkingParser(**kw)  # type: ignore[arg-type]
    total = Delta()
    for i in range(0, len(text), step):
        total += parser.feed(text[i:i + step])
    return total + parser.finish()


CASES = [
    ("<think>\nLet me see.\n</think>\n\nThe answer is 4.", {}, "The answer is 4.", "Let me see."),
    ("  <think>a</think>b", {}, "b", "a"),
    ("No thinking here.", {}, "No thinking here.", ""),
    ("<thinking is a word", {}, "<thinking is a word", ""),
    ("<thi", {}, "<thi", ""),
    ("<think>cut off mid thought", {}, "", "cut off mid thought"),
    ("<think></think>", {}, "", ""),
    ("reasoning already open</think>answer", {"start_in_thinking": True}, "answer",
     "reasoning already open"),
    ("x < y </think > not a tag</think>ok", {"start_in_thinking": True}, "ok",
     "x < y </think > not a tag"),
    ("[THINK]plan[/THINK]done", {"open_tag": "[THINK]", "close_tag": "[/THINK]"}, "done", "plan"),
    ("answer with <think>late</think> tags", {}, "answer with <think>late</think> tags", ""),
]


@pytest.mark.parametrize("step", [1, 2, 5, 10_000])
@pytest.mark.parametrize("text, kw, content, thinking", CASES)
def test_split(text: str, kw: dict, content: str, thinking: str, step: int) -> None:
    got = split(text, step, **kw)
    assert (got.content, got.thinking) == (content, thinking)


def test_streams_thinking_without_waiting_for_the_close_tag() -> None:
    parser = ThinkingParser()
    assert parser.feed("<think>step one").thinking == "step one"
    held = parser.feed(" and two </th")
    assert held.thinking == " and two" and held.content == ""
    assert parser.feed("ink>Answer").content == "Answer"


def test_tags_from_templates() -> None:
    assert thinking_tags(QWEN3_THINKING) == ("<think>", "</think>")
    assert thinking_tags("{{ range .Messages }}[THINK]{{ .Thinking }}[/THINK]{{ end }}") == (
        "[THINK]", "[/THINK]")
    assert thinking_tags(QWEN25) is None
    assert thinking_tags(None, "{% if enable_thinking %}{% endif %}") == ("<think>", "</think>")
    assert starts_thinking("<|im_start|>assistant\n<think>\n")
    assert not starts_thinking("<|im_start|>assistant\n")


def test_output_parser_splits_thinking_then_tool_calls() -> None:
    source = TemplateSource(go=QWEN3_THINKING)
    parser = output_parser(source, tools=[WEATHER_TOOL], think=True)
    text = ('<think>Need weather.</think>\n<tool_call>\n{"name": "get_weather", '
            '"arguments": {"city": "Paris"}}\n</tool_call>')
    total = Delta()
    for ch in text:
        total += parser.feed(ch)
    total += parser.finish()
    assert total.thinking == "Need weather."
    assert total.content == ""
    assert [(c.name, c.arguments) for c in total.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_output_parser_starts_in_thinking_when_prompt_opens_it() -> None:
    parser = output_parser(TemplateSource(jinja="{{ '<think>' }}"), prompt="assistant\n<think>\n")
    total = parser.feed("hmm</think>yes") + parser.finish()
    assert (total.thinking, total.content) == ("hmm", "yes")


def test_output_parser_think_false_leaves_text_alone() -> None:
    parser = output_parser(TemplateSource(go=QWEN3_THINKING), think=False)
    total = parser.feed("<think>x</think>y") + parser.finish()
    assert total.content == "<think>x</think>y"


def test_a_bare_close_tag_first_means_no_thinking() -> None:
    """MiniMax-M3 (and others with thinking off) start the answer after a bare close tag."""
    from power.prompt.parsing import ThinkingParser

    parser = ThinkingParser("<mm:think>", "</mm:think>")
    out = parser.feed("</mm:") + parser.feed("think>\nThe answer.") + parser.finish()
    assert (out.thinking, out.content) == ("", "The answer.")
    plain = ThinkingParser()
    out = plain.feed("</") + plain.feed("div> is a tag") + plain.finish()
    assert out.content == "</div> is a tag"
