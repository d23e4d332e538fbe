"""gpt-oss (harmony): messages in channels; a tool call is a message to ``functions.NAME``.

After the prompt's ``<|start|>assistant`` the model writes one or more messages::

    <|channel|>analysis<|message|>THINKING<|end|>
    <|start|>assistant<|channel|>final<|message|>ANSWER<|return|>
    <|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{json}<|call|>

(the recipient may also stand before the channel, as the template writes it:
``to=functions.NAME<|channel|>commentary json<|message|>``). ``analysis`` is
thinking, ``final`` and a ``commentary`` preamble are content, a message to a
supplied function is a call, and no header ever reaches the content.

What the text shows of the special tokens depends on the detokenizer: llama.cpp
always renders ``<|start|>``, ``<|channel|>``, ``<|message|>`` and
``<|constrain|>``, ``<|end|>`` only when it is not a control token or control
tokens are rendered, and ``<|return|>``/``<|call|>`` end the generation unseen.
So a message ends at any of
``<|end|>``, ``<|return|>``, ``<|call|>``, at the next ``<|start|>`` or
``<|channel|>``, or at the end of the output, whichever comes first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from power.prompt.families.family import Family, Forced, StreamParser, single_call, tool_names
from power.prompt.families.readers import json_value
from power.prompt.parsing.delta import Delta, ToolCall

__all__ = ["FAMILY", "HarmonyParser"]

MESSAGE = "<|message|>"
_ENDS = ("<|end|>", "<|return|>", "<|call|>")
_BOUNDARY = re.compile(r"<\|(?:start|channel|end|return|call)\|>")
_HOLD = ("<|start|>", "<|channel|>", *_ENDS)
# Where a header may begin: the first message's ``<|start|>assistant`` is the prompt's.
_HEADER_START = ("<|start|>", "<|channel|>", " to=", "to=")
_HEADER = re.compile(r"(?:<\|start\|>\s*assistant)?(?:\s*(?:<\|channel\|>\s*\w+|to=[^\s<]+"
                     r"|<\|constrain\|>\s*[\w\-]+|[\w\-]+))*\s*")
_HEADERISH = re.compile(r"[\w .=:<|>\-]*")  # what a header not yet complete may hold
_MAX_HEADER = 256


def _call(text: str) -> tuple[str, dict[str, Any]] | None:
    m = re.fullmatch(r"([\w.\-]+)[^<]*(?:<\|(?:channel|constrain)\|>[^<]*)*<\|message\|>(.*)", text, re.S)
    args = json_value(m.group(2)) if m else None
    return (m.group(1), args) if m and isinstance(args, dict) else None


def _held(buf: str) -> int:
    """Length of the end of ``buf`` that may be the start of a tag that ends a message."""
    at = buf.rfind("<", max(0, len(buf) - 10))
    if at >= 0 and any(tag.startswith(buf[at:]) for tag in _HOLD):
        return len(buf) - at
    return 0


class HarmonyParser(StreamParser):
    """The whole output of a harmony model: thinking, content and calls; ``feed`` then ``finish``.

    ``think`` False drops the analysis channel (gpt-oss always writes one). Messages to
    a function that is not supplied, or to a built-in tool, come back as content as written.
    """

    def __init__(self, tools: Iterable[Any] = (), *, think: bool = True, prompt: str = "") -> None:
        self.names = tool_names(tools)
        self.think = think
        self.buf = ""
        self.in_header = True  # before <|message|>: is this the header of a message?
        self.header = ""  # the current message's header, as written
        self.channel = "final"
        self.recipient: str | None = None
        self.body = ""  # a call's arguments so far
        self.count = 0

    def _run(self, final: bool) -> Delta:
        content: list[str] = []
        thinking: list[str] = []
        calls: list[ToolCall] = []
        while self.buf or (final and not self.in_header):
            if self.in_header:
                if not self._header(final, content):
                    break
                continue
            m = _BOUNDARY.search(self.buf)
            if m is None and not final:
                hold = _held(self.buf)
                self._body(self.buf[:len(self.buf) - hold], content, thinking)
                self.buf = self.buf[len(self.buf) - hold:]
                break
            cut = len(self.buf) if m is None else m.start()
            end = m.group(0) if m is not None and m.group(0) in _ENDS else ""
            self._body(self.buf[:cut], content, thinking)
            self.buf = self.buf[cut + len(end):]
            self._close(end, content, calls)
        return Delta("".join(content), "".join(thinking), tuple(calls))

    def _header(self, final: bool, content: list[str]) -> bool:
        """Read the header at the start of ``buf``; False to wait for more text."""
        buf = self.buf
        at = buf.find(MESSAGE)
        head = buf if at < 0 else buf[:at]
        starts = any(head.startswith(s) or s.startswith(head) for s in _HEADER_START)
        if at < 0 and starts and len(buf) <= _MAX_HEADER and _HEADERISH.fullmatch(buf):
            if final:  # the output stopped inside a header: nothing of it is content
                self.buf = ""
            return False
        self.in_header = False
        self.body = ""
        if at < 0 or not starts or _HEADER.fullmatch(head) is None:
            self.header, self.channel, self.recipient = "", "final", None  # plain text: content
            tag = _BOUNDARY.match(buf)
            if tag is not None and tag.group(0) not in _ENDS:  # as written, not the start of a message
                content.append(tag.group(0))
                self.buf = buf[tag.end():]
            return True
        channels = re.findall(r"<\|channel\|>\s*(\w+)", head)
        recipient = re.search(r"to=([^\s<]+)", head)
        self.channel = channels[-1] if channels else "commentary"
        self.recipient = recipient.group(1) if recipient and recipient.group(1) != "assistant" else None
        self.header = head + MESSAGE
        self.buf = buf[at + len(MESSAGE):]
        return True

    def _body(self, text: str, content: list[str], thinking: list[str]) -> None:
        if not text:
            return
        if self.recipient is not None:
            self.body += text
        elif self.channel == "analysis":
            if self.think:
                thinking.append(text)
        else:  # final, or a commentary preamble
            content.append(text)

    def _close(self, end: str, content: list[str], calls: list[ToolCall]) -> None:
        """The current message ended with ``end`` (empty: at a new header or the end of output)."""
        if self.recipient is not None:
            name = self.recipient.removeprefix("functions.")
            args = json_value(self.body)
            if self.recipient.startswith("functions.") and name in self.names and isinstance(args, dict):
                calls.append(ToolCall(name, args, self.count))
                self.count += 1
            else:
                content.append(self.header + self.body + end)
        self.in_header, self.recipient, self.body = True, None, ""


FAMILY = Family("harmony", "to=functions.", "<|call|>",
                single_call(_call),
                # <|call|> ends the generation; the analysis the model may write first ends with <|end|>.
                forced=Forced(" to=functions.", "<|channel|>commentary json<|message|>", "",
                              lead=("<|channel|>analysis<|message|>", "<|end|><|start|>assistant")),
                markers=("<|channel|>", "functions."),
                think=("<|channel|>analysis<|message|>", "<|end|>"),
                channels=HarmonyParser)
