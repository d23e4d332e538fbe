"""Parse the Go ``text/template`` language, as far as Ollama's templates use it.

The parser is total: any input either gives a ``Tree`` or raises
``TemplateError`` (fuzzed in the tests). The tree is made of frozen values, so
a parsed template can be cached and shared between threads.

Supported: text, ``{{- ... -}}`` trimming, comments, pipelines with ``|``,
parenthesised pipelines and field chains on them, variables (``$x := ...``,
``$x = ...``, ``range $i, $v := ...``), ``if``/``else if``/``else``,
``range``/``else``, ``with``/``else with``/``else``, ``break``/``continue``,
``define``/``template``/``block``, and string, raw string, char, number, bool
and nil literals.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

from power.errors import TemplateError
from power.prompt.go.tree import (
    Action,
    Arg,
    Branch,
    Break,
    Chain,
    Command,
    Continue,
    Field,
    Ident,
    Literal,
    Node,
    Pipe,
    SubPipe,
    TemplateCall,
    Text,
    Tree,
    Variable,
)
from power.prompt.limits import DEFAULT_LIMITS, Limits

__all__ = ["parse"]


# ---- lexing ----------------------------------------------------------------

_TOKEN = re.compile(r"""
  (?P<ws>[ \t\r\n]+)
| (?P<close>-?\}\})
| (?P<str>"(?:[^"\\\n]|\\.)*")
| (?P<raw>`[^`]*`)
| (?P<char>'(?:[^'\\\n]|\\.[^']*)')
| (?P<declare>:=)
| (?P<assign>=)
| (?P<bar>\|)
| (?P<lparen>\()
| (?P<rparen>\))
| (?P<comma>,)
| (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
| (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
| (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+
     |(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?))
| (?P<dot>\.)
| (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)

_SPACE = " \t\r\n"


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    end: int  # offset just past the token, to see adjacency


@dataclass(frozen=True)
class _Item:
    """One ``{{ }}`` action, as tokens."""
    toks: tuple[_Tok, ...]
    line: int


def _error(line: int, msg: str) -> TemplateError:
    return TemplateError(f"template: line {line}: {msg}")


def _lex(src: str) -> list[str | _Item]:
    """Split source into text strings and action items, applying trim markers."""
    out: list[str | _Item] = []
    pos = 0
    trim_next = False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            if text:
                out.append(text)
            return out
        line = src.count("\n", 0, start) + 1
        i = start + 2
        if src.startswith("-", i) and i + 1 < len(src) and src[i + 1] in _SPACE:
            text = text.rstrip(_SPACE)
            i += 2
        if text:
            out.append(text)
        while i < len(src) and src[i] in _SPACE and src.startswith("/*", _skip_space(src, i)):
            i += 1
        if src.startswith("/*", i):
            end = src.find("*/", i + 2)
            if end < 0:
                raise _error(line, "unclosed comment")
            j = end + 2
            trim_next = False
            if src.startswith(" -}}", j) or (src.startswith("-}}", j + 1) and src[j] in _SPACE):
                trim_next, j = True, j + 4
            elif src.startswith("}}", j):
                j += 2
            else:
                raise _error(line, "comment ends before closing delimiter")
            pos = j
            continue
        toks, pos, trim_next = _lex_action(src, i, line)
        out.append(_Item(tuple(toks), line))


def _skip_space(src: str, i: int) -> int:
    while i < len(src) and src[i] in _SPACE:
        i += 1
    return i


def _lex_action(src: str, i: int, line: int) -> tuple[list[_Tok], int, bool]:
    toks: list[_Tok] = []
    while True:
        m = _TOKEN.match(src, i)
        if m is None:
            if i >= len(src):
                raise _error(line, "unclosed action")
            raise _error(line, f"unexpected {src[i]!r} in action")
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "close":
            trim = text.startswith("-")
            if trim and not (i > 0 and src[i - 1] in _SPACE):
                raise _error(line, "unexpected '-' in action")
            return toks, m.end(), trim
        if kind != "ws":
            toks.append(_Tok(kind, text, m.end()))
        i = m.end()


# ---- parsing ---------------------------------------------------------------

_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block",
             "break", "continue"}


class _Parser:
    def __init__(self, items: list[str | _Item], limits: Limits) -> None:
        self.items = items
        self.i = 0
        self.limits = limits
        self.depth = 0
        self.loops = 0
        self.defines: dict[str, tuple[Node, ...]] = {}

    def parse_list(self) -> tuple[list[Node], _Item | None]:
        """Parse nodes up to ``else``/``end`` (returned) or the end of input."""
        nodes: list[Node] = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if isinstance(item, str):
                nodes.append(Text(item))
                continue
            word = _keyword(item)
            if word in ("else", "end"):
                return nodes, item
            node = self.parse_action(item, word)
            if node is not None:
                nodes.append(node)
        return nodes, None

    def parse_action(self, item: _Item, word: str | None) -> Node | None:
        line, toks = item.line, item.toks
        if word in ("if", "range", "with"):
            return self.parse_branch(word, toks[1:], line)
        if word in ("break", "continue"):
            if len(toks) != 1:
                raise _error(line, f"unexpected arguments to {word}")
            if not self.loops:
                raise _error(line, f"{{{{{word}}}}} outside {{{{range}}}}")
            return Break(line) if word == "break" else Continue(line)
        if word in ("define", "block"):
            name = _template_name(toks, line)
            pipe = self.parse_pipe(toks[2:], line) if word == "block" else None
            if word == "define" and len(toks) != 2:
                raise _error(line, "unexpected arguments to define")
            body = self.parse_until_end(line)
            self.defines[name] = tuple(body)
            return TemplateCall(name, pipe, line) if word == "block" else None
        if word == "template":
            name = _template_name(toks, line)
            pipe = self.parse_pipe(toks[2:], line) if len(toks) > 2 else None
            return TemplateCall(name, pipe, line)
        if not toks:
            raise _error(line, "missing value for command")
        return Action(self.parse_pipe(toks, line, decl_ok=True), line)

    def parse_until_end(self, line: int) -> list[Node]:
        self.enter(line)
        body, term = self.parse_list()
        self.depth -= 1
        if term is None or len(term.toks) != 1 or _keyword(term) != "end":
            raise _error(line, "block has no matching {{end}}")
        return body

    def enter(self, line: int) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise _error(line, "template nesting too deep")

    def parse_branch(self, kind: str, toks: tuple[_Tok, ...], line: int) -> Branch:
        pipe = self.parse_pipe(toks, line, decl_ok=True, range_decl=kind == "range")
        self.enter(line)
        self.loops += kind == "range"
        body, term = self.parse_list()
        self.loops -= kind == "range"
        orelse: tuple[Node, ...] | None = None
        if term is not None and _keyword(term) == "else":
            rest = term.toks[1:]
            if rest and rest[0].kind == "ident" and rest[0].text in ("if", "with"):
                if rest[0].text != kind and kind != "if":
                    raise _error(term.line, f"else {rest[0].text} inside {kind}")
                # ``else if`` is an ``if`` nested in the else branch sharing our {{end}}.
                orelse = (self.parse_branch(rest[0].text, rest[1:], term.line),)
                self.depth -= 1
                return Branch(kind, pipe, tuple(body), orelse, line)
            if rest:
                raise _error(term.line, "unexpected tokens after else")
            more, term = self.parse_list()
            orelse = tuple(more)
        self.depth -= 1
        if term is None or _keyword(term) != "end" or len(term.toks) != 1:
            raise _error(line, f"{{{{{kind}}}}} has no matching {{{{end}}}}")
        return Branch(kind, pipe, tuple(body), orelse, line)

    def parse_pipe(self, toks: tuple[_Tok, ...], line: int, *, decl_ok: bool = False,
                   range_decl: bool = False) -> Pipe:
        decl: list[str] = []
        assign = False
        if decl_ok and toks and toks[0].kind == "var":
            names = [toks[0]]
            k = 1
            if range_decl and len(toks) > 2 and toks[1].kind == "comma" and toks[2].kind == "var":
                names.append(toks[2])
                k = 3
            if len(toks) > k and toks[k].kind in ("declare", "assign"):
                if any("." in t.text for t in names) or any(t.text == "$" for t in names):
                    raise _error(line, "cannot declare a field or $")
                assign = toks[k].kind == "assign"
                if assign and len(names) > 1:
                    raise _error(line, "only one variable can be assigned")
                decl = [t.text for t in names]
                toks = toks[k + 1:]
        cmds: list[Command] = []
        current: list[_Tok] = []
        level = 0
        for tok in toks:
            level += (tok.kind == "lparen") - (tok.kind == "rparen")
            if tok.kind == "bar" and level == 0:
                cmds.append(self.parse_command(current, line))
                current = []
            else:
                current.append(tok)
        cmds.append(self.parse_command(current, line))
        return Pipe(tuple(decl), assign, tuple(cmds))

    def parse_command(self, toks: list[_Tok], line: int) -> Command:
        if not toks:
            raise _error(line, "missing command in pipeline")
        args: list[Arg] = []
        k = 0
        while k < len(toks):
            arg, k = self.parse_operand(toks, k, line)
            args.append(arg)
        return Command(tuple(args))

    def parse_operand(self, toks: list[_Tok], k: int, line: int) -> tuple[Arg, int]:
        tok = toks[k]
        kind, text = tok.kind, tok.text
        if kind == "lparen":
            level, j = 0, k
            while j < len(toks):
                level += (toks[j].kind == "lparen") - (toks[j].kind == "rparen")
                if level == 0:
                    break
                j += 1
            if j >= len(toks):
                raise _error(line, "unclosed left paren")
            self.enter(line)
            sub = SubPipe(self.parse_pipe(tuple(toks[k + 1:j]), line))
            self.depth -= 1
            if j + 1 < len(toks) and toks[j + 1].kind == "field" \
                    and toks[j + 1].end - len(toks[j + 1].text) == toks[j].end:
                return Chain(sub, _names(toks[j + 1].text)), j + 2
            return sub, j + 1
        if kind == "field":
            return Field(_names(text)), k + 1
        if kind == "dot":
            return Field(()), k + 1
        if kind == "var":
            head, _, rest = text.partition(".")
            return Variable(head, _names("." + rest) if rest else ()), k + 1
        if kind == "ident":
            if text in ("true", "false"):
                return Literal(text == "true"), k + 1
            if text == "nil":
                return Literal(None), k + 1
            if text in _KEYWORDS:
                raise _error(line, f"unexpected keyword {text}")
            return Ident(text), k + 1
        if kind in ("str", "raw", "char", "number"):
            return Literal(_literal(kind, text, line)), k + 1
        raise _error(line, f"unexpected {text!r} in operand")


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split(".")[1:])


def _keyword(item: _Item) -> str | None:
    if item.toks and item.toks[0].kind == "ident" and item.toks[0].text in _KEYWORDS:
        return item.toks[0].text
    return None


def _template_name(toks: tuple[_Tok, ...], line: int) -> str:
    if len(toks) < 2 or toks[1].kind not in ("str", "raw"):
        raise _error(line, f"{toks[0].text} needs a quoted template name")
    return str(_literal(toks[1].kind, toks[1].text, line))


def _literal(kind: str, text: str, line: int) -> Any:
    try:
        if kind == "raw":
            return text[1:-1]
        if kind == "str":
            return ast.literal_eval(text)
        if kind == "char":
            value = ast.literal_eval('"' + text[1:-1].replace('"', '\\"') + '"')
            if len(value) != 1:
                raise ValueError("bad character constant")
            return ord(value)
        clean = text.replace("_", "")
        if re.fullmatch(r"[+-]?0[xXbBoO][0-9a-fA-F]+", clean):
            return int(clean, 0)
        if re.fullmatch(r"[+-]?[0-9]+", clean):
            return int(clean, 10)
        return float(clean)
    except (ValueError, SyntaxError, OverflowError, MemoryError) as exc:
        raise _error(line, f"bad {kind} literal {text[:40]!r}") from exc


def parse(source: str, limits: Limits = DEFAULT_LIMITS) -> Tree:
    """Parse template text into a ``Tree``; raise ``TemplateError`` if it is not valid."""
    if len(source) > limits.max_source:
        raise TemplateError(f"template is longer than {limits.max_source} characters")
    try:
        parser = _Parser(_lex(source), limits)
        nodes, term = parser.parse_list()
    except RecursionError as exc:
        raise TemplateError("template nesting too deep") from exc
    if term is not None:
        raise _error(term.line, f"unexpected {{{{{_keyword(term)}}}}}")
    return Tree(tuple(nodes), tuple(parser.defines.items()))
