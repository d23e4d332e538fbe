"""Kimi K3: the answer in tagged sections, ``<|open|>NAME attr="v"<|sep|>`` ... ``<|close|>NAME<|sep|>``.

After the prompt's ``<|open|>think<|sep|>`` the model writes its thinking, then
``<|open|>response<|sep|>TEXT<|close|>response<|sep|>``, then maybe
``<|open|>tools<|sep|><|open|>call tool="NAME" index="1"<|sep|>`` with one
``<|open|>argument key="K" type="T"<|sep|>V<|close|>argument<|sep|>`` a
parameter (or one ``<|open|>json type="object"<|sep|>{...}<|close|>json<|sep|>``)
and ``<|close|>call<|sep|><|close|>tools<|sep|>``, and ``<|close|>message<|sep|>``.
``think`` is thinking, text in or outside ``response`` is content, a call of a
supplied tool is a call (any other comes back as written); no tag reaches the content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from power.prompt.families.family import Family, Forced, Params, StreamParser, single_call, tool_names
from power.prompt.families.readers import json_value
from power.prompt.parsing.delta import Delta, ToolCall
from power.prompt.parsing.thinking import starts_thinking

__all__ = ["FAMILY", "KimiK3Parser"]

OPEN, CLOSE, SEP = "<|open|>", "<|close|>", "<|sep|>"
THINK = (f"{OPEN}think{SEP}", f"{CLOSE}think{SEP}")
_TAG = re.compile(r"<\|(open|close)\|>([\w\-]+)((?:\s+[\w\-]+=\"[^\"]*\")*)\s*<\|sep\|>")
_ATTR = re.compile(r'([\w\-]+)="([^"]*)"')
_CALL_PARTS = ("tools", "call", "argument", "json")


def _held(buf: str) -> int:
    """Length of the end of ``buf`` that may be an unfinished tag."""
    at = max(buf.rfind("<|open|>"), buf.rfind("<|close|>"))
    if at >= 0 and SEP not in buf[at:] and len(buf) - at <= 256:
        return len(buf) - at
    at = buf.rfind("<", max(0, len(buf) - 8))
    return len(buf) - at if at >= 0 and any(t.startswith(buf[at:]) for t in (OPEN, CLOSE)) else 0


def _arguments(parts: list[tuple[dict[str, str], str]]) -> dict[str, Any] | None:
    args: dict[str, Any] = {}
    for attrs, text in parts:
        if "key" not in attrs:  # the arguments as one JSON object
            value = json_value(text)
            if not isinstance(value, dict):
                return None
            args.update(value)
        elif attrs.get("type", "string") == "string":
            args[attrs["key"]] = text
        else:
            value = json_value(text)
            args[attrs["key"]] = text if value is None and text.strip() not in ("null",) else value
    return args


class KimiK3Parser(StreamParser):
    """The whole output of Kimi K3: thinking, content and calls; ``feed`` then ``finish``."""

    def __init__(self, tools: Iterable[Any] = (), *, think: bool = True, prompt: str = "") -> None:
        self.names = tool_names(tools)
        self.think = think
        self.sections = ["think"] if starts_thinking(prompt, THINK[0]) else []
        self.raw = ""  # the tools section as written, for when it is not calls of supplied tools
        self.calls: list[tuple[str, list[tuple[dict[str, str], str]]]] = []
        self.count = 0

    def _run(self, final: bool) -> Delta:
        content: list[str] = []
        thinking: list[str] = []
        calls: list[ToolCall] = []
        while self.buf:
            m = _TAG.search(self.buf)
            if m is None:
                hold = 0 if final else _held(self.buf)
                self._text(self.buf[:len(self.buf) - hold], content, thinking)
                self.buf = self.buf[len(self.buf) - hold:]
                break
            self._text(self.buf[:m.start()], content, thinking)
            self.buf = self.buf[m.end():]
            self._tag(m, content, calls)
        if final and self.raw:  # the output stopped inside the tools section
            content.append(self.raw)
            self.raw, self.calls = "", []
        return Delta("".join(content), "".join(thinking), tuple(calls))

    def _text(self, text: str, content: list[str], thinking: list[str]) -> None:
        if not text:
            return
        inner = self.sections[-1] if self.sections else ""
        if inner in _CALL_PARTS:
            self.raw += text
            if inner in ("argument", "json") and self.calls and self.calls[-1][1]:
                attrs, so_far = self.calls[-1][1][-1]
                self.calls[-1][1][-1] = (attrs, so_far + text)
        elif inner == "think":
            if self.think:
                thinking.append(text)
        else:  # response, message, or none: the answer
            content.append(text)

    def _tag(self, m: re.Match[str], content: list[str], calls: list[ToolCall]) -> None:
        kind, name, attrs = m.group(1), m.group(2), dict(_ATTR.findall(m.group(3)))
        if name in _CALL_PARTS:
            self.raw += m.group(0)
        if kind == "open":
            self.sections.append(name)
            if name == "call":
                self.calls.append((attrs.get("tool", ""), []))
            elif name in ("argument", "json") and self.calls:
                self.calls[-1][1].append((attrs, ""))
            return
        if name in self.sections:  # close it (and anything left open inside it)
            del self.sections[len(self.sections) - 1 - self.sections[::-1].index(name):]
        if name == "tools":
            found = [(tool, _arguments(parts)) for tool, parts in self.calls]
            if found and all(tool in self.names and args is not None for tool, args in found):
                for tool, args in found:
                    calls.append(ToolCall(tool, args or {}, self.count))
                    self.count += 1
            else:
                content.append(self.raw)
            self.raw, self.calls = "", []


# The calls are read by KimiK3Parser (``channels``): the section reader is never used.
FAMILY = Family("kimi_k3", f"{OPEN}tools{SEP}", f"{CLOSE}tools{SEP}", single_call(lambda text: None),
                markers=(OPEN, SEP, "open_tag('call'"), think=THINK, channels=KimiK3Parser,
                forced=Forced(f'{OPEN}tools{SEP}{OPEN}call tool="', f'" index="1"{SEP}',
                              f"{CLOSE}call{SEP}{CLOSE}tools{SEP}",
                              Params(f'{OPEN}argument key="', f'" type="string"{SEP}', f"{CLOSE}argument{SEP}",
                                     json_value=f'" type="number"{SEP}', raw_excludes=(OPEN, CLOSE))))
