"""Parsed output as Anthropic content blocks: the stream's block events, and the whole message built from them.

``Blocks`` turns each ``Delta`` (thinking, text, finished tool calls) into
``content_block_start`` / ``_delta`` / ``_stop`` events with the blocks'
``index`` in order; a change of kind closes the open block. ``Accumulator``
folds those very events into the message's ``content``, so a streamed answer
and a whole one never differ. Pure; no I/O.
"""

from __future__ import annotations

import json
import secrets
import string
from typing import Any

from power.prompt import Delta

__all__ = ["Accumulator", "Blocks", "new_id", "usage"]

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """``msg_…`` or ``toolu_…`` and 24 random letters and digits, as Anthropic's ids look."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def usage(input_tokens: int, cache_read: int, output_tokens: int) -> dict[str, int]:
    """Anthropic's usage: ``input_tokens`` is what was evaluated, the KV-cache reuse is ``cache_read_input_tokens``."""
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read,
            "output_tokens": output_tokens}


def _start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


class Blocks:
    """Content block events for a sequence of deltas; ``finish`` closes the last block."""

    def __init__(self) -> None:
        self.index = -1
        self.open: str | None = None  # "thinking" or "text"
        self.tool_uses = 0
        self._space = ""  # whitespace that would open a text block: kept until text follows

    def feed(self, delta: Delta) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if delta.thinking:
            events += self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            events.append(_delta(self.index, {"type": "thinking_delta", "thinking": delta.thinking}))
        text = delta.content
        if text and self.open != "text":
            text = self._space + text
            self._space = ""
            if not text.strip():
                self._space, text = text, ""
        if text:
            events += self._switch("text", {"type": "text", "text": ""})
            events.append(_delta(self.index, {"type": "text_delta", "text": text}))
        for call in delta.tool_calls:
            events += self._close()
            self._space = ""
            self.index += 1
            self.tool_uses += 1
            events.append(_start(self.index, {"type": "tool_use", "id": new_id("toolu"), "name": call.name,
                                              "input": {}}))
            events.append(_delta(self.index, {"type": "input_json_delta",
                                              "partial_json": json.dumps(call.arguments, ensure_ascii=False)}))
            events.append({"type": "content_block_stop", "index": self.index})
        return events

    def finish(self) -> list[dict[str, Any]]:
        return self._close()

    def _switch(self, kind: str, block: dict[str, Any]) -> list[dict[str, Any]]:
        if self.open == kind:
            return []
        events = self._close()
        self.index += 1
        self.open = kind
        events.append(_start(self.index, block))
        return events

    def _close(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        self.open = None
        return [{"type": "content_block_stop", "index": self.index}]


class Accumulator:
    """The ``content`` list that a run of block events describes (as the SDK's stream helper builds it)."""

    def __init__(self) -> None:
        self.content: list[dict[str, Any]] = []
        self._json: dict[int, str] = {}

    def add(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "content_block_start":
            self.content.append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            block, delta = self.content[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "input_json_delta":
                self._json[event["index"]] = self._json.get(event["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop" and event["index"] in self._json:
            self.content[event["index"]]["input"] = json.loads(self._json.pop(event["index"]))
