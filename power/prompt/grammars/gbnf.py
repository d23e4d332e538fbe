"""GBNF text: literals, repetitions, the rules a grammar is built of, and the check on a user's grammar.

The pieces every part of the JSON Schema converter writes with: ``gbnf_literal``
quotes text, ``repeat`` writes a bounded repetition, and ``Rules`` is what a
converter adds its rules to (``grammar.GrammarBuilder``). ``check_gbnf`` bounds
a grammar a client sent (``options.grammar``) before llama.cpp parses it.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from power.errors import InvalidRequest

__all__ = ["MAX_GROUP_DEPTH", "MAX_USER_GRAMMAR", "REPEAT_MAX", "Rules", "check_gbnf", "gbnf_literal", "repeat"]

MAX_USER_GRAMMAR = 64 * 1024  # characters of a user-supplied grammar
MAX_GROUP_DEPTH = 64  # nested parentheses in a user-supplied grammar (llama.cpp's parser recurses on them)
REPEAT_MAX = 256  # larger minItems/maxLength... are not expanded into the grammar


class Rules(Protocol):
    """Where the rules of one grammar are added, under names derived from hints."""

    where: str  # the document, for messages: "JSON schema", "tools[0].function.parameters"...

    def add(self, hint: str, body: str) -> str:
        """Add a rule under a fresh name derived from ``hint``; return its name."""
        ...

    def primitive(self, name: str) -> str:
        """Add a shared rule (``char``, ``space``, ``string``...) once; return its name."""
        ...


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def repeat(expr: str, lo: int, hi: int | None) -> str:
    """``expr`` repeated ``lo`` to ``hi`` times (None: no limit), in GBNF's braces."""
    if hi is None:
        return f"{expr}{{{lo},}}" if lo else f"{expr}*"
    if hi < lo:
        raise InvalidRequest("invalid JSON schema: a maximum length is below its minimum")
    if lo == hi:
        return "" if lo == 0 else expr if lo == 1 else f"{expr}{{{lo}}}"
    return f"{expr}{{{lo},{hi}}}"


def check_gbnf(text: Any, where: str = "options.grammar") -> str:
    """Bound a user-supplied GBNF grammar before llama.cpp parses it: size, nesting, a root rule.

    llama.cpp's grammar parser recurses on parentheses (60,000 of them crashed
    llama-server), so nesting is counted here, outside literals, classes and comments.
    Syntax errors beyond that are llama.cpp's to report (also a 400).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f"{where} must be a non-empty GBNF grammar")
    if len(text) > MAX_USER_GRAMMAR:
        raise InvalidRequest(f"{where} is longer than {MAX_USER_GRAMMAR} characters")
    depth = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"[":
            close = '"' if ch == '"' else "]"
            i += 1
            while i < n and text[i] != close:
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                what = "literal" if ch == '"' else "character class"
                raise InvalidRequest(f"invalid {where}: unterminated {what}")
        elif ch == "#":
            while i < n and text[i] not in "\r\n":
                i += 1
        elif ch == "(":
            depth += 1
            if depth > MAX_GROUP_DEPTH:
                raise InvalidRequest(f"invalid {where}: groups nest deeper than {MAX_GROUP_DEPTH}")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InvalidRequest(f"invalid {where}: unbalanced ')'")
        i += 1
    if depth:
        raise InvalidRequest(f"invalid {where}: unbalanced '('")
    if not re.search(r"(^|\n)\s*root\s*::=", text):
        raise InvalidRequest(f"invalid {where}: no root rule")
    return text
