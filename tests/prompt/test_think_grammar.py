"""Thinking first, then the answer grammar: the wrapper's grammar in llama.cpp's sampler and its shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from power.prompt.grammars import after_thinking, schema_to_grammar
from tests.tinymodels import write_llama

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0}},
          "required": ["ok", "n"]}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from power.engine import Engine, LoadOptions

    path = write_llama(tmp_path_factory.mktemp("think-grammar") / "tiny.gguf", seed=3)
    eng = Engine(str(path), LoadOptions(num_ctx=2048, num_parallel=4, num_batch=128))
    yield eng
    eng.close()


def _run(engine: Any, grammar: str, seed: int, prompt: str = "x") -> str:
    out = engine.submit(prompt, {"temperature": 1.0, "seed": seed, "num_predict": 1500}, grammar=grammar).result()
    assert out.done_reason == "stop", out.text[-200:]
    return str(out.text)


def _answer(text: str, open_tag: str, close_tag: str, in_thinking: bool) -> str:
    """The part after the thinking block: the text after the first close tag, so a grammar that let the
    close tag into the thinking text would leave an answer that does not parse."""
    if in_thinking:
        assert close_tag in text
        return text.split(close_tag, 1)[1]
    stripped = text.lstrip(" \t\r\n")
    if not stripped.startswith(open_tag):
        return text
    assert close_tag in stripped[len(open_tag):]
    return stripped[len(open_tag):].split(close_tag, 1)[1]


# Close tags the tiny model writes often by chance, so that thinking ends within the token budget.
@pytest.mark.parametrize("open_tag, close_tag, in_thinking", [
    ("<", "he", False), ("<", "he", True), ("[T]", "on", False), ("[T]", "on", True),
])
def test_outputs_think_then_validate(engine: Any, open_tag: str, close_tag: str, in_thinking: bool) -> None:
    grammar = after_thinking(schema_to_grammar(SCHEMA), open_tag, close_tag, in_thinking=in_thinking)
    assert grammar is not None
    thought = 0
    for seed in range(6):
        text = _run(engine, grammar, seed)
        answer = _answer(text, open_tag, close_tag, in_thinking)
        thought += answer != text
        jsonschema.validate(json.loads(answer), SCHEMA)
    if in_thinking:
        assert thought == 6  # every output closed its thinking before answering


def test_the_real_tags_parse_in_llama_cpp(engine: Any) -> None:
    grammar = after_thinking(schema_to_grammar(SCHEMA), "<think>", "</think>", in_thinking=False)
    assert grammar is not None
    for seed in range(3):
        jsonschema.validate(json.loads(_answer(_run(engine, grammar, seed), "<think>", "</think>", False)), SCHEMA)


def test_only_the_root_rule_is_renamed() -> None:
    grammar = 'root ::= "root" item  # the root\nitem ::= [r] "oot"'
    out = after_thinking(grammar, "<think>", "</think>")
    assert out is not None
    assert 'answer-root ::= "root" item  # the root' in out
    assert out.startswith('root ::= (think-ws "<think>" think-body "</think>" think-ws)? answer-root')


@pytest.mark.parametrize("grammar", [
    'root ::= "(" root? ")"',           # refers to its own root
    'root ::= think-x\nthink-x ::= "a"',  # uses the wrapper's names
])
def test_grammars_that_cannot_be_wrapped(grammar: str) -> None:
    assert after_thinking(grammar, "<think>", "</think>") is None


def test_tags_with_grammar_metacharacters(engine: Any) -> None:
    out = after_thinking('root ::= "x"', '<"open\\>', "]-^\n")
    assert out is not None and "\\x22" in out and "\\x5D\\x2D\\x5E\\x0A" in out
    for seed in range(4):  # llama.cpp parses it, and what it allows starts as it should
        text = engine.submit("x", {"temperature": 1.0, "seed": seed, "num_predict": 6}, grammar=out).result().text
        assert text.lstrip() == "x" or text.lstrip().startswith('<"open\\>'[:len(text.lstrip())])


def test_empty_tags_are_refused() -> None:
    assert after_thinking('root ::= "x"', "", "</think>") is None
