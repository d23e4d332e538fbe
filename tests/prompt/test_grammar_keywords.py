"""Numeric bounds, ``pattern`` and ``format`` in grammars from JSON schemas, checked without llama.cpp.

The grammars for these keywords hold no recursion, so each one reads as a Python regular
expression (``gbnf_regex``): a JSON text matches the grammar exactly when the regex matches it.
That makes the promises testable as equivalences: a value is written by the grammar if and only
if the schema accepts it (within the documented digit limits).
"""

from __future__ import annotations

import calendar
import ipaddress
import json
import math
import re
import uuid
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power.errors import InvalidRequest
from power.prompt.grammars import MAX_RULES, schema_to_grammar

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}


def _gbnf_char(body: str, i: int) -> tuple[str, int]:
    """One character of a GBNF literal or class at ``i``, and the index after it."""
    if body[i] != "\\":
        return body[i], i + 1
    kind = body[i + 1]
    width = {"x": 2, "u": 4, "U": 8}.get(kind)
    if width:
        return chr(int(body[i + 2:i + 2 + width], 16)), i + 2 + width
    return _ESCAPES[kind], i + 2


def gbnf_regex(grammar: str) -> re.Pattern[str]:
    """The ``root`` of a grammar without recursion as a Python regex (rules inlined)."""
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines() if line.strip())

    def translate(body: str, seen: tuple[str, ...]) -> str:
        out, i = [], 0
        while i < len(body):
            ch = body[i]
            if ch == " ":
                i += 1
            elif ch == '"':
                text, i = [], i + 1
                while body[i] != '"':
                    c, i = _gbnf_char(body, i)
                    text.append(c)
                out.append(re.escape("".join(text)))
                i += 1
            elif ch == "[":
                i += 1
                parts = ["[^" if body[i] == "^" else "["]
                i += body[i] == "^"
                while body[i] != "]":
                    c, i = _gbnf_char(body, i)
                    parts.append(f"\\U{ord(c):08x}")
                    if body[i] == "-" and body[i + 1] != "]":
                        c, i = _gbnf_char(body, i + 1)
                        parts.append(f"-\\U{ord(c):08x}")
                out.append("".join(parts) + "]")
                i += 1
            elif ch == "(":
                out.append("(?:")
                i += 1
            elif ch in ")|*+?":
                out.append(ch)
                i += 1
            elif ch == "{":
                end = body.index("}", i)
                out.append(body[i:end + 1])
                i = end + 1
            else:
                name = re.match(r"[A-Za-z0-9-]+", body[i:])
                assert name is not None, body[i:]
                assert name.group() not in seen, f"recursive rule {name.group()}"
                out.append(f"(?:{translate(rules[name.group()], seen + (name.group(),))})")
                i += len(name.group())
        return "".join(out)

    return re.compile(translate(rules["root"], ("root",)), re.DOTALL)


def spell(value: Any) -> str:
    """JSON text as the grammars spell it: escapes only where JSON needs them, DEL escaped too."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    return bool(jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(value))


# -- integers --

INTEGER_BOUNDS = [
    {"minimum": -37, "maximum": 1234},
    {"exclusiveMinimum": -37, "exclusiveMaximum": 1234},
    {"minimum": -5.5, "maximum": 7.2},
    {"exclusiveMinimum": -5.5, "exclusiveMaximum": 7.2},
    {"minimum": 0, "maximum": 0},
    {"exclusiveMinimum": 9, "maximum": 10},
    {"maximum": -100},
    {"exclusiveMaximum": 0},
    {"minimum": 99},
    {"minimum": 5, "exclusiveMinimum": 5, "maximum": 1000, "exclusiveMaximum": 1000},
    {"minimum": -1000, "maximum": -999},
    {"minimum": 1, "maximum": 1099},
    {"minimum": 0},
]


@pytest.mark.parametrize("bounds", INTEGER_BOUNDS)
def test_integer_bounds_are_exact(bounds: dict[str, Any]) -> None:
    schema = {"type": "integer", **bounds}
    regex = gbnf_regex(schema_to_grammar(schema))
    for n in [*range(-1600, 1600), 10 ** 15, -(10 ** 15), 10 ** 16 - 1]:
        assert bool(regex.fullmatch(str(n))) == _valid(n, schema), (n, bounds)


@settings(max_examples=300, deadline=None)
@given(lo=st.one_of(st.none(), st.integers(-10 ** 7, 10 ** 7), st.floats(-1e7, 1e7)),
       hi=st.one_of(st.none(), st.integers(-10 ** 7, 10 ** 7), st.floats(-1e7, 1e7)),
       lo_key=st.sampled_from(["minimum", "exclusiveMinimum"]),
       hi_key=st.sampled_from(["maximum", "exclusiveMaximum"]), probes=st.lists(st.integers(-50, 50), max_size=20))
def test_integer_bounds_property(lo: Any, hi: Any, lo_key: str, hi_key: str, probes: list[int]) -> None:
    schema: dict[str, Any] = {"type": "integer"}
    if lo is not None:
        schema[lo_key] = lo
    if hi is not None:
        schema[hi_key] = hi
    near = [int(b) for b in (lo, hi) if b is not None] or [0]
    candidates = {b + d for b in near for d in probes} | {b + d for b in near for d in (-1, 0, 1)}
    try:
        regex = gbnf_regex(schema_to_grammar(schema))
    except InvalidRequest:  # refused: then no integer lies between the bounds
        assert lo is not None and hi is not None
        least = math.floor(lo) + 1 if lo_key == "exclusiveMinimum" else math.ceil(lo)
        most = math.ceil(hi) - 1 if hi_key == "exclusiveMaximum" else math.floor(hi)
        assert least > most
        return
    for n in candidates:
        assert bool(regex.fullmatch(str(n))) == _valid(n, schema), (n, schema)


# -- numbers --

NUMBER_BOUNDS = [
    {"minimum": -2.5, "maximum": 3.25},
    {"exclusiveMinimum": -2.5, "exclusiveMaximum": 3.25},
    {"exclusiveMinimum": 0},
    {"exclusiveMinimum": 0, "maximum": 1},
    {"minimum": 0.1, "exclusiveMaximum": 0.2},
    {"exclusiveMinimum": -0.05, "exclusiveMaximum": -0.0499},
    {"maximum": -7},
    {"exclusiveMaximum": 100.5},
    {"minimum": 12.75, "maximum": 12.75},
    {"minimum": 99.99, "maximum": 100.01},
]


def _decimal_texts() -> list[str]:
    texts = []
    for whole in ("0", "1", "2", "3", "7", "12", "99", "100", "101", "5000"):
        for frac in ("", ".0", ".00", ".05", ".049", ".0499", ".04991", ".1", ".1999", ".2", ".25", ".2501",
                     ".5", ".75", ".7500", ".99", ".999", ".01", ".001"):
            texts += [whole + frac, "-" + whole + frac]
    return texts


@pytest.mark.parametrize("bounds", NUMBER_BOUNDS)
def test_number_bounds_are_exact(bounds: dict[str, Any]) -> None:
    schema = {"type": "number", **bounds}
    regex = gbnf_regex(schema_to_grammar(schema))
    for text in _decimal_texts():
        if Decimal(text) == 0 and text.startswith("-"):
            continue  # zero is written without a sign
        assert bool(regex.fullmatch(text)) == _valid(json.loads(text), schema), (text, bounds)


@settings(max_examples=300, deadline=None)
@given(lo=st.one_of(st.none(), st.decimals(-1000, 1000, places=3)),
       hi=st.one_of(st.none(), st.decimals(-1000, 1000, places=3)),
       lo_key=st.sampled_from(["minimum", "exclusiveMinimum"]),
       hi_key=st.sampled_from(["maximum", "exclusiveMaximum"]),
       probes=st.lists(st.decimals(-3, 3, places=4), max_size=20))
def test_number_bounds_property(lo: Decimal | None, hi: Decimal | None, lo_key: str, hi_key: str,
                                probes: list[Decimal]) -> None:
    schema: dict[str, Any] = {"type": "number"}
    if lo is not None:
        schema[lo_key] = float(lo)
    if hi is not None:
        schema[hi_key] = float(hi)
    near = [b for b in (lo, hi) if b is not None] or [Decimal(0)]
    try:
        regex = gbnf_regex(schema_to_grammar(schema))
    except InvalidRequest:
        assert lo is not None and hi is not None and (lo > hi or lo == hi and (lo_key, hi_key) != (
            "minimum", "maximum"))
        return
    for text in {f"{b + d:f}" for b in near for d in [*probes, Decimal(0), Decimal("0.001"), Decimal("-0.001")]}:
        if Decimal(text) == 0 and text.startswith("-"):
            continue  # zero is written without a sign
        assert bool(regex.fullmatch(text)) == _valid(json.loads(text), schema), (text, schema)


def test_numbers_without_bounds_keep_exponents_and_bounded_ones_are_plain() -> None:
    assert gbnf_regex(schema_to_grammar({"type": "number"})).fullmatch("-1.5e10")
    bounded = gbnf_regex(schema_to_grammar({"type": "number", "minimum": 0}))
    assert bounded.fullmatch("15.25") and not bounded.fullmatch("1e3") and not bounded.fullmatch("-1")
    digits = gbnf_regex(schema_to_grammar({"type": "number", "minimum": 1e-20, "maximum": 2e-20}))
    assert digits.fullmatch("0.000000000000000000015")  # the fraction grows to what the bounds need


def test_bound_rules_are_shared_between_properties() -> None:
    schema = {"type": "object", "properties": {
        f"p{i}": {"type": "integer", "minimum": -37, "maximum": 1234} for i in range(MAX_RULES // 10)}}
    assert schema_to_grammar(schema).count("::= (\"-\"") == 1


@pytest.mark.parametrize("schema, message", [
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
    ({"type": "integer", "exclusiveMinimum": 4, "exclusiveMaximum": 5}, "no integer"),
    ({"type": "integer", "minimum": 4.2, "maximum": 4.8}, "no integer"),
    ({"type": "number", "exclusiveMinimum": 1, "maximum": 1}, "no number"),
    ({"type": "number", "minimum": 1e60}, "more than 40 digits"),
    ({"type": "number", "exclusiveMinimum": 0, "maximum": 1e-45}, "more than 40 digits"),
])
def test_impossible_or_huge_bounds_are_refused(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as info:
        schema_to_grammar(schema)
    assert info.value.status == 400


def test_an_unreachable_upper_bound_is_no_bound() -> None:
    regex = gbnf_regex(schema_to_grammar({"type": "integer", "minimum": -1e300, "maximum": 1.7976931348623157e308}))
    assert regex.fullmatch("-12") and regex.fullmatch("9" * 16)


# -- patterns --

ALPHABET = "aAbBcdemoxyzZ0129-+._ @\"\\\n\t\r\x7f\x01é😀\u2028"

# (ECMAScript pattern, a Python regex that means the same on these strings)
PATTERNS = [
    (r"^[A-Z]{2}-\d{3}$", r"^[A-Z]{2}-[0-9]{3}\Z"),
    (r"^(\+|00)?[0-9 ]{3,12}$", r"^(\+|00)?[0-9 ]{3,12}\Z"),
    (r"ab+c", r"ab+c"),
    (r"^a|b$", r"^a|b\Z"),
    (r'^[^"\\]*$', r'^[^"\\]*\Z'),
    (r"^(?:\d+\.){2}\d+$", r"^(?:[0-9]+\.){2}[0-9]+\Z"),
    (r"x(y|z)?$", r"x(y|z)?\Z"),
    (r"^.{2,4}$", "^[^\n\r\u2028\u2029]{2,4}\\Z"),
    (r"^\w+@\w+\.com$", r"^[A-Za-z0-9_]+@[A-Za-z0-9_]+\.com\Z"),
    ("^[\\u00e9\\t\"\\\\]+$", '^[\u00e9\t"\\\\]+\\Z'),
    (r"(a*)*b", r"(a*)*b"),
    (r"^(ab|a)(c|bcd)$", r"^(ab|a)(c|bcd)\Z"),
    (r"^$", r"^\Z"),
    (r"", r""),
    (r"^\x41\u0042?\.$", r"^AB?\.\Z"),
    (r"^[^\s]{1,3}$", "^[^\t-\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]{1,3}\\Z"),
    (r"^\D\W?$", "^[^0-9][^A-Za-z0-9_]?\\Z"),
    (r"^[a-c-]+?$", r"^[a-c-]+?\Z"),
    (r"^a{2,}b{0,2}$", r"^a{2,}b{0,2}\Z"),
    (r"^(a|)+$", r"^(a|)+\Z"),
    (r"^\uD83D\uDE00.$", "^\U0001F600[^\n\r\u2028\u2029]\\Z"),
    (r"^[\0-\x1f]$", "^[\x00-\x1f]\\Z"),
]


@pytest.mark.parametrize("pattern, python", PATTERNS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_patterns_match_exactly_the_strings_they_search(pattern: str, python: str, data: st.DataObject) -> None:
    regex = gbnf_regex(schema_to_grammar({"type": "string", "pattern": pattern}))
    text = data.draw(st.one_of(st.from_regex(python, alphabet=st.sampled_from(ALPHABET)),
                               st.text(ALPHABET, max_size=8)))
    assert bool(regex.fullmatch(spell(text))) == bool(re.search(python, text)), text


def test_dot_and_classes_spell_every_character_once() -> None:
    dot = gbnf_regex(schema_to_grammar({"type": "string", "pattern": "^.$"}))
    for ch in "a\"\\\t\x00\x1f\x7f\u00e9\u2027\U0001F600":
        assert dot.fullmatch(spell(ch)), repr(ch)
    for ch in "\n\r\u2028\u2029":
        assert not dot.fullmatch(spell(ch)), repr(ch)
    assert not dot.fullmatch('"\\u0041"')  # "A" has one spelling: the letter
    space = gbnf_regex(schema_to_grammar({"type": "string", "pattern": "^\\s$"}))
    for ch in "\t\n\x0b\x0c\r \xa0\u2028\u3000\ufeff":
        assert space.fullmatch(spell(ch)), repr(ch)
    assert not space.fullmatch(spell("\x1c")) and not space.fullmatch(spell("a"))


@pytest.mark.parametrize("schema, inside, outside", [
    ({"pattern": "^[a-z]+$", "maxLength": 5}, ["a", "abcde"], ["", "abcdef"]),
    ({"pattern": "^[a-z]*$", "minLength": 2, "maxLength": 3}, ["ab", "abc"], ["a", "abcd"]),
    ({"pattern": "^ab", "maxLength": 4}, ["ab", "abcd", "ab\n\""], ["abcde", "xab"]),
    ({"pattern": "cd$", "minLength": 3}, ["xcd", "\u00e9\u00e9cd"], ["cd", "cdx"]),
    ({"pattern": "^[A-Z]{2}-\\d{3}$", "minLength": 6, "maxLength": 6}, ["AB-123"], ["AB-12"]),
])
def test_lengths_fold_into_a_pattern(schema: dict[str, Any], inside: list[str], outside: list[str]) -> None:
    regex = gbnf_regex(schema_to_grammar({"type": "string", **schema}))
    for text in inside:
        assert regex.fullmatch(spell(text)), text
    for text in outside:
        assert not regex.fullmatch(spell(text)), text


@pytest.mark.parametrize("pattern, feature", [
    ("(?=a)b", "lookahead"),
    ("a(?!b)", "negative lookahead"),
    ("(?<=a)b", "lookbehind"),
    ("(?<!a)b", "negative lookbehind"),
    (r"(a)\1", "backreference"),
    (r"\bword\b", "word boundary"),
    (r"\Bx", "word boundary"),
    ("(?i)abc", "group syntax"),
    ("(?P<x>a)", "group syntax"),
    (r"a\Z", r"escape \\Z"),
    ("a^b", r"\^ is supported only at the start"),
    ("(^a)", r"\^ is supported only at the start"),
    ("a$b", r"\$ is supported only at the end"),
    ("(a$)", r"\$ is supported only at the end"),
    ("[]a]", "empty class"),
    ("a{300}", "exceeds 256"),
    ("(" * 40 + ")" * 40, "nest deeper"),
    ("^[^\\s\\S]$", "matches no string"),
])
def test_unsupported_regex_features_are_named_400s(pattern: str, feature: str) -> None:
    with pytest.raises(InvalidRequest, match=feature) as info:
        schema_to_grammar({"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}})
    assert info.value.status == 400
    assert "code" in str(info.value)


def test_a_pattern_that_no_length_allows_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="within minLength and maxLength"):
        schema_to_grammar({"type": "string", "pattern": "^[a-z]{5}$", "maxLength": 3})


def test_pattern_rules_are_shared_and_the_pattern_wins_over_format() -> None:
    schema = {"type": "array", "prefixItems": [{"type": "string", "pattern": "^x+$"}] * 3}
    assert schema_to_grammar(schema).count("\"x\"+") == 1
    both = gbnf_regex(schema_to_grammar({"type": "string", "pattern": "^x$", "format": "date"}))
    assert both.fullmatch('"x"') and not both.fullmatch('"2024-01-01"')
    unknown = gbnf_regex(schema_to_grammar({"type": "string", "format": "color"}))
    assert unknown.fullmatch('"anything"')


# -- formats --

def _format(name: str) -> re.Pattern[str]:
    return gbnf_regex(schema_to_grammar({"type": "string", "format": name}))


def test_date_is_exact_for_every_day_of_sample_years() -> None:
    regex = _format("date")
    for year in (0, 4, 100, 400, 1900, 1999, 2000, 2023, 2024, 2100, 9996, 9999):
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        for month in range(14):
            days = 0 if not 1 <= month <= 12 else 29 if month == 2 and leap else calendar.monthrange(2001, month)[1]
            for day in range(33):
                text = f"{year:04d}-{month:02d}-{day:02d}"
                assert bool(regex.fullmatch(json.dumps(text))) == (1 <= day <= days), text
    for bad in ("2024-1-01", "24-01-01", "2024-01-01T", "2024/01/01", "12024-01-01"):
        assert not regex.fullmatch(json.dumps(bad)), bad


_OFFSETS = st.one_of(st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
                     st.builds(lambda s, h, m: f"{s}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 23),
                               st.integers(0, 59)))
_FRACTIONS = st.one_of(st.just(""), st.builds(lambda d: "." + d, st.text("0123456789", min_size=1, max_size=9)))


@settings(max_examples=200, deadline=None)
@given(moment=st.datetimes(), fraction=_FRACTIONS, offset=_OFFSETS, sep=st.sampled_from("Tt"))
def test_rfc3339_times_and_date_times_are_written(moment: Any, fraction: str, offset: str, sep: str) -> None:
    time = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{fraction}{offset}"
    assert _format("time").fullmatch(json.dumps(time)), time
    day = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    assert _format("date-time").fullmatch(json.dumps(day + sep + time))


@pytest.mark.parametrize("text, valid", [
    ("23:59:60Z", True), ("23:59:60.5+00:00", True), ("12:00:60Z", False), ("24:00:00Z", False),
    ("12:60:00Z", False), ("12:00:00", False), ("12:00:00+24:00", False), ("12:00:00.Z", False),
    ("1:00:00Z", False), ("12:00:00+0100", False),
])
def test_time_edges(text: str, valid: bool) -> None:
    assert bool(_format("time").fullmatch(json.dumps(text))) == valid


@settings(max_examples=100, deadline=None)
@given(value=st.uuids(), upper=st.booleans(), address=st.ip_addresses(v=4))
def test_uuid_and_ipv4_are_written(value: uuid.UUID, upper: bool, address: ipaddress.IPv4Address) -> None:
    text = str(value).upper() if upper else str(value)
    assert _format("uuid").fullmatch(json.dumps(text))
    assert _format("ipv4").fullmatch(json.dumps(str(address)))


@pytest.mark.parametrize("name, good, bad", [
    ("uuid", ["00000000-0000-0000-0000-000000000000", "A0b1C2d3-0000-4000-8000-ffffffffffff"],
     ["00000000-0000-0000-0000-00000000000", "00000000000000000000000000000000",
      "g0000000-0000-0000-0000-000000000000"]),
    ("ipv4", ["0.0.0.0", "255.255.255.255", "10.0.0.1"], ["256.1.1.1", "01.1.1.1", "1.1.1", "1.1.1.1.1"]),
    ("hostname", ["localhost", "a-b.example.com", "x" * 63 + ".io", "A1"],
     ["-a.com", "a-.com", "a..b", "a_b.com", "x" * 64, "a.", ""]),
    ("email", ["joe@example.com", "first.last+tag@a-b.co", "x!#$%&'*+/=?^_`{|}~-@h"],
     ["joe", "@example.com", "joe@", ".joe@example.com", "jo..e@example.com", "joe.@example.com", "a@b@c"]),
    ("uri", ["https://example.com/a/b?q=1&r=%20#frag", "mailto:joe@example.com", "urn:isbn:0451450523",
             "file:///etc/hosts", "http://user:pw@host:8080/", "x:"],
     ["example.com", "://x", "1http://x", "http://exa mple.com", "http://x/%zz", "http://x/a b"]),
])
def test_format_examples(name: str, good: list[str], bad: list[str]) -> None:
    regex = _format(name)
    for text in good:
        assert regex.fullmatch(json.dumps(text)), text
    for text in bad:
        assert not regex.fullmatch(json.dumps(text)), text


def test_unique_items_is_accepted_but_not_enforced() -> None:
    plain = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3}
    assert schema_to_grammar({**plain, "uniqueItems": True}) == schema_to_grammar(plain)
