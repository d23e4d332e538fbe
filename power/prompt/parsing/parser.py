"""One parser for a model's whole output: thinking first, then tool calls in the content."""

from __future__ import annotations

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

__all__ = ["OutputParser", "output_parser"]


class OutputParser:
    """Feed generated text; get back content, thinking and tool calls as they are decided."""

    def __init__(self, thinking: ThinkingParser | None = None,
                 tools: ToolCallParser | None = None) -> None:
        self.thinking = thinking
        self.tools = tools

    def feed(self, text: str) -> Delta:
        step = self.thinking.feed(text) if self.thinking else Delta(text)
        if self.tools is None:
            return step
        found = self.tools.feed(step.content)
        return Delta(found.content, step.thinking, found.tool_calls)

    def finish(self) -> Delta:
        step = self.thinking.finish() if self.thinking else Delta()
        if self.tools is None:
            return step
        found = self.tools.feed(step.content) + self.tools.finish()
        return Delta(found.content, step.thinking, found.tool_calls)


def output_parser(source: TemplateSource, *, prompt: str = "", tools: Any = None,
                  think: bool | str | None = None, lenient: bool = True) -> OutputParser:
    """The parser that fits a model's template and the request.

    Thinking is split unless ``think`` is False; tags come from the template (else
    ``<think>``), and parsing starts inside thinking when ``prompt`` ends with the open
    tag. Tool calls are parsed only when the request supplied ``tools``.
    """
    go = source.go if source.kind == "go" else None
    jinja = source.jinja if source.kind == "jinja" else None
    thinking = None
    if think is not False:
        tags = thinking_tags(go, jinja) or DEFAULT_TAGS
        if think or thinking_tags(go, jinja) or starts_thinking(prompt, tags[0]):
            thinking = ThinkingParser(*tags, start_in_thinking=starts_thinking(prompt, tags[0]))
    tool_parser = None
    if tools:
        if source.kind == "builtin":
            go = source.go_template().source
        tool_parser = ToolCallParser(tools, tool_call_tag(go, jinja), lenient=lenient)
    return OutputParser(thinking, tool_parser)
