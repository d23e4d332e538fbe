"""gpt-oss's harmony output: analysis is thinking, final is content, a message to a function is a call.

The outputs are what gpt-oss writes after its template's generation prompt
(``<|start|>assistant``), in each way a detokenizer may show them: with or
without ``<|end|>`` (a control token llama.cpp renders only when it is not
end-of-generation), with or without the ``<|return|>``/``<|call|>`` that end
the generation, the recipient in the channel or in the role header. Whatever
the chunking, no header text may reach the content.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power.prompt import TemplateSource, output_parser, render_chat
from power.prompt.families import family_of
from power.prompt.parsing.delta import Delta
from tests.prompt.templates_kit import FOLDER, TOOLS
from tests.tinymodels import tiny_engine

TEMPLATE = FOLDER / "openai-gpt-oss-120b.jinja"
pytestmark = pytest.mark.skipif(not TEMPLATE.is_file(), reason=f"{TEMPLATE} is absent")

THINK = "The user wants the weather. I should call get_weather."
ANSWER = "It is sunny in Paris, 22 C."
ARGS = '{"city":"Paris","days":3}'
HEADER_WORDS = ("<|", "|>", "analysis", "commentary", "assistant", "to=", "constrain")


def _message(header: str, body: str, end: str, *, first: bool, end_shown: bool) -> str:
    start = "" if first else "<|start|>assistant"
    return start + header + "<|message|>" + body + (end if end_shown or end != "<|end|>" else "")


def outputs(end_shown: bool, eog_shown: bool) -> list[tuple[str, str, str, list[tuple[str, dict[str, Any]]]]]:
    """(name, output, thinking, calls): the ways gpt-oss answers, as the detokenizer shows them."""
    ret, call = ("<|return|>", "<|call|>") if eog_shown else ("", "")
    analysis = "<|channel|>analysis"
    args = {"city": "Paris", "days": 3}

    def msgs(*parts: tuple[str, str, str]) -> str:
        return "".join(_message(h, b, e, first=i == 0, end_shown=end_shown) for i, (h, b, e) in enumerate(parts))

    return [
        ("think-then-answer", msgs((analysis, THINK, "<|end|>"), ("<|channel|>final", ANSWER, ret)), THINK, []),
        ("answer-only", msgs(("<|channel|>final", ANSWER, ret)), "", []),
        ("call-in-channel", msgs((analysis, THINK, "<|end|>"),
                                 ("<|channel|>commentary to=functions.get_weather <|constrain|>json", ARGS, call)),
         THINK, [("get_weather", args)]),
        ("call-in-role", msgs((analysis, THINK, "<|end|>"),
                              (" to=functions.get_weather<|channel|>commentary json", ARGS, call)),
         THINK, [("get_weather", args)]),
        ("call-first", msgs((" to=functions.get_weather<|channel|>commentary json", ARGS, call)),
         "", [("get_weather", args)]),
        ("preamble-then-call", msgs(("<|channel|>commentary", ANSWER, "<|end|>"),
                                    ("<|channel|>commentary to=functions.get_weather json", ARGS, call)),
         "", [("get_weather", args)]),
        ("stray-commentary", msgs(("<|channel|>commentary to=assistant<|channel|>analysis", THINK, "<|end|>"),
                                  ("<|channel|>final", ANSWER, ret)), THINK, []),
    ]


CASES = [pytest.param(end, eog, i, id=f"{outputs(end, eog)[i][0]}-end{int(end)}-eog{int(eog)}")
         for end in (True, False) for eog in (True, False) for i in range(len(outputs(True, True)))]


def _source() -> TemplateSource:
    return TemplateSource(jinja=TEMPLATE.read_text(), bos_token="<|startoftext|>", eos_token="<|return|>")


def _prompt(tools: Any = TOOLS) -> str:
    return render_chat(_source(), [{"role": "user", "content": "What is the weather in Paris?"}], tools=tools)


def _parse(pieces: list[str], *, tools: Any = TOOLS, think: bool = True) -> Delta:
    parser = output_parser(_source(), prompt=_prompt(tools), tools=tools, think=think)
    out = Delta()
    for piece in pieces:
        out = out + parser.feed(piece)
    return out + parser.finish()


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]


def test_the_prompt_ends_where_the_outputs_begin() -> None:
    assert _prompt().endswith("<|start|>assistant")
    assert family_of(TEMPLATE.read_text()).name == "harmony"


@pytest.mark.parametrize(("end_shown", "eog_shown", "index"), CASES)
@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=16))
def test_channels_split_in_any_chunking(end_shown: bool, eog_shown: bool, index: int, cuts: list[int]) -> None:
    _, text, thinking, calls = outputs(end_shown, eog_shown)[index]
    out = _parse(_chunks(text, cuts))
    assert out.thinking == thinking
    assert [(c.name, c.arguments) for c in out.tool_calls] == calls
    expected = ANSWER if ANSWER in text else ""
    assert out.content == expected, text
    assert not any(word in out.content for word in HEADER_WORDS)


@pytest.mark.parametrize("text", [o[1] for o in outputs(True, True)])
def test_no_header_reaches_content_without_tools(text: str) -> None:
    """Without tools nothing is a call, yet the channels still split; calls come back as written."""
    out = _parse([text], tools=None)
    assert out.tool_calls == ()
    if "to=functions" not in text:
        assert out.content in ("", ANSWER) and out.thinking in ("", THINK)


def test_think_false_drops_the_analysis() -> None:
    text = outputs(False, False)[0][1]
    out = _parse([text], think=False)
    assert (out.content, out.thinking) == (ANSWER, "")


@pytest.mark.parametrize("recipient", ["functions.launch_rockets", "browser.search", "python"])
def test_messages_to_other_recipients_stay_content_as_written(recipient: str) -> None:
    call = f"<|channel|>commentary to={recipient} <|constrain|>json<|message|>{ARGS}<|call|>"
    out = _parse([call])
    assert out.tool_calls == ()
    assert out.content == call


def test_arguments_that_are_not_an_object_stay_content() -> None:
    call = "<|channel|>commentary to=functions.get_weather json<|message|>[1, 2]"
    assert _parse([call]).content == call


@pytest.mark.parametrize("text", ["Just text, no channels.", "a <|b|> c", "<|channel|>final but no message\n x",
                                  "<|channel|>???<|message|>hi"])
def test_text_that_is_no_header_is_content_as_written(text: str) -> None:
    out = _parse(list(text))
    assert (out.content, out.thinking, out.tool_calls) == (text, "", ())


@pytest.mark.parametrize(("text", "content", "thinking"), [
    ("<|channel|>analysis<|message|>t<|end|>The answer.", "The answer.", "t"),  # text after a message
    ("<|channel|>final<|message|>a<|start|>assistant<|chan", "a", ""),  # stopped inside a header
    ("<|channel|>analysis<|message|>t<|end|><|start|>assistant", "", "t"),
    ("x <|channel|>", "x ", ""),
    ("<|channel|>final<|message|>a<|return|>", "a", ""),
])
def test_message_ends_and_cut_headers(text: str, content: str, thinking: str) -> None:
    out = _parse(list(text))
    assert (out.content, out.thinking, out.tool_calls) == (content, thinking, ())


# ---- the engine's own text for harmony's special tokens -------------------------------------------------

HARMONY_TOKENS = ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|constrain|>", "<|return|>",
                  "<|call|>"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A tiny model whose vocabulary has harmony's tokens, as control tokens that it samples."""
    eng = tiny_engine(tmp_path_factory.mktemp("harmony"), specials=HARMONY_TOKENS)
    yield eng
    eng.close()


ENGINE_GRAMMARS = {
    "answer": ('root ::= "<|channel|>analysis<|message|>" [a-z]{2,8} "<|end|><|start|>assistant<|channel|>final'
               '<|message|>" [a-z]{2,8}'),
    "call": ('root ::= "<|channel|>analysis<|message|>" [a-z]{2,8} "<|end|><|start|>assistant<|channel|>commentary'
             ' to=functions.get_weather <|constrain|>json<|message|>{\\"city\\": \\"" [a-z]{2,6} "\\"}"'),
}


@pytest.mark.parametrize("kind", sorted(ENGINE_GRAMMARS))
def test_what_the_engine_writes_parses(engine: Any, kind: str) -> None:
    """The special tokens as the engine's detokenizer shows them (``<|return|>``/``<|call|>`` end it)."""
    from tests.tinymodels import vocabulary

    vocab, _ = vocabulary(HARMONY_TOKENS)
    sampled: set[str] = set()
    for seed in range(6):
        out = engine.submit("x", {"temperature": 1.0, "seed": seed, "num_predict": 200},
                            grammar=ENGINE_GRAMMARS[kind]).result()
        assert out.done_reason == "stop", out.text
        sampled |= {vocab[t] for t in out.tokens if vocab[t] in HARMONY_TOKENS}
        assert not any(eog in out.text for eog in ("<|return|>", "<|call|>"))  # they end it unseen
        parsed = _parse([out.text])
        assert parsed.thinking.isalpha(), (out.text, parsed)
        if kind == "answer":
            assert parsed.content.isalpha() and parsed.tool_calls == (), (out.text, parsed)
        else:
            assert parsed.content == "", (out.text, parsed)
            assert [c.name for c in parsed.tool_calls] == ["get_weather"], out.text
            assert parsed.tool_calls[0].arguments["city"].isalpha()
    assert sampled, "the grammar's tags were all spelled out in bytes: the special tokens went untested"
