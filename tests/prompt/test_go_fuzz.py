"""Fuzz: the Go template parser and renderer raise nothing but TemplateError (reliability P11)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from power.errors import TemplateError
from power.prompt.go import GoTemplate
from power.prompt.limits import Limits

_PIECES = [
    "{{", "}}", "{{-", "-}}", " ", "\n", ".", ".Messages", ".Role", ".X.Y", "$", "$x", ":=", "=",
    "|", "(", ")", ",", "if", "else", "end", "range", "with", "define", "template", "block",
    "break", "continue", '"s"', "`r`", "'c'", "1", "-2", "3.5", "0x1f", "nil", "true", "eq",
    "and", "or", "not", "len", "index", "slice", "printf", '"%d %s %v"', "json", "print",
    "/*", "*/", "\\", '"', "toTypeScriptType", "currentDate", "html", "js", "x", "1e400",
]

_SMALL = Limits(max_steps=20_000, max_output=20_000, max_seconds=1.0)

_DATA = {"Messages": [{"Role": "user", "Content": "hi", "ToolCalls": []}], "X": {"Y": [1, 2]},
         "Tools": [{"function": {"name": "f"}}], "S": "str", "N": 3}


def _try(src: str) -> None:
    try:
        GoTemplate(src, _SMALL).render(_DATA)
    except TemplateError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40).map("".join))
def test_token_soup_raises_only_template_error(src: str) -> None:
    _try(src)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_template_error(src: str) -> None:
    _try(src)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}-. $()|\"'`/*:=abcdefiglnrstuvwxyz0123456789\n")),
               max_size=120))
def test_template_alphabet_raises_only_template_error(src: str) -> None:
    _try("{{" + src + "}}")
