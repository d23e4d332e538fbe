"""Parse tool calls out of model output, incrementally.

Families covered: Hermes/Qwen ``<tool_call>{json}</tool_call>``, Mistral
``[TOOL_CALLS] [{...}]`` (and ``[TOOL_CALLS]name[ARGS]{...}``), Llama 3's bare
``{"name": ..., "parameters": ...}`` and ``<|python_tag|>``, plus a lenient
reading of a fenced (```json) or bare JSON object naming a supplied tool:
small models often answer that way instead of using their tags.

A call is only accepted when its name is one of the supplied tools; anything
that does not parse as a call is handed back as content, unchanged. Text that
might be the start of a call is held back until it is decided.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Any

from power.errors import TemplateError
from power.prompt.parsing.delta import Delta, ToolCall
from power.prompt.go.template import parse_template
from power.prompt.parsing.jsonscan import JsonScan, calls_in, loads_lenient
from power.prompt.parsing.thinking import partial_suffix

__all__ = ["KNOWN_TAGS", "ToolCallParser", "parse_tool_calls", "tool_call_tag"]

KNOWN_TAGS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "<function_call>")
_FENCE = "```"
_SPACE = " \t\r\n"
# Mistral Small 3.2 puts the call's id between: name[CALL_ID]id[ARGS]{...}.
_MISTRAL_NAME = re.compile(r"([A-Za-z0-9_.\-]+)(?:\[CALL_ID\][A-Za-z0-9_\-]+)?\[ARGS\]")
_MISTRAL_PARTIAL = re.compile(r"[A-Za-z0-9_.\-]*(?:\[(?:C(?:A(?:L(?:L(?:_(?:I(?:D(?:\][A-Za-z0-9_\-]*"
                              r"(?:\[(?:A(?:R(?:G(?:S)?)?)?)?)?)?)?)?)?)?)?)?|A(?:R(?:G(?:S)?)?)?)?)?")
_FENCE_HEAD = re.compile(r"```[A-Za-z0-9_\-]*[ \t]*\r?\n?[ \t]*")


def tool_call_tag(template: str | None = None, jinja: str | None = None) -> str | None:
    """The text that opens a tool call, inferred from the model's template.

    Go: the first non-blank literal inside ``{{ if .ToolCalls }}``, cut at ``{``
    (``"{"`` when nothing is left). Jinja: its family's open tag (``families``),
    else a known tag it mentions. None when the
    template shows no tool calls at all.
    """
    if template:
        try:
            tmpl = parse_template(template)
        except TemplateError:
            return None
        for branch in tmpl.branches_on("ToolCalls"):
            text = tmpl.first_text_in(branch.body)
            if text is None:
                continue
            tag = text.strip().split("{", 1)[0].strip()
            tag = re.sub(r"\s*\[$", "", tag).strip()  # "[TOOL_CALLS] [" opens a JSON array
            return tag or "{"
        return "{" if tmpl.uses("ToolCalls") else None
    if jinja:
        from power.prompt.families import family_of  # the families import this package

        family = family_of(jinja)
        if family is not None:
            return family.open
        for tag in KNOWN_TAGS:
            if tag in jinja:
                return tag
        if "tool_call" in jinja or "tools" in jinja:
            return "{"
    return None


def _close_of(tag: str | None) -> str | None:
    if tag and tag.startswith("<") and tag.endswith(">") and not tag.startswith("<|"):
        return "</" + tag[1:]
    return None


class _State(enum.Enum):
    START = 1  # nothing decided yet: output may open with bare JSON
    SCAN = 2  # content; watching for a tag or a fence
    CALLS = 3  # after a tag (or bare JSON): reading calls
    FENCE = 4  # inside ``` ... ```


class ToolCallParser:
    """Incremental tool-call extractor; ``feed`` then ``finish``."""

    def __init__(self, tools: Iterable[dict[str, Any] | str], tag: str | None = None, *,
                 lenient: bool = True, fences: bool | None = None) -> None:
        """``tools``: the request's tools (or their names); ``tag``: see ``tool_call_tag``.

        ``lenient`` also accepts the other families' tags, bare JSON at the start and
        (unless ``fences`` is False) JSON in a code fence.
        """
        self.names = frozenset(_tool_names(tools))
        own = [tag] if tag and tag != "{" else []
        self.tags = own + ([t for t in KNOWN_TAGS if t not in own] if lenient else [])
        fences = lenient if fences is None else fences
        self.triggers = self.tags + ([_FENCE] if fences else [])
        self.bare_json = lenient or tag in (None, "{")
        self.state = _State.START if self.names and self.bare_json else _State.SCAN
        self.buf = ""
        self.raw = ""  # text consumed in CALLS since the last accepted call
        self.block_tag: str | None = None
        self.in_block = 0  # calls accepted in the current block
        self.scan: JsonScan | None = None
        self.count = 0

    # -- public --
    def feed(self, text: str) -> Delta:
        """Take more output; return content that is decided and any completed calls."""
        if not self.names:
            return Delta(text)
        self.buf += text
        return self._run(final=False)

    def finish(self) -> Delta:
        """End of output: settle what is held back."""
        if not self.names:
            return Delta()
        return self._run(final=True)

    # -- machine --
    def _run(self, final: bool) -> Delta:
        content: list[str] = []
        calls: list[ToolCall] = []
        while True:
            step = {_State.START: self._start, _State.SCAN: self._scan,
                    _State.CALLS: self._calls, _State.FENCE: self._fence}[self.state]
            progressed = step(content, calls, final)
            if not progressed:
                break
        if final:
            content.append(self.raw + self.buf)
            self.raw = self.buf = ""
        return Delta("".join(content), "", tuple(calls))

    def _start(self, content: list[str], calls: list[ToolCall], final: bool) -> bool:
        stripped = self.buf.lstrip(_SPACE)
        if not stripped:
            return False
        for tag in self.tags:
            if stripped.startswith(tag):
                self.state = _State.SCAN
                return True
            if tag.startswith(stripped) and not final:
                return False
        if stripped[0] in "{[":
            self._enter_calls(None, self.buf[:len(self.buf) - len(stripped)])
            self.buf = stripped
        else:
            self.state = _State.SCAN
        return True

    def _scan(self, content: list[str], calls: list[ToolCall], final: bool) -> bool:
        found = [(self.buf.find(t), t) for t in self.triggers]
        hits = [(i, t) for i, t in found if i >= 0]
        if hits:
            idx, trigger = min(hits)
            content.append(self.buf[:idx])
            if trigger == _FENCE:
                self.buf = self.buf[idx:]
                self.state = _State.FENCE
            else:
                self.buf = self.buf[idx + len(trigger):]
                self._enter_calls(trigger, trigger)
            return True
        hold = 0 if final else max(partial_suffix(self.buf, t) for t in self.triggers)
        content.append(self.buf[:len(self.buf) - hold])
        self.buf = self.buf[len(self.buf) - hold:]
        return False

    def _enter_calls(self, tag: str | None, raw: str) -> None:
        self.state = _State.CALLS
        self.block_tag, self.raw, self.in_block, self.scan = tag, raw, 0, None

    def _consume(self, n: int) -> None:
        self.raw += self.buf[:n]
        self.buf = self.buf[n:]

    def _calls(self, content: list[str], calls: list[ToolCall], final: bool) -> bool:
        if self.scan is None:
            lead = len(self.buf) - len(self.buf.lstrip(_SPACE + ",;"))
            self._consume(lead)
            if not self.buf:
                return self._leave(content, final) if final else False
            for word in filter(None, [_close_of(self.block_tag), *self.tags]):
                if self.buf.startswith(word):
                    self._consume(len(word))
                    return True
                if word.startswith(self.buf) and not final:
                    return False
            if self.buf[0] in "{[":
                self.scan = JsonScan()
            elif self.block_tag == "[TOOL_CALLS]":
                return self._mistral_name(content, calls, final)
            else:
                return self._leave(content, final)
        end = self.scan.advance(self.buf)
        if end is None and not final:
            return False
        text = self.buf[:end] if end is not None else self.scan.repaired(self.buf)
        found = calls_in(loads_lenient(text), self.names)
        self.scan = None
        if not found:
            return self._leave(content, final)
        self._consume(end if end is not None else len(self.buf))
        self._accept(calls, found)
        return True

    def _mistral_name(self, content: list[str], calls: list[ToolCall], final: bool) -> bool:
        m = _MISTRAL_NAME.match(self.buf)
        if m is None:
            partial = _MISTRAL_PARTIAL.fullmatch(self.buf)
            if partial is not None and not final:
                return False
            return self._leave(content, final)
        scan = JsonScan()
        end = scan.advance(self.buf, m.end())
        if end is None and not final:
            return False
        args_text = self.buf[m.end():end] if end is not None else scan.repaired(self.buf)[m.end():]
        found = calls_in({"name": m.group(1), "arguments": loads_lenient(args_text)}, self.names)
        if not found:
            return self._leave(content, final)
        self._consume(end if end is not None else len(self.buf))
        self._accept(calls, found)
        return True

    def _accept(self, calls: list[ToolCall], found: list[tuple[str, dict[str, Any]]]) -> None:
        for name, args in found:
            calls.append(ToolCall(name, args, self.count))
            self.count += 1
        self.in_block += len(found)
        self.raw = ""

    def _leave(self, content: list[str], final: bool) -> bool:
        """What follows is not a call: give back the unaccepted text and scan on."""
        if not self.in_block:
            content.append(self.raw)
        self.raw = ""
        self.state = _State.SCAN
        self.scan = None
        return True

    def _fence(self, content: list[str], calls: list[ToolCall], final: bool) -> bool:
        head = _FENCE_HEAD.match(self.buf)
        body_at = head.end() if head else len(_FENCE)
        body = self.buf[body_at:]
        first = body.lstrip(_SPACE)[:1]
        if not first:
            if not final:
                return False
        elif first not in "{[<":
            content.append(_FENCE)  # an ordinary code block: let it stream
            self.buf = self.buf[len(_FENCE):]
            self.state = _State.SCAN
            return True
        close = self.buf.find(_FENCE, body_at)
        if close < 0 and not final:
            return False
        inner = self.buf[body_at:close if close >= 0 else len(self.buf)]
        found = parse_tool_calls(inner, self.names)
        end = close + len(_FENCE) if close >= 0 else len(self.buf)
        if found:
            self._accept(calls, found)
            self.in_block = 0
        else:
            content.append(self.buf[:end])
        self.buf = self.buf[end:]
        self.state = _State.SCAN
        return True


def _tool_names(tools: Iterable[dict[str, Any] | str]) -> Iterable[str]:
    for tool in tools:
        if isinstance(tool, str):
            yield tool
        elif isinstance(tool, dict) and isinstance(tool.get("function"), dict) \
                and isinstance(tool["function"].get("name"), str):
            yield tool["function"]["name"]


def parse_tool_calls(text: str, tools: Iterable[dict[str, Any] | str]
                     ) -> list[tuple[str, dict[str, Any]]]:
    """All (name, arguments) calls in a complete piece of text; [] if it holds anything else."""
    parser = ToolCallParser(tools, None, lenient=True, fences=False)
    delta = parser.feed(text) + parser.finish()
    if delta.content.strip():
        return []
    return [(c.name, c.arguments) for c in delta.tool_calls]
