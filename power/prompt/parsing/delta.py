"""What the output parsers hand back: text split into content and thinking, and tool calls."""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["EMPTY", "Delta", "ToolCall", "new_call_id"]

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_call_id() -> str:
    """``call_`` and 8 random characters from [a-z0-9], as Ollama makes them."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


@dataclass(frozen=True)
class ToolCall:
    """One tool call parsed out of model output."""

    name: str
    arguments: dict[str, Any]
    index: int = 0
    id: str = field(default_factory=new_call_id)

    def to_ollama(self) -> dict[str, Any]:
        """Native API shape: arguments as an object."""
        return {"id": self.id,
                "function": {"index": self.index, "name": self.name, "arguments": self.arguments}}

    def to_openai(self) -> dict[str, Any]:
        """OpenAI shape: arguments as a JSON string; ``index`` for streamed deltas."""
        return {"index": self.index, "id": self.id, "type": "function",
                "function": {"name": self.name,
                             "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


class Delta(NamedTuple):
    """A step of parsed output: visible content, thinking text and completed tool calls."""

    content: str = ""
    thinking: str = ""
    tool_calls: tuple[ToolCall, ...] = ()

    def __add__(self, other: object) -> Delta:  # type: ignore[override]
        if not isinstance(other, Delta):
            return NotImplemented
        return Delta(self.content + other.content, self.thinking + other.thinking,
                     self.tool_calls + other.tool_calls)


EMPTY = Delta()
