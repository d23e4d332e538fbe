"""A grammar that does not parse is refused with llama.cpp's own reason, and the engine keeps serving."""

from __future__ import annotations

import re

import pytest

from power import native
from power.engine import Engine


@pytest.mark.parametrize("grammar, reason", [
    ("root ::= undefined-rule", "rule 'undefined-rule' is used but not defined"),
    ('root ::= "a', "unexpected end of input"),
    ('root := "x"', "expecting ::= at"),
    ('root ::= ("a" | "b"', "expecting ')'"),
    ('root ::= "\\q"', "unknown escape"),
    ('item ::= "x"', "does not contain a 'root' symbol"),
    ('root ::= root "a"', "left recursion"),
])
def test_bad_grammars_say_why(engine: Engine, grammar: str, reason: str) -> None:
    with pytest.raises(native.GrammarError, match="invalid grammar: .*" + re.escape(reason)):
        engine.submit("x", {"num_predict": 2}, grammar=grammar).result()
    assert engine.submit("x", {"num_predict": 2}).result().eval_count == 2


def test_comments_and_blank_lines_before_rules_are_fine(engine: Engine) -> None:
    out = engine.submit("x", {"num_predict": 4}, grammar='# yes or no\n\n  root ::= "yes" | "no"').result()
    assert out.text in ("yes", "no")
