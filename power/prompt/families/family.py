"""A tool-call family: where its calls open and close, how their bodies read, how it thinks.

``FamilyParser`` is the one streaming machine every family shares: content
passes through until the family's open tag (a possible start of it is held
back); then the body is gathered up to the close tag (or the end of output) and
read. Calls of supplied tools come back as calls; anything else comes back as
content, exactly as it was written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from power.prompt.families.readers import Calls, Coerce, Reader, json_value
from power.prompt.parsing.delta import Delta, ToolCall
from power.prompt.parsing.jsonscan import JsonScan
from power.prompt.parsing.thinking import partial_suffix

__all__ = ["CALL_ID", "PARAM_KEY", "Family", "FamilyParser", "Forced", "Params", "StreamParser", "each_call", "json_forced",
           "name_then_json", "schema_coerce", "single_call", "tool_names"]


CALL_ID = "\x00"  # in a Forced text: where a call id stands (any letters and digits)
PARAM_KEY = "\x01"  # in a Params text: where the parameter's name stands again (MiniMax-M3's </city>)


@dataclass(frozen=True)
class Params:
    """Arguments written one parameter after another: ``key`` NAME ``value`` VALUE ``close``.

    A string parameter's value is raw text (between ``quote``s, when the family
    has them) that holds none of the family's closing tags; any other value is JSON.
    """

    key: str
    value: str
    close: str
    json_value: str | None = None  # instead of ``value`` before a JSON value (DSML's string="false")
    sep: str = ""  # between two parameters
    quote: str = ""  # around a string's raw text (Gemma 4's <|"|>, LFM2's ')
    raw_excludes: tuple[str, ...] = ()  # more text a raw string may not hold


@dataclass(frozen=True)
class Forced:
    """How a forced call is written: ``before`` NAME ``between`` ARGUMENTS ``after``.

    The arguments are one JSON object, or ``params``. ``lead``: an optional message
    the model may write first, (its opening, its end), with no ``<|`` in its text
    (gpt-oss's analysis). ``loose``: every newline in these texts may be left out
    (the family's templates differ in that).
    """

    before: str
    between: str
    after: str
    params: Params | None = None
    name_json: bool = False  # the name stands inside a JSON string
    lead: tuple[str, str] | None = None
    loose: bool = False


@dataclass(frozen=True)
class Family:
    """One model family's tool-call syntax (and thinking tags), found in a template by ``markers``."""

    name: str
    open: str
    close: str | None  # None: the calls run to the end of the output
    read: Reader
    markers: tuple[str, ...] = ()  # all in the template source (default: the open tag)
    think: tuple[str, str] | None = None
    # How a forced call is written (one way, or several the model may choose from); None: as JSON.
    forced: Forced | tuple[Forced, ...] | None = None
    # A parser of the whole output (content, thinking and calls) for families that write
    # messages in channels (harmony): used instead of the thinking split and FamilyParser.
    channels: Any = None

    def found_in(self, source: str) -> bool:
        return all(m in source for m in (self.markers or (self.open,)))

    @property
    def call_syntaxes(self) -> tuple[Forced, ...]:
        """The ways a forced call may be written (none: the generic JSON object)."""
        if self.forced is None:
            return ()
        return self.forced if isinstance(self.forced, tuple) else (self.forced,)


def json_forced(before: str, after: str, *, name: str = "name", args: str = "arguments",
                extra: str = "") -> Forced:
    """A forced call as ``{"name": NAME, "arguments": {...}}`` (keys as the family names them)."""
    return Forced(f'{before}{{{extra}"{name}": "', f'", "{args}": ', f"}}{after}", name_json=True)


def each_call(open_: str, close: str, inner: Any) -> Reader:
    """A reader for a section holding ``open_ ... close`` calls, each read by ``inner(text)``."""
    pattern = re.compile(re.escape(open_) + r"(.*?)" + re.escape(close), re.S)

    def read(body: str, coerce: Coerce) -> Calls | None:
        out: Calls = []
        pos = 0
        for m in pattern.finditer(body):
            call = inner(m.group(1))
            if body[pos:m.start()].strip() or call is None:
                return None
            out.append(call)
            pos = m.end()
        return out if out and not body[pos:].strip() else None
    return read


def single_call(inner: Any) -> Reader:
    """A reader for a section holding one call, read by ``inner(text)``."""
    def read(body: str, coerce: Coerce) -> Calls | None:
        call = inner(body)
        return [call] if call else None
    return read


def name_then_json(sep: str, name_prefix: str = "") -> Any:
    """``NAME<sep>{json}`` with an optional prefix before the name and a ``:index`` after it."""
    def inner(text: str) -> tuple[str, dict[str, Any]] | None:
        head, found, args_text = text.partition(sep)
        name = head.strip()
        if name_prefix and name.startswith(name_prefix):
            name = name[len(name_prefix):]
        name = re.sub(r":\d+$", "", name)
        args = json_value(args_text) if found else None
        return (name, args) if name and isinstance(args, dict) else None
    return inner


def schema_coerce(tools: Iterable[Any]) -> Coerce:
    """Read a parameter written as text by the type its tool's schema gives it."""
    types: dict[tuple[str, str], Any] = {}
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        props = (fn.get("parameters") or {}).get("properties") if isinstance(fn, Mapping) else None
        if isinstance(props, Mapping):
            for key, schema in props.items():
                types[(fn["name"], key)] = schema.get("type") if isinstance(schema, Mapping) else None

    def coerce(tool: str, key: str, text: str) -> Any:
        kind = types.get((tool, key))
        if kind == "string" or (isinstance(kind, list) and "string" in kind and len(kind) == 1):
            return text
        try:
            return json.loads(text)
        except ValueError:
            return text.strip() if kind not in (None, "string") else text
    return coerce


def _json_end(text: str) -> int:
    """Where calls without a close tag end: after the first JSON value (and a code fence's close)."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return -1
    end = JsonScan().advance(text, min(starts))
    if end is None:
        return -1
    fence = re.match(r"\s*```", text[end:])
    if "```" in text[:min(starts)] and fence is None:
        return -1 if len(text) - end < 8 else end  # the fence's close may still come
    return end + (fence.end() if fence else 0)


def tool_names(tools: Iterable[Any]) -> frozenset[str]:
    """The names of the request's tools (given as tools or as names)."""
    return frozenset(t if isinstance(t, str) else t["function"]["name"] for t in tools
                     if isinstance(t, str) or isinstance(t, Mapping))


class StreamParser:
    """Output in as it streams (``feed``), then ``finish``; each returns what it has decided."""

    buf = ""

    def feed(self, text: str) -> Delta:
        self.buf += text
        return self._run(final=False)

    def finish(self) -> Delta:
        return self._run(final=True)

    def _run(self, final: bool) -> Delta:
        raise NotImplementedError


class FamilyParser(StreamParser):
    """Incremental tool-call extractor for one family; ``feed`` then ``finish``."""

    def __init__(self, family: Family, tools: Iterable[Any], *, start_open: bool = False) -> None:
        tools = list(tools)
        self.family = family
        self.names = tool_names(tools)
        self.coerce = schema_coerce(t for t in tools if isinstance(t, Mapping))
        self.in_body = start_open  # the prompt itself opened the calls
        self.opened = "" if start_open else family.open
        self.buf = ""
        self.count = 0

    def _run(self, final: bool) -> Delta:
        content: list[str] = []
        calls: list[ToolCall] = []
        fam = self.family
        while True:
            if not self.in_body:
                at = self.buf.find(fam.open) if self.names else -1
                if at < 0:
                    hold = 0 if final or not self.names else partial_suffix(self.buf, fam.open)
                    content.append(self.buf[:len(self.buf) - hold])
                    self.buf = self.buf[len(self.buf) - hold:]
                    break
                content.append(self.buf[:at])
                self.buf = self.buf[at + len(fam.open):]
                self.in_body, self.opened = True, fam.open
                continue
            end = self.buf.find(fam.close) if fam.close else _json_end(self.buf)
            if end < 0 and not final:
                break
            body = self.buf if end < 0 else self.buf[:end]
            closing = "" if end < 0 else fam.close or ""
            self.buf = self.buf[len(body) + len(closing):]
            self.in_body = False
            found = fam.read(body, self.coerce)
            if found and all(name in self.names for name, _ in found):
                for name, args in found:
                    calls.append(ToolCall(name, args, self.count))
                    self.count += 1
            else:
                content.append(self.opened + body + closing)
        return Delta("".join(content), "", tuple(calls))
