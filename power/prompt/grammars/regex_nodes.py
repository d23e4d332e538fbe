"""Regular expressions as values: character sets, the node types, and the algebra that keeps them small.

``gbnf_regex`` parses a ``pattern`` into these nodes and writes them as GBNF.
A character set (``Ranges``) is a sorted tuple of disjoint, inclusive code point
ranges; a node is a set of characters (``Chars``), a sequence (``Seq``), an
alternation (``Alt``) or a bounded repetition (``Rep``). ``seq``, ``alt`` and
``rep`` build them flattened and merged, and never leave a nullable item under
an unbounded repetition (llama.cpp refuses the left recursion that would make).

``fit_lengths`` applies ``minLength``/``maxLength`` to a pattern or format
where that stays exact: when the expression's own lengths fit them, or when its
one variable part is a repeated character class (the bounds then go into that
repetition). Otherwise the grammar is wider than the schema: the lengths are
not enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

from power.errors import InvalidRequest
from power.prompt.grammars.gbnf import REPEAT_MAX

__all__ = ["ANY", "EMPTY", "MAX_CP", "NOTHING", "SCALARS", "Alt", "Chars", "Node", "Ranges", "Rep", "Seq", "alt",
           "cs", "cs_and", "cs_minus", "cs_not", "fit_lengths", "lengths", "rep", "seq"]

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, inclusive code point ranges
MAX_CP = 0x10FFFF


def cs(*ranges: tuple[int, int]) -> Ranges:
    """The union of ``ranges``, as a character set."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return tuple(merged)


def cs_not(ranges: Ranges) -> Ranges:
    """Every code point not in ``ranges``."""
    out, start = [], 0
    for a, b in ranges:
        if a > start:
            out.append((start, a - 1))
        start = b + 1
    if start <= MAX_CP:
        out.append((start, MAX_CP))
    return tuple(out)


def cs_and(a: Ranges, b: Ranges) -> Ranges:
    """The code points in both sets."""
    return cs_not(cs(*cs_not(a), *cs_not(b)))


def cs_minus(a: Ranges, b: Ranges) -> Ranges:
    """The code points of ``a`` not in ``b``."""
    return cs_and(a, cs_not(b))


SCALARS = cs_not(((0xD800, 0xDFFF),))  # what UTF-8 can carry: no surrogates


@dataclass(frozen=True)
class Chars:
    """One character of a set."""

    ranges: Ranges


@dataclass(frozen=True)
class Seq:
    """Its items one after another."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    """Any one of its options."""

    options: tuple[Node, ...]


@dataclass(frozen=True)
class Rep:
    """``item`` repeated ``lo`` to ``hi`` times (None: no limit)."""

    item: Node
    lo: int
    hi: int | None


Node = Chars | Seq | Alt | Rep
EMPTY = Seq(())  # the empty string
NOTHING = Chars(())  # no string at all
ANY = Rep(Chars(SCALARS), 0, None)  # any characters: the unanchored side of a pattern


def seq(*items: Node) -> Node:
    flat: list[Node] = []
    for item in items:
        for part in item.items if isinstance(item, Seq) else (item,):
            if part == NOTHING:
                return NOTHING
            last = flat[-1] if flat else None
            if isinstance(part, Rep) and isinstance(last, Rep) and last.item == part.item \
                    and last.lo + part.lo <= REPEAT_MAX:
                hi = None if last.hi is None or part.hi is None else last.hi + part.hi
                flat[-1] = rep(part.item, last.lo + part.lo, hi if hi is None or hi <= REPEAT_MAX else None)
            else:
                flat.append(part)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def alt(*options: Node) -> Node:
    flat: list[Node] = []
    chars: Ranges = ()
    for option in options:
        for part in option.options if isinstance(option, Alt) else (option,):
            if isinstance(part, Chars):
                chars = cs(*chars, *part.ranges)
            elif part not in flat:
                flat.append(part)
    if chars:
        flat.insert(0, Chars(chars))
    if not flat:
        return NOTHING
    return flat[0] if len(flat) == 1 else Alt(tuple(flat))


def rep(item: Node, lo: int, hi: int | None) -> Node:
    if hi == 0 or item == EMPTY:
        return EMPTY
    if item == NOTHING:
        return EMPTY if lo == 0 else NOTHING
    if hi is None and _nullable(item):
        # X{n,} with the empty string in X is (X without it)*; llama.cpp refuses the left recursion otherwise
        return rep(_nonempty(item), 0, None)
    if isinstance(item, Rep) and item.hi is None and (lo >= 1 or item.lo <= 1) and item.lo * lo <= REPEAT_MAX:
        return Rep(item.item, item.lo * lo, None)  # (X{a,}){b,c} is X{ab,} when b > 0, and X* when a <= 1
    return item if (lo, hi) == (1, 1) else Rep(item, lo, hi)


def _nullable(node: Node) -> bool:
    if isinstance(node, Chars):
        return False
    if isinstance(node, Seq):
        return all(_nullable(i) for i in node.items)
    if isinstance(node, Alt):
        return any(_nullable(o) for o in node.options)
    return node.lo == 0 or _nullable(node.item)


def _nonempty(node: Node) -> Node:
    """``node`` without the empty string."""
    if not _nullable(node):
        return node
    if isinstance(node, Alt):
        return alt(*(_nonempty(o) for o in node.options))
    if isinstance(node, Rep):  # X{0,m} or, with X nullable, X{n,m}: both are (X without it){1,m}
        return rep(_nonempty(node.item), 1, node.hi)
    assert isinstance(node, Seq)  # every item nullable: the first is not empty, or it is and the rest is not
    if not node.items:
        return NOTHING
    first, rest = node.items[0], seq(*node.items[1:])
    return alt(seq(_nonempty(first), rest), _nonempty(rest))


def lengths(node: Node) -> tuple[int, int | None]:
    """The fewest and most characters ``node`` matches (None: no limit)."""
    if isinstance(node, Chars):
        return 1, 1
    if isinstance(node, Rep):
        least, most = lengths(node.item)
        return node.lo * least, None if node.hi is None or most is None else node.hi * most
    parts = [lengths(n) for n in (node.items if isinstance(node, Seq) else node.options)]
    if not parts:
        return 0, 0
    highs = [most for _, most in parts]
    if isinstance(node, Seq):
        return sum(least for least, _ in parts), None if None in highs else sum(h for h in highs if h is not None)
    return min(least for least, _ in parts), None if None in highs else max(h for h in highs if h is not None)


def fit_lengths(node: Node, lo: int, hi: int | None, where: str, hint: str) -> Node:
    """``node`` within minLength/maxLength where that stays exact; otherwise as it is (wider)."""
    least, most = lengths(node)
    if (most is not None and most < lo) or (hi is not None and least > hi):
        raise InvalidRequest(f"invalid {where}: no string at {hint} matches its pattern or format "
                             f"within minLength and maxLength")
    if least >= lo and (hi is None or (most is not None and most <= hi)):
        return node
    items = node.items if isinstance(node, Seq) else (node,)
    varying = [k for k, item in enumerate(items) if lengths(item)[0] != lengths(item)[1]]
    if len(varying) != 1:
        return node
    k = varying[0]
    part = items[k]
    if not isinstance(part, Rep) or not isinstance(part.item, Chars):
        return node
    fixed = least - part.lo
    new_hi = part.hi if hi is None else hi - fixed if part.hi is None else min(part.hi, hi - fixed)
    return seq(*items[:k], rep(part.item, max(part.lo, lo - fixed), new_hi), *items[k + 1:])
