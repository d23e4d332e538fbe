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


# The tiny vocabulary's control tokens: <|eos|> and <|im_end|> end the generation, <|im_start|> does not.
EOS, IM_START, IM_END = 265, 266, 267


@pytest.mark.parametrize("grammar, reason", [
    (f'root ::= <[{EOS}]> "a"', f"token <|eos|> (id {EOS}) ends the generation"),
    ('root ::= "a" <|im_end|>', f"token <|im_end|> (id {IM_END}) ends the generation"),
    (f'root ::= "a" ( "b" | <[{IM_END}]> )', f"token <|im_end|> (id {IM_END}) ends the generation"),
    ("root ::= <[99999]>", "token id 99999 is out of range (the vocabulary has 268)"),
])
def test_token_references_the_grammar_cannot_follow_are_refused(engine: Engine, grammar: str, reason: str) -> None:
    # llama.cpp masks end-of-generation tokens until a grammar is complete, so a grammar that names one can
    # never be followed; trying it aborted the whole runner.
    with pytest.raises(native.GrammarError, match=re.escape(reason)):
        engine.submit("x", {"num_predict": 4}, grammar=grammar).result()
    assert engine.submit("x", {"num_predict": 2}).result().eval_count == 2


def test_token_names_resolve_in_the_vocabulary(engine: Engine) -> None:
    out = engine.submit("x", {"num_predict": 4}, grammar='root ::= "a" <|im_start|> "b"').result()
    assert out.tokens[1] == IM_START and out.text == "a<|im_start|>b"
    out = engine.submit("x", {"num_predict": 3}, grammar=f'root ::= "a" !<[{EOS}]>').result()
    assert out.text.startswith("a") and out.eval_count == 2


@pytest.mark.parametrize("grammar, after", [("root ::= [\\x00]", 0), ('root ::= "ab" [\\x00]', 2)])
def test_a_grammar_no_token_can_continue_ends_its_request_only(engine: Engine, grammar: str, after: int) -> None:
    # No token writes a NUL: at that point every candidate is masked, where llama.cpp would sample among
    # -inf and abort. The request ends with a 400-class error; the others go on.
    others = [engine.submit(f"other {i}", {"num_predict": 12, "temperature": 0}) for i in range(3)]
    with pytest.raises(native.GrammarError, match=f"the grammar allows no token after {after} generated"):
        engine.submit("x", {"num_predict": 8}, grammar=grammar).result()
    assert [o.result().eval_count for o in others] == [12, 12, 12]
    assert engine.submit("x", {"num_predict": 2}).result().eval_count == 2
