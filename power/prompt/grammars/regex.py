"""ECMAScript regular expressions (a schema's ``pattern``, and each format) as GBNF for JSON strings.

``parse_pattern`` reads a pattern into ``regex_nodes`` values, the strings that
contain a match; ``PatternWriter`` writes those as the GBNF of their JSON
spelling, the text between the quotes.

Supported: literals, escapes, ``.``, classes (ranges, negation, ``\\d \\w \\s``
and their negations), groups, alternation and the quantifiers ``? * + {n} {n,}
{n,m}`` (lazy ones too). ``^`` and ``$`` anchor the edges of the pattern or of a
top-level alternative; an unanchored side may hold any characters, since a JSON
Schema pattern searches the string. Other features (lookaround, backreferences,
``\\b``, inline flags) are refused, naming the feature, and so are patterns
longer than ``MAX_PATTERN`` characters or with groups nested deeper than
``MAX_PATTERN_DEPTH``.

Wider than the schema: a repetition ``{n,m}`` with ``m`` above ``REPEAT_MAX``
reads as ``{n,}`` (an ``n`` above it is refused).

Narrower than the schema, never so far that nothing valid is left: each
character has one spelling (an escape only where JSON needs one), and lone
surrogates are never written.
"""

from __future__ import annotations

import re
from typing import NoReturn

from power.errors import InvalidRequest
from power.prompt.grammars.gbnf import REPEAT_MAX, Rules, gbnf_literal
from power.prompt.grammars.regex_nodes import (
    ANY,
    EMPTY,
    MAX_CP,
    NOTHING,
    SCALARS,
    Alt,
    Chars,
    Node,
    Ranges,
    Rep,
    alt,
    cs,
    cs_and,
    cs_minus,
    cs_not,
    rep,
    seq,
)

__all__ = ["MAX_PATTERN", "MAX_PATTERN_DEPTH", "PatternWriter", "parse_pattern"]

MAX_PATTERN = 4096  # characters of a regular expression
MAX_PATTERN_DEPTH = 32  # nested groups in a regular expression

_RAW = cs_minus(((0x20, MAX_CP),), ((0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F), (0xD800, 0xDFFF)))
_JSON_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_DIGIT = ((0x30, 0x39),)
_WORD = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_SPACE = cs((0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029),
            (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF))  # ECMAScript's \s
_CLASS_ESCAPES = {"d": _DIGIT, "D": cs_minus(SCALARS, _DIGIT), "w": _WORD, "W": cs_minus(SCALARS, _WORD),
                  "s": _SPACE, "S": cs_minus(SCALARS, _SPACE)}
_DOT = cs_minus(SCALARS, ((0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)))  # no line terminators
_CONTROL_ESCAPES = {"t": 0x09, "n": 0x0A, "v": 0x0B, "f": 0x0C, "r": 0x0D}
_BRACES = re.compile(r"\{(\d+)(,(\d*))?\}")


def parse_pattern(pattern: str, where: str, hint: str) -> Node:
    """The strings that contain a match of ``pattern``, as JSON Schema means it; InvalidRequest if unsupported."""
    return _RegexParser(pattern, where, hint).parse()


class PatternWriter:
    """Regex nodes as GBNF for their JSON spelling, into one grammar's rules (one rule per repeated part)."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._parts: dict[str, str] = {}  # rule names of repeated parts, by their text

    def term(self, node: Node, hint: str) -> str:
        """The GBNF for the JSON spelling of the strings ``node`` matches, as one term."""
        text, shape = self._emit(node, hint)
        return f"({text})" if shape == "alt" else text

    def _emit(self, node: Node, hint: str) -> tuple[str, str]:
        """GBNF for ``node`` and its shape: "atom" (takes a quantifier), "seq", or "alt" (has a top-level |)."""
        if isinstance(node, Chars):
            options = self._chars(node.ranges)
            return (options[0], "atom") if len(options) == 1 else ("(" + " | ".join(options) + ")", "atom")
        if isinstance(node, Rep):
            text, shape = self._emit(node.item, hint)
            if shape != "atom" or isinstance(node.item, Rep):  # a rule, so llama.cpp repeats one symbol
                if text not in self._parts:
                    self._parts[text] = self.rules.add(f"{hint}-part", text)
                text = self._parts[text]
            return text + _quantifier(node.lo, node.hi), "atom"
        if isinstance(node, Alt):
            texts = [self._emit(o, hint)[0] for o in node.options if o != EMPTY]
            if len(texts) < len(node.options):
                return "(" + " | ".join(texts) + ")?", "atom"
            return " | ".join(texts), "alt"
        parts: list[str] = []
        run: list[str] = []  # single characters, written as one literal
        for item in node.items:
            if isinstance(item, Chars) and len(item.ranges) == 1 and item.ranges[0][0] == item.ranges[0][1]:
                run.append(_json_spelling(item.ranges[0][0]))
                continue
            if run:
                parts.append(gbnf_literal("".join(run)))
                run = []
            parts.append(self.term(item, hint))
        if run:
            parts.append(gbnf_literal("".join(run)))
        if len(parts) == 1:
            return parts[0], "atom"
        return (" ".join(parts), "seq") if parts else ('""', "atom")

    def _chars(self, ranges: Ranges) -> list[str]:
        """Alternatives that write one character of ``ranges`` inside a JSON string."""
        if ranges == SCALARS:
            return [self.rules.primitive("char")]
        options = []
        raw = cs_and(ranges, _RAW)
        if len(raw) == 1 and raw[0][0] == raw[0][1]:
            options.append(gbnf_literal(chr(raw[0][0])))
        elif raw:
            options.append(min(_gbnf_class(raw, False), _gbnf_class(cs_not(raw), True), key=len))
        escaped = [cp for a, b in cs_minus(ranges, _RAW) for cp in range(a, b + 1)]
        options += [gbnf_literal(_JSON_ESCAPES[cp]) for cp in escaped if cp in _JSON_ESCAPES]
        plain = [cp for cp in escaped if cp not in _JSON_ESCAPES]
        for high in sorted({cp >> 4 for cp in plain}):  # \u00XX, grouped by the first hex digit of XX
            lows = [ord(f"{cp & 15:x}") for cp in plain if cp >> 4 == high]
            prefix = "\\u00" + f"{high:x}"
            options.append(gbnf_literal(prefix + chr(lows[0])) if len(lows) == 1
                           else f"{gbnf_literal(prefix)} {_gbnf_class(cs(*((c, c) for c in lows)), False)}")
        return options



def _json_spelling(cp: int) -> str:
    if cp in _JSON_ESCAPES:
        return _JSON_ESCAPES[cp]
    return f"\\u{cp:04x}" if cp < 0x20 or cp == 0x7F else chr(cp)


def _gbnf_class(ranges: Ranges, negated: bool) -> str:
    def char(cp: int) -> str:
        if 0x21 <= cp <= 0x7E and chr(cp) not in '"-[\\]^':
            return chr(cp)
        return f"\\x{cp:02X}" if cp <= 0xFF else f"\\u{cp:04X}" if cp <= 0xFFFF else f"\\U{cp:08X}"

    body = "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)
    return f"[{'^' if negated else ''}{body}]"



def _quantifier(lo: int, hi: int | None) -> str:
    if hi is None:
        return {0: "*", 1: "+"}.get(lo, f"{{{lo},}}")
    if (lo, hi) == (0, 1):
        return "?"
    return f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"



class _RegexParser:
    """An ECMAScript regular expression, in the subset a grammar can hold, as a Node; the rest refused.

    ``parse`` returns the strings that contain a match, as JSON Schema's ``pattern`` means: each
    top-level alternative without ``^`` may have any characters before it, without ``$`` after it.
    """

    def __init__(self, pattern: str, where: str, hint: str) -> None:
        self.text, self.pos, self.where, self.hint = pattern, 0, where, hint

    def fail(self, what: str) -> NoReturn:
        raise InvalidRequest(f"invalid {self.where}: pattern {self.text[:80]!r} at {self.hint}: {what}")

    def peek(self, ahead: int = 0) -> str:
        i = self.pos + ahead
        return self.text[i] if i < len(self.text) else ""

    def parse(self) -> Node:
        if len(self.text) > MAX_PATTERN:
            self.fail(f"longer than {MAX_PATTERN} characters")
        options = []
        while True:
            start = self.peek() == "^"
            while self.peek() == "^":
                self.pos += 1
            node, end = self.sequence(0)
            options.append(seq(*(() if start else (ANY,)), node, *(() if end else (ANY,))))
            if self.peek() != "|":
                break
            self.pos += 1
        if self.pos < len(self.text):
            self.fail("unbalanced ')'")
        node = alt(*options)
        if node == NOTHING:
            self.fail("it matches no string")
        return node

    def sequence(self, depth: int) -> tuple[Node, bool]:
        """The items up to ``|``, ``)`` or the end, and whether a ``$`` ended them."""
        items: list[Node] = []
        while self.peek() not in ("", "|", ")"):
            if self.peek() == "$":
                while self.peek() == "$":
                    self.pos += 1
                if depth or self.peek() not in ("", "|"):
                    self.fail("$ is supported only at the end of the pattern or of a top-level alternative")
                return seq(*items), True
            items.append(self.quantified(self.atom(depth)))
        return seq(*items), False

    def alternation(self, depth: int) -> Node:
        options = [self.sequence(depth)[0]]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence(depth)[0])
        return alt(*options)

    def atom(self, depth: int) -> Node:
        ch = self.peek()
        if ch == "(":
            return self.group(depth)
        if ch == "[":
            return Chars(self.char_class())
        self.pos += 1
        if ch == ".":
            return Chars(_DOT)
        if ch == "\\":
            return self.escape()
        if ch == "^":
            self.fail("^ is supported only at the start of the pattern or of a top-level alternative")
        if ch in "*+?" or (ch == "{" and _BRACES.match(self.text, self.pos - 1)):
            self.fail(f"nothing to repeat before {ch!r}")
        cp = self.code_point(ch)
        return Chars(((cp, cp),))

    def quantified(self, node: Node) -> Node:
        ch = self.peek()
        braces = _BRACES.match(self.text, self.pos) if ch == "{" else None
        if ch in ("*", "+", "?"):
            self.pos += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        elif braces is not None:
            self.pos = braces.end()
            lo = _count(braces.group(1))
            hi = lo if braces.group(2) is None else _count(braces.group(3)) if braces.group(3) else None
        else:
            return node
        if self.peek() == "?":
            self.pos += 1  # lazy: the same strings match
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and _BRACES.match(self.text, self.pos)):
            self.fail("a quantifier follows another quantifier")
        if hi is not None and hi < lo:
            self.fail(f"the repetition {{{lo},{hi}}} is out of order")
        if lo > REPEAT_MAX:
            self.fail(f"a repetition of at least {lo} exceeds {REPEAT_MAX}")
        return rep(node, lo, None if hi is None or hi > REPEAT_MAX else hi)

    def group(self, depth: int) -> Node:
        rest = self.text[self.pos:self.pos + 4]
        for prefix, what in (("(?=", "lookahead (?=...)"), ("(?!", "negative lookahead (?!...)"),
                             ("(?<=", "lookbehind (?<=...)"), ("(?<!", "negative lookbehind (?<!...)")):
            if rest.startswith(prefix):
                self.fail(f"{what} is not supported")
        if rest.startswith("(?:"):
            self.pos += 3
        elif rest.startswith("(?"):
            self.fail(f"the group syntax {rest[:3]!r} is not supported")
        else:
            self.pos += 1
        if depth >= MAX_PATTERN_DEPTH:
            self.fail(f"groups nest deeper than {MAX_PATTERN_DEPTH}")
        node = self.alternation(depth + 1)
        if self.peek() != ")":
            self.fail("missing ')'")
        self.pos += 1
        return node

    def escape(self) -> Node:
        ch = self.peek()
        if ch in _CLASS_ESCAPES:
            self.pos += 1
            return Chars(_CLASS_ESCAPES[ch])
        if ch in ("b", "B"):
            self.fail(f"the word boundary assertion \\{ch} is not supported")
        cp = self.char_escape()
        return Chars(((cp, cp),))

    def char_escape(self) -> int:
        """The character of the escape after a backslash."""
        ch = self.peek()
        self.pos += 1
        if not ch:
            self.fail("it ends with a lone backslash")
        if ch in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[ch]
        if ch in "123456789" or ch == "k":
            self.fail(f"the backreference \\{ch} is not supported")
        if ch == "0":
            if self.peek().isdigit():
                self.fail("octal escapes are not supported")
            return 0
        if ch == "x":
            return self.hex_digits(2)
        if ch == "u":
            if self.peek() == "{":
                self.fail("\\u{...} escapes are not supported")
            cp = self.hex_digits(4)
            if 0xD800 <= cp <= 0xDBFF and self.text.startswith("\\u", self.pos):
                self.pos += 2
                low = self.hex_digits(4)
                if not 0xDC00 <= low <= 0xDFFF:
                    self.fail("a lone surrogate is not supported")
                return 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            return self.code_point(chr(cp))
        if ch == "c" and self.peek().isascii() and self.peek().isalpha():
            self.pos += 1
            return ord(self.text[self.pos - 1]) % 32
        if ch in ("p", "P"):
            self.fail(f"the Unicode property escape \\{ch} is not supported")
        if ch.isascii() and ch.isalnum():
            self.fail(f"the escape \\{ch} is not supported")
        return self.code_point(ch)

    def hex_digits(self, n: int) -> int:
        digits = self.text[self.pos:self.pos + n]
        if len(digits) != n or any(c not in "0123456789abcdefABCDEF" for c in digits):
            self.fail(f"an escape needs {n} hex digits")
        self.pos += n
        return int(digits, 16)

    def code_point(self, ch: str) -> int:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            self.fail("a lone surrogate is not supported")
        return ord(ch)

    def char_class(self) -> Ranges:
        self.pos += 1
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        if self.peek() == "]":
            self.fail("an empty class [] or [^] is not supported (regex engines read it differently)")
        ranges: list[tuple[int, int]] = []
        while self.peek() != "]":
            if not self.peek():
                self.fail("missing ']'")
            first = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                last = self.class_atom()
                if isinstance(first, tuple) or isinstance(last, tuple):
                    self.fail("a range with a class escape, such as [\\d-z], is not supported")
                if first > last:
                    self.fail("a character range is out of order")
                ranges.append((first, last))
            else:
                ranges.extend(first if isinstance(first, tuple) else ((first, first),))
        self.pos += 1
        chars = cs(*ranges)
        return cs_minus(SCALARS, chars) if negated else chars

    def class_atom(self) -> int | Ranges:
        ch = self.peek()
        self.pos += 1
        if ch != "\\":
            return self.code_point(ch)
        ch = self.peek()
        if ch in _CLASS_ESCAPES:
            self.pos += 1
            return _CLASS_ESCAPES[ch]
        if ch in ("b", "-"):  # backspace inside a class; an escaped hyphen
            self.pos += 1
            return 0x08 if ch == "b" else 0x2D
        if ch == "B":
            self.fail("\\B inside a class is not supported")
        return self.char_escape()


def _count(digits: str) -> int:
    return int(digits) if len(digits) <= 9 else 10 ** 9
