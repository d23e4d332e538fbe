"""The parsed form of a Go template: frozen values, safe to cache and share between threads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Action",
    "Arg",
    "Branch",
    "Break",
    "Chain",
    "Command",
    "Continue",
    "Field",
    "Ident",
    "Literal",
    "Node",
    "Pipe",
    "SubPipe",
    "TemplateCall",
    "Text",
    "Tree",
    "Variable",
]


@dataclass(frozen=True)
class Field:
    """``.A.B``; ``names == ()`` is dot itself."""
    names: tuple[str, ...]


@dataclass(frozen=True)
class Variable:
    """``$x.A.B``."""
    name: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ident:
    """A function name."""
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Command:
    args: tuple[Arg, ...]


@dataclass(frozen=True)
class Pipe:
    decl: tuple[str, ...]
    assign: bool  # ``=`` rather than ``:=``
    cmds: tuple[Command, ...]


@dataclass(frozen=True)
class SubPipe:
    """A parenthesised pipeline used as an argument."""
    pipe: Pipe


@dataclass(frozen=True)
class Chain:
    """``(pipeline).A.B``."""
    node: SubPipe
    names: tuple[str, ...]


Arg = Field | Variable | Ident | Literal | SubPipe | Chain


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Action:
    pipe: Pipe
    line: int


@dataclass(frozen=True)
class Branch:
    """``if``, ``range`` or ``with``; ``orelse`` is None without ``else``."""
    kind: str
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...] | None
    line: int


@dataclass(frozen=True)
class TemplateCall:
    name: str
    pipe: Pipe | None
    line: int


@dataclass(frozen=True)
class Break:
    line: int


@dataclass(frozen=True)
class Continue:
    line: int


Node = Text | Action | Branch | TemplateCall | Break | Continue


@dataclass(frozen=True)
class Tree:
    root: tuple[Node, ...]
    defines: tuple[tuple[str, tuple[Node, ...]], ...]

    def define(self, name: str) -> tuple[Node, ...] | None:
        for key, body in self.defines:
            if key == name:
                return body
        return None
