"""One parser for a model's whole output: thinking first, then tool calls in the content."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from power.prompt.parsing.delta import Delta
from power.prompt.parsing.thinking import (
    DEFAULT_TAGS,
    ThinkingParser,
    starts_thinking,
    thinking_tags,
)
from power.prompt.parsing.tools import ToolCallParser, tool_call_tag

if TYPE_CHECKING:
    from power.prompt.chat import TemplateSource
    from power.prompt.families import FamilyParser
    from power.prompt.families.harmony import HarmonyParser
    from power.prompt.families.kimi_k3 import KimiK3Parser

__all__ = ["OutputParser", "output_parser"]


class OutputParser:
    """Feed generated text; get back content, thinking and tool calls as they are decided."""

    def __init__(self, thinking: ThinkingParser | None = None,
                 tools: ToolCallParser | FamilyParser | HarmonyParser | KimiK3Parser | _Chained | None = None) -> None:
        self.thinking = thinking
        self.tools = tools

    def feed(self, text: str) -> Delta:
        step = self.thinking.feed(text) if self.thinking else Delta(text)
        if self.tools is None:
            return step
        found = self.tools.feed(step.content)
        return Delta(found.content, step.thinking + found.thinking, found.tool_calls)

    def finish(self) -> Delta:
        step = self.thinking.finish() if self.thinking else Delta()
        if self.tools is None:
            return step
        found = self.tools.feed(step.content) + self.tools.finish()
        return Delta(found.content, step.thinking + found.thinking, found.tool_calls)


class _Chained:
    """A family's parser, then the lenient JSON reading over what it leaves as content."""

    def __init__(self, family: FamilyParser | HarmonyParser | KimiK3Parser, lenient: ToolCallParser) -> None:
        self.family, self.lenient, self.count = family, lenient, 0

    def feed(self, text: str) -> Delta:
        return self._join(self.family.feed(text), self.lenient.feed)

    def finish(self) -> Delta:
        first = self.family.finish()
        return self._join(first, lambda rest: self.lenient.feed(rest) + self.lenient.finish())

    def _join(self, first: Delta, then: Any) -> Delta:
        second = then(first.content)
        calls = []
        for call in first.tool_calls + second.tool_calls:
            calls.append(replace(call, index=self.count))
            self.count += 1
        return Delta(second.content, first.thinking, tuple(calls))


def output_parser(source: TemplateSource, *, prompt: str = "", tools: Any = None,
                  think: bool | str | None = None, lenient: bool = True) -> OutputParser:
    """The parser that fits a model's template and the request.

    Thinking is split unless ``think`` is False; tags come from the template (else
    ``<think>``), and parsing starts inside thinking when ``prompt`` ends with the open
    tag. Tool calls are parsed only when the request supplied ``tools``.
    """
    go = source.go if source.kind == "go" else None
    jinja = source.jinja if source.kind == "jinja" else None
    from power.prompt.families import FamilyParser, family_of  # the families import this package

    family = family_of(jinja)
    if family is not None and family.channels is not None:  # channels carry the thinking and the calls
        whole = family.channels(tools or (), think=think is not False, prompt=prompt)
        return OutputParser(None, _Chained(whole, ToolCallParser(tools, None, lenient=True))
                            if tools and lenient else whole)
    thinking = None
    if think is not False:
        tags = thinking_tags(go, jinja) or DEFAULT_TAGS
        if think or thinking_tags(go, jinja) or starts_thinking(prompt, tags[0]):
            thinking = ThinkingParser(*tags, start_in_thinking=starts_thinking(prompt, tags[0]))
    tool_parser: ToolCallParser | _Chained | None = None
    if tools and family is not None:
        # The prompt may open the calls itself (Functionary v3.2 ends with ">>>").
        own = FamilyParser(family, tools, start_open=prompt.endswith(family.open))
        tool_parser = _Chained(own, ToolCallParser(tools, None, lenient=lenient)) if lenient else own
    elif tools:
        if source.kind == "builtin":
            go = source.go_template().source
        tool_parser = ToolCallParser(tools, tool_call_tag(go, jinja), lenient=lenient)
    return OutputParser(thinking, tool_parser)
