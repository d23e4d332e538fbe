"""Numeric bounds as GBNF: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``.

``numeric_bounds`` reads the tightest bounds of an integer or number schema (an
integer's rounded inward and made inclusive); ``NumberRange`` writes the
decimals between them as digit-range rules, for any sign and combination of
bounds, exactly.

Narrower than the schema, never so far that nothing valid is left: numbers are
written in plain notation (with an exponent only where no bound is given, by
the unbounded primitives), with at most ``INT_DIGITS`` integer digits on an
unbounded side and at most ``FRAC_DIGITS`` fraction digits, more where a bound
needs them. Bounds are compared as exact decimals: a validator that compares
binary floats may disagree within one float step of an exclusive bound. A bound
with more than ``MAX_BOUND_DIGITS`` digits before or after the point is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from power.errors import InvalidRequest
from power.prompt.grammars.gbnf import Rules, repeat

__all__ = ["FRAC_DIGITS", "INT_DIGITS", "MAX_BOUND_DIGITS", "Bound", "NumberRange", "numeric_bounds"]

MAX_BOUND_DIGITS = 40  # integer or fraction digits of a numeric bound
INT_DIGITS = 16  # integer digits written on a side no bound limits, as in grammar.PRIMITIVES
FRAC_DIGITS = 16  # fraction digits written, unless a bound needs more


@dataclass(frozen=True)
class Bound:
    """One side of a range: a value, and whether the value itself is inside."""

    value: Decimal
    inclusive: bool


_ZERO = Decimal(0)


def _json_decimal(value: Any, where: str, hint: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"invalid {where}: a numeric bound at {hint} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"invalid {where}: a numeric bound at {hint} must be finite")
    # repr is the shortest decimal that reads back as the same float: the text the schema most likely held
    number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    return _ZERO if number == 0 else number  # no -0


def numeric_bounds(schema: Mapping[str, Any], integer: bool, where: str,
                    hint: str) -> tuple[Bound | None, Bound | None]:
    """The tightest lower and upper bounds; an integer's are rounded inward and made inclusive."""
    lo: Bound | None = None
    hi: Bound | None = None
    for key, inclusive in (("minimum", True), ("exclusiveMinimum", False)):
        v = _json_decimal(schema.get(key), where, hint)
        if v is not None and (lo is None or v > lo.value or (v == lo.value and not inclusive)):
            lo = Bound(v, inclusive)
    for key, inclusive in (("maximum", True), ("exclusiveMaximum", False)):
        v = _json_decimal(schema.get(key), where, hint)
        if v is not None and (hi is None or v < hi.value or (v == hi.value and not inclusive)):
            hi = Bound(v, inclusive)
    if integer and lo is not None:
        up = int(lo.value.to_integral_value(ROUND_CEILING))
        lo = Bound(Decimal(up + 1 if up == lo.value and not lo.inclusive else up), True)
    if integer and hi is not None:
        down = int(hi.value.to_integral_value(ROUND_FLOOR))
        hi = Bound(Decimal(down - 1 if down == hi.value and not hi.inclusive else down), True)
    if lo is not None and hi is not None and (
            lo.value > hi.value or (lo.value == hi.value and not (lo.inclusive and hi.inclusive))):
        what = "integer" if integer else "number"
        raise InvalidRequest(f"invalid {where}: no {what} at {hint} lies within its minimum and maximum")
    return lo, hi


def _digits(value: Decimal) -> tuple[str, str]:
    """The integer digits of a non-negative decimal and its fraction digits without trailing zeros."""
    whole, _, frac = format(value, "f").partition(".")
    return whole, frac.rstrip("0")


class NumberRange:
    """Decimals between two bounds: a minus sign and the magnitude's range, split by integer digits."""

    def __init__(self, builder: Rules, hint: str, integer: bool) -> None:
        self.builder, self.hint, self.integer = builder, hint, integer

    def expression(self, lo: Bound | None, hi: Bound | None) -> str:
        alts = []
        if lo is None or lo.value < 0:
            mag_lo = Bound(hi.value.copy_negate(), hi.inclusive) if hi is not None and hi.value < 0 \
                else Bound(_ZERO, False)  # "-0" is left to the other side
            mag_hi = None if lo is None else Bound(lo.value.copy_negate(), lo.inclusive)
            magnitude = self._magnitude(mag_lo, mag_hi)
            alts.append(f'"-" ({" | ".join(magnitude)})' if len(magnitude) > 1 else f'"-" {magnitude[0]}')
        if hi is None or hi.value > 0 or (hi.value == 0 and hi.inclusive):
            alts += self._magnitude(lo if lo is not None and lo.value >= 0 else Bound(_ZERO, True), hi)
        return " | ".join(alts)

    def _magnitude(self, lo: Bound, hi: Bound | None) -> list[str]:
        lo_whole, lo_frac = _digits(lo.value)
        top = max(INT_DIGITS, len(lo_whole))
        if hi is not None and len(_digits(hi.value)[0]) > top:
            hi = None  # beyond every number written here
        hi_whole, hi_frac = _digits(hi.value) if hi is not None else ("", "")
        if max(len(lo_whole), len(lo_frac), len(hi_whole), len(hi_frac)) > MAX_BOUND_DIGITS:
            raise InvalidRequest(f"invalid {self.builder.where}: a numeric bound at {self.hint} has more than "
                                 f"{MAX_BOUND_DIGITS} digits before or after the point")
        frac = 0 if self.integer else max(FRAC_DIGITS, len(lo_frac) + 1, len(hi_frac) + 1)
        low = (lo_whole + lo_frac, lo.inclusive)
        high = (hi_whole + hi_frac, hi.inclusive) if hi is not None else None
        if high is not None and len(hi_whole) == len(lo_whole):
            alts = [_Digits(self, len(lo_whole), frac, low, high).state(0, True, True)]
        else:
            alts = [_Digits(self, len(lo_whole), frac, low, None).state(0, True, False)]
            first, last = len(lo_whole) + 1, (len(hi_whole) - 1 if high is not None else top)
            if first <= last:
                alts.append(f"[1-9] {repeat('[0-9]', first - 1, last - 1)} {_fraction(frac)}".strip())
            if high is not None:
                alts.append(_Digits(self, len(hi_whole), frac, None, high).state(0, False, True))
        return [a for a in alts if a is not None]


_ZERO_DIGIT = '"0"'


def _fraction(frac: int) -> str:
    return f'("." [0-9]{{1,{frac}}})?' if frac else ""


class _Digits:
    """Decimals of ``n`` integer digits and up to ``frac`` fraction digits within digit-string bounds.

    A bound is its ``n`` integer digits then its fraction digits (no trailing zeros) and whether it is
    inclusive. Such strings compare digit by digit, so the grammar walks along each bound: a state is
    a position and whether the digits so far equal the lower bound's and the upper bound's. A state
    equal to neither is free; each other state is one rule. ``None`` is a state that accepts nothing.
    """

    def __init__(self, owner: NumberRange, n: int, frac: int, lo: tuple[str, bool] | None,
                 hi: tuple[str, bool] | None) -> None:
        self.owner, self.n, self.frac = owner, n, frac
        self.lo, self.lo_inclusive = lo or ("", True)
        self.hi, self.hi_inclusive = hi or ("", True)
        self.memo: dict[tuple[int, bool, bool], str | None] = {}

    def state(self, i: int, on_lo: bool, on_hi: bool) -> str | None:
        if on_lo and self.lo_inclusive and not self.lo[i:].strip("0"):
            on_lo = False  # whatever follows is at least the lower bound
        if not on_lo and not on_hi:
            return self._free(i)
        if on_lo != on_hi and i >= len(self.lo if on_lo else self.hi):
            return self._past(i, on_lo)
        key = (i, on_lo, on_hi)
        if key not in self.memo:
            self.memo[key] = self._tight(i, on_lo, on_hi)
        return self.memo[key]

    def _free(self, i: int) -> str:
        if i < self.n:
            head = f"[1-9] {repeat('[0-9]', self.n - 1, self.n - 1)}" if i == 0 and self.n > 1 \
                else repeat("[0-9]", self.n - i, self.n - i)
            return f"{head} {_fraction(self.frac)}".strip()
        if i == self.n:
            return _fraction(self.frac)
        return repeat("[0-9]", 0, self.n + self.frac - i)

    def _past(self, i: int, on_lo: bool) -> str | None:
        """Past the last digit of the one bound the prefix equals, where zeros keep it equal."""
        room = self.n + self.frac - i
        dot = '"." ' if i == self.n else ""
        if on_lo:  # an exclusive bound (an inclusive one freed the state): a non-zero digit must come
            if room <= 0:
                return None
            # the digits after the non-zero one may exceed ``frac``: a longer fraction is still valid
            return f'{dot}{repeat(_ZERO_DIGIT, 0, room - 1)} [1-9] {repeat("[0-9]", 0, room - 1)}'.strip()
        if not self.hi_inclusive:
            return None
        if i == self.n:
            return f'("." {repeat(_ZERO_DIGIT, 1, self.frac)})?' if self.frac else ""
        return repeat(_ZERO_DIGIT, 0, room)

    def _tight(self, i: int, on_lo: bool, on_hi: bool) -> str | None:
        steps: list[tuple[int, str]] = []  # (digit, what follows it)
        if i < self.n + self.frac:
            least = int(self.lo[i]) if on_lo and i < len(self.lo) else 0
            most = (int(self.hi[i]) if i < len(self.hi) else 0) if on_hi else 9
            for d in range(max(least, 1 if i == 0 and self.n > 1 else 0), most + 1):
                rest = self.state(i + 1, on_lo and d == least, on_hi and d == most)
                if rest is not None:
                    steps.append((d, rest))
        options = _digit_runs(steps)
        if i == self.n and options:
            options = [f'"." ({" | ".join(options)})' if len(options) > 1 else f'"." {options[0]}']
        # at the end, a prefix still on the lower bound is below it or (exclusive) equal; one on the upper
        # bound is below it while the bound has digits left, else equal
        accept = i >= self.n and not on_lo and (not on_hi or i < len(self.hi) or self.hi_inclusive)
        if not options:
            return "" if accept else None
        body = " | ".join(options)
        if accept:
            return f"({body})?"
        return body if len(options) == 1 else self.owner.builder.add(self.owner.hint, body)


def _digit_runs(steps: list[tuple[int, str]]) -> list[str]:
    """``[a-b] rest`` for each run of consecutive digits followed by the same ``rest``."""
    options: list[str] = []
    k = 0
    while k < len(steps):
        j = k
        while j + 1 < len(steps) and steps[j + 1][1] == steps[k][1] and steps[j + 1][0] == steps[j][0] + 1:
            j += 1
        a, b = steps[k][0], steps[j][0]
        digit = f'"{a}"' if a == b else f"[{a}-{b}]"
        options.append(f"{digit} {steps[k][1]}".strip())
        k = j + 1
    return options
