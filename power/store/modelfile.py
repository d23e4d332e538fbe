"""Modelfile: the parser (every instruction Ollama knows) and the writer ``show`` prints.

Syntax: ``INSTRUCTION args`` per line, instructions case-insensitive and in any
order, ``#`` lines are comments, a leading BOM is ignored. A value is bare (to
the end of the line, trimmed), ``"quoted"`` (may span lines; ``\\"`` is a quote)
or ``\"\"\"triple quoted\"\"\"`` (verbatim, may span lines). Every error names its
line: ``(line 3): unknown parameter 'x'``. Only ModelfileError leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from power.errors import InvalidRequest, ModelfileError
from power.store.params import merge_parameters

__all__ = ["Command", "Modelfile", "parse_modelfile", "format_command", "format_modelfile",
           "INSTRUCTIONS", "MESSAGE_ROLES"]

INSTRUCTIONS = ("from", "parameter", "template", "system", "adapter", "license", "message",
                "requires", "draft", "renderer", "parser")
MESSAGE_ROLES = ("system", "user", "assistant")
MAX_MODELFILE = 16 << 20
_BAD_INSTRUCTION = ('command must be one of "from", "license", "template", "system", "adapter", '
                    '"renderer", "parser", "parameter", "message", "requires", or "draft"')


@dataclass(frozen=True)
class Command:
    """One instruction. ``key`` is the parameter name or message role; ``line`` is 1-based."""

    name: str
    args: str
    key: str = ""
    line: int = 0


@dataclass(frozen=True)
class Modelfile:
    """A parsed Modelfile, with typed views of its instructions."""

    commands: tuple[Command, ...]

    def values(self, name: str) -> list[str]:
        return [c.args for c in self.commands if c.name == name]

    def last(self, name: str) -> str | None:
        found = self.values(name)
        return found[-1] if found else None

    @property
    def froms(self) -> list[Command]:
        return [c for c in self.commands if c.name == "from"]

    @property
    def parameters(self) -> dict[str, Any]:
        """Typed parameters; ``stop`` is a list of every ``PARAMETER stop`` line."""
        return merge_parameters((c.key, c.args) for c in self.commands if c.name == "parameter")

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": c.key, "content": c.args} for c in self.commands if c.name == "message"]


class _Lines:
    """The text split into lines, with a read position for multi-line values."""

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.i = 0

    def next(self) -> tuple[int, str] | None:
        if self.i >= len(self.lines):
            return None
        self.i += 1
        return self.i, self.lines[self.i - 1]


def parse_modelfile(text: str | bytes) -> Modelfile:
    """Parse Modelfile text; raise ModelfileError naming the line on any problem."""
    if isinstance(text, bytes):
        if len(text) > MAX_MODELFILE:
            raise ModelfileError("Modelfile is too large")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelfileError("Modelfile is not valid UTF-8") from None
    if len(text) > MAX_MODELFILE:
        raise ModelfileError("Modelfile is too large")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = _Lines(text)
    commands: list[Command] = []
    while (item := lines.next()) is not None:
        number, line = item
        stripped = line.lstrip()  # keep trailing spaces: they may sit inside an opening quote
        if not stripped.strip() or stripped.startswith("#"):
            continue
        word, rest = _split_word(stripped)
        name = word.lower()
        if name not in INSTRUCTIONS:
            raise ModelfileError(f"(line {number}): {_BAD_INSTRUCTION}")
        key = ""
        if name in ("parameter", "message"):
            key, rest = _split_word(rest)
            if not key:
                raise ModelfileError(f"(line {number}): missing {'name' if name == 'parameter' else 'role'}"
                                     f" for {name.upper()}")
        value = _value(rest, number, lines)
        if value is None:
            raise ModelfileError(f"(line {number}): missing value for {name.upper()}"
                                 + (f" {key}" if key else ""))
        commands.append(_checked(name, key, value, number))
    if not any(c.name == "from" for c in commands):
        raise ModelfileError("no FROM line")
    return Modelfile(tuple(commands))


def _checked(name: str, key: str, value: str, number: int) -> Command:
    if name == "parameter":
        key = key.lower()
        try:
            merge_parameters([(key, value)])
        except InvalidRequest as exc:
            raise ModelfileError(f"(line {number}): {exc}") from None
    elif name == "message":
        key = key.lower()
        if key not in MESSAGE_ROLES:
            raise ModelfileError(f'(line {number}): message role must be one of "system", "user", '
                                 f'or "assistant"')
    return Command(name, value, key, number)


def _split_word(text: str) -> tuple[str, str]:
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


def _value(rest: str, number: int, lines: _Lines) -> str | None:
    rest = rest.lstrip()
    if rest.startswith('"""'):
        return _triple(rest[3:], number, lines)
    if rest.startswith('"'):
        return _quoted(rest[1:], number, lines)
    return rest.strip() or None


def _triple(first: str, number: int, lines: _Lines) -> str:
    parts: list[str] = []
    chunk = first
    while True:
        end = chunk.find('"""')
        if end >= 0:
            parts.append(chunk[:end])
            _expect_end(chunk[end + 3:], number)
            return "\n".join(parts)
        parts.append(chunk)
        item = lines.next()
        if item is None:
            raise ModelfileError(f'(line {number}): unexpected EOF: unterminated """')
        chunk = item[1]


def _quoted(first: str, number: int, lines: _Lines) -> str:
    out: list[str] = []
    chunk = first
    while True:
        i = 0
        while i < len(chunk):
            ch = chunk[i]
            if ch == "\\" and chunk.startswith('"', i + 1):
                out.append('"')
                i += 2
                continue
            if ch == '"':
                _expect_end(chunk[i + 1:], number)
                return "".join(out)
            out.append(ch)
            i += 1
        item = lines.next()
        if item is None:
            raise ModelfileError(f'(line {number}): unexpected EOF: unterminated "')
        out.append("\n")
        chunk = item[1]


def _expect_end(trailing: str, number: int) -> None:
    if trailing.strip():
        raise ModelfileError(f"(line {number}): unexpected text after closing quote: "
                             f"{trailing.strip()[:40]!r}")


def _quote(value: str) -> str:
    """Quote a value only when a bare one would not read back the same."""
    if value and value == value.strip() and "\n" not in value and not value.startswith('"'):
        return value
    if '"' not in value and not value.endswith("\\"):
        return f'"{value}"'
    if '"""' not in value and not value.endswith('"'):
        return f'"""{value}"""'
    # Only a value holding \"\"\" and ending in a backslash cannot be written back.
    return '"' + value.replace('"', '\\"') + '"'


def format_command(cmd: Command) -> str:
    """Render one instruction so that ``parse_modelfile`` reads it back unchanged."""
    if cmd.name == "from":
        return f"FROM {cmd.args}"
    if cmd.name == "parameter":
        return f"PARAMETER {cmd.key} {_quote(cmd.args)}"
    if cmd.name == "message":
        return f"MESSAGE {cmd.key} {_quote(cmd.args)}"
    return f"{cmd.name.upper()} {_quote(cmd.args)}"


def format_modelfile(commands: Iterable[Command]) -> str:
    return "".join(format_command(c) + "\n" for c in commands)
