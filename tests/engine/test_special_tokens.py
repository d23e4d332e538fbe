"""Control tokens the model writes are text, unless they end the generation.

Many families open their tool calls with control tokens (Kimi's
``<|tool_calls_section_begin|>``, Mistral's ``[TOOL_CALLS]``, Llama's
``<|python_tag|>``): llama-server renders a format's "preserved" tokens and
Ollama renders them all, so the engine does too; end-of-generation tokens end
the output and are never shown. A tiny model whose vocabulary has Kimi K2's
tokens as control tokens, forced by a grammar that names them by id, shows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from power.prompt.families import FamilyParser, kimi
from tests.tinymodels import tiny_engine, vocabulary

KIMI = ["<|tool_calls_section_begin|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>",
        "<|tool_calls_section_end|>", "<|im_end|>"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    eng = tiny_engine(tmp_path_factory.mktemp("special"), specials=KIMI)
    yield eng
    eng.close()


def _id(token: str) -> str:
    return f"<[{vocabulary(KIMI)[0].index(token)}]>"  # the token itself, not its text spelled in bytes


def test_control_tokens_are_text_and_a_kimi_call_parses(engine: Any) -> None:
    grammar = (f'root ::= {_id("<|tool_calls_section_begin|>")} {_id("<|tool_call_begin|>")} "functions.get_weather:0" '
               f'{_id("<|tool_call_argument_begin|>")} "{{\\"city\\": \\"" [a-z]{{2,6}} "\\"}}" '
               f'{_id("<|tool_call_end|>")} {_id("<|tool_calls_section_end|>")}')
    out = engine.submit("x", {"temperature": 1.0, "seed": 1, "num_predict": 80}, grammar=grammar).result()
    assert out.done_reason == "stop"
    assert out.text.startswith("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"), out.text
    parser = FamilyParser(kimi.FAMILY, TOOLS)
    delta = parser.feed(out.text) + parser.finish()
    assert [c.name for c in delta.tool_calls] == ["get_weather"] and delta.content == ""


def test_end_of_generation_tokens_end_the_text_unseen(engine: Any) -> None:
    """Once the grammar is complete only end-of-generation tokens are left (<|eos|>, <|im_end|>): never shown."""
    vocab = vocabulary(KIMI)[0]
    for seed in range(4):
        out = engine.submit("x", {"temperature": 1.0, "seed": seed, "num_predict": 20},
                            grammar='root ::= "ab"').result()
        assert out.done_reason == "stop" and out.text == "ab", out.text
        assert [vocab[t] for t in out.tokens] == ["a", "b"]
