"""Reading model output: thinking, content and tool calls, streamed or whole.

``parser`` builds the parser that fits a model's template; ``thinking`` splits
thinking from content; ``tools`` finds tool calls; ``delta`` holds what they
hand back; ``jsonscan`` finds where a JSON value ends in a stream.
"""

from __future__ import annotations

from power.prompt.parsing.delta import Delta, ToolCall, new_call_id
from power.prompt.parsing.parser import OutputParser, output_parser
from power.prompt.parsing.thinking import ThinkingParser, starts_thinking, thinking_tags
from power.prompt.parsing.tools import ToolCallParser, parse_tool_calls, tool_call_tag

__all__ = ["Delta", "OutputParser", "ThinkingParser", "ToolCall", "ToolCallParser", "new_call_id",
           "output_parser", "parse_tool_calls", "starts_thinking", "thinking_tags", "tool_call_tag"]
