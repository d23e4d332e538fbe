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

__all__ = ["after_thinking", "text_without"]

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


def text_without(tags: tuple[str, ...], prefix: str) -> list[str]:
    """Rules ``{prefix}-0`` ...: any text that contains none of ``tags``.

    The states are the tags' proper prefixes (the longest one the text ends with);
    a character that would complete a tag has no transition.
    """
    states = sorted({tag[:i] for tag in tags for i in range(len(tag))}, key=lambda s: (len(s), s))
    index = {state: i for i, state in enumerate(states)}
    chars = sorted({ch for tag in tags for ch in tag})
    rules = []
    for state in states:
        alts, special = [], []  # characters that lead elsewhere than back to the start, or nowhere
        for ch in chars:
            text = state + ch
            if any(text.endswith(tag) for tag in tags):
                special.append(ch)  # reaching a whole tag is what this text may not do
                continue
            nxt = index[next(text[i:] for i in range(len(text) + 1) if text[i:] in index)]
            if nxt:
                special.append(ch)
                alts.append(f"{_literal(ch)} {prefix}-{nxt}")
        others = "[^" + "".join(_hex(ch) for ch in special) + "]"
        rules.append(f"{prefix}-{index[state]} ::= " + " | ".join(['""', f"{others} {prefix}-0", *alts]))
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
    rules = [head, "think-ws ::= [ \\t\\r\\n]{0,8}", "think-body ::= think-text-0",
             *text_without((close_tag,), "think-text")]
    return "\n".join(rules) + "\n" + body
