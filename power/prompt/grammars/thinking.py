"""Structured output for thinking models: think freely first, then answer in the grammar.

Ollama lets a thinking model finish its thinking before ``format`` constrains the
answer. Here the same is one grammar: an optional thinking block (the open tag,
any text that does not contain the close tag, the close tag), a little
whitespace, then the answer grammar. The text-without-the-close-tag part is a
small automaton over the tag's characters (the Knuth-Morris-Pratt states of the
tag), so a model can write anything while it thinks except the end of its
thinking, which it may write once.
"""

from __future__ import annotations

__all__ = ["after_thinking"]

_ANSWER = "answer-root"


def _lex(grammar: str) -> list[tuple[str, str]]:
    """GBNF as (kind, text) pieces: "str", "class", "comment", "name" or "other"."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c in "\"[":
            close = '"' if c == '"' else "]"
            j = i + 1
            while j < n and grammar[j] != close:
                j += 2 if grammar[j] == "\\" else 1
            out.append(("str" if c == '"' else "class", grammar[i:j + 1]))
            i = j + 1
        elif c == "#":
            j = grammar.find("\n", i)
            j = n if j < 0 else j
            out.append(("comment", grammar[i:j]))
            i = j
        elif c.isalnum() or c in "-_":
            j = i
            while j < n and (grammar[j].isalnum() or grammar[j] in "-_"):
                j += 1
            out.append(("name", grammar[i:j]))
            i = j
        else:
            out.append(("other", c))
            i += 1
    return out


def _hex(ch: str) -> str:
    code = ord(ch)
    if code < 0x80:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def _literal(text: str) -> str:
    return '"' + "".join(ch if ch.isalnum() or ch in " <>/|_.:=" else _hex(ch) for ch in text) + '"'


def _failure(tag: str) -> list[int]:
    fail = [0] * len(tag)
    k = 0
    for i in range(1, len(tag)):
        while k and tag[i] != tag[k]:
            k = fail[k - 1]
        if tag[i] == tag[k]:
            k += 1
        fail[i] = k
    return fail


def _without(tag: str, prefix: str) -> list[str]:
    """Rules ``{prefix}-0`` ...: any text that does not contain ``tag``."""
    fail = _failure(tag)
    chars = sorted(set(tag))

    def step(state: int, ch: str) -> int:
        while state and tag[state] != ch:
            state = fail[state - 1]
        return state + 1 if tag[state] == ch else 0

    others = "[^" + "".join(_hex(ch) for ch in chars) + "]"
    rules = []
    for state in range(len(tag)):
        alts = ['""', f"{others} {prefix}-0"]
        for ch in chars:
            nxt = step(state, ch)
            if nxt < len(tag):  # reaching the whole tag is what this text may not do
                alts.append(f"{_literal(ch)} {prefix}-{nxt}")
        rules.append(f"{prefix}-{state} ::= " + " | ".join(alts))
    return rules


def after_thinking(grammar: str, open_tag: str, close_tag: str, *, in_thinking: bool = False) -> str | None:
    """``grammar`` preceded by an optional thinking block; None when it cannot be wrapped.

    ``in_thinking``: the prompt already ended with the open tag, so the output starts
    inside the thinking block (which must then be closed before the answer).
    """
    if not open_tag or not close_tag:
        return None
    pieces = _lex(grammar)
    names = [text for kind, text in pieces if kind == "name"]
    if names.count("root") != 1 or any(name.startswith("think-") or name == _ANSWER for name in names):
        return None  # a grammar that refers to its own root (or uses our names) is left as it is
    body = "".join(_ANSWER if kind == "name" and text == "root" else text for kind, text in pieces)
    block = f"think-body {_literal(close_tag)}"
    if in_thinking:
        head = f"root ::= {block} think-ws {_ANSWER}"
    else:
        head = f"root ::= (think-ws {_literal(open_tag)} {block} think-ws)? {_ANSWER}"
    rules = [head, "think-ws ::= [ \\t\\r\\n]{0,8}", "think-body ::= think-text-0", *_without(close_tag, "think-text")]
    return "\n".join(rules) + "\n" + body
