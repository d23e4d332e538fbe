"""A forced call in each family's own syntax: the template's own rendering of a call is what the grammar allows.

For every template in llama.cpp's folder whose tool calls belong to a family, the
text it writes for an assistant's call (from where the call opens to where it
ends) must be taken whole by llama.cpp's grammar engine under the grammar that
``tool_choice: required`` gives (the server's own ``tool_plan``), and parse back
to that call through the model's output parser. (That what the sampler writes
under these grammars parses is ``test_grammar_engine``'s part.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power import native
from power.prompt import TemplateSource, output_parser
from power.prompt.families import FAMILIES, family_of
from power.prompt.families.family import _json_end
from power.server.prompting import tool_plan
from tests.prompt.templates_kit import CALL_ARGS, TOOLS, template_params
from tests.prompt.test_template_families import UNSUPPORTED, _call_output
from tests.tinymodels import write_llama


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[native.Model]:
    """The tiny model's byte-level vocabulary, with gpt-oss's <|call|> (end of generation) as a token."""
    path = write_llama(Path(tmp_path_factory.mktemp("forced")) / "tiny.gguf", specials=["<|call|>", "<|return|>"])
    model = native.Model(str(path), vocab_only=True)
    yield model
    model.close()


def _source(path: Path) -> TemplateSource:
    return TemplateSource(jinja=path.read_text(), bos_token="<s>", eos_token="</s>")


def _the_call(path: Path) -> tuple[Any, str, str]:
    """(family, prompt, the call as the template writes it); a skip when there is none."""
    found = _call_output(path)
    family = family_of(path.read_text())
    if found is None or family is None or path.stem in UNSUPPORTED:
        pytest.skip("no tool-call family here")
    prompt, output = found
    at = output.find(family.open)
    if at < 0:  # the generation prompt opened the calls (Functionary v3.2's ">>>")
        assert prompt.endswith(family.open)
        start = at = 0
    else:
        lead_in = next((s.before.split(family.open)[0] for s in family.call_syntaxes if family.open in s.before), "")
        start = at - len(lead_in)
        assert output[start:at] == lead_in
    if family.close:
        end = output.rindex(family.close) + len(family.close)
    else:
        end = at + len(family.open) + _json_end(output[at + len(family.open):])
    return family, prompt, output[start:end]


@pytest.mark.parametrize("path", template_params())
def test_the_templates_own_call_is_what_the_forced_grammar_allows(vocab: native.Model, path: Path) -> None:
    family, prompt, call = _the_call(path)
    plan = tool_plan(_source(path), TOOLS, "required")
    assert plan.forced and plan.grammar
    assert vocab.grammar_accepts(plan.grammar, call), (family.name, call, plan.grammar[:600])
    named = tool_plan(_source(path), TOOLS, {"type": "function", "function": {"name": "get_weather"}})
    assert named.grammar is not None and vocab.grammar_accepts(named.grammar, call)
    parser = output_parser(_source(path), prompt=prompt, tools=TOOLS, think=False)
    out = parser.feed(call) + parser.finish()
    assert [(c.name, c.arguments) for c in out.tool_calls] == [("get_weather", CALL_ARGS)]
    assert out.content.strip() == ""


@pytest.mark.parametrize("path", template_params())
def test_another_tools_call_is_refused(vocab: native.Model, path: Path) -> None:
    """The grammar names the tools it was given: the same call to a tool not chosen is not let through."""
    _, _, call = _the_call(path)
    other = [{"type": "function", "function": {"name": "get_time", "parameters": TOOLS[0]["function"]["parameters"]}}]
    plan = tool_plan(_source(path), other + TOOLS, {"type": "function", "function": {"name": "get_time"}})
    assert plan.grammar is not None and not vocab.grammar_accepts(plan.grammar, call)
    assert vocab.grammar_accepts(plan.grammar, call.replace("get_weather", "get_time"))


def test_every_family_but_hermes_has_a_syntax_of_its_own() -> None:
    """Hermes's <tool_call>{json}</tool_call> is the generic JSON grammar's own form."""
    assert [f.name for f in FAMILIES if not f.forced] == ["hermes"]


def test_grammar_accepts_refuses_bad_grammars(vocab: native.Model) -> None:
    assert vocab.grammar_accepts('root ::= "a" [0-9]+', "a12")
    assert not vocab.grammar_accepts('root ::= "a" [0-9]+', "a")  # not complete
    assert not vocab.grammar_accepts('root ::= "a" [0-9]+', "a1b")
    assert vocab.grammar_accepts('root ::= "a" [0-9]+', "a1<|call|>")  # an end-of-generation token ends it
    with pytest.raises(native.GrammarError):
        vocab.grammar_accepts('root ::= ("a"', "a")


def test_minimax_m3_nested_arguments_parse_back() -> None:
    """M3 writes objects as nested elements and arrays as <item>s: the template's own rendering reads back."""
    from power.prompt import render_chat
    from tests.prompt.templates_kit import FOLDER

    path = FOLDER / "MiniMax-M3.jinja"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    args = {"city": "Paris", "filter": {"tags": ["rain", "wind"], "n": 2}, "exact": True}
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "filter": {"type": "object"}, "exact": {"type": "boolean"}}}}}]
    msgs = [{"role": "user", "content": "Find it"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "search", "arguments": args}}]}]
    text = render_chat(_source(path), msgs, tools=tools)
    family = family_of(path.read_text())
    call = text[text.rindex(family.open):text.rindex(family.close) + len(family.close)]
    parser = output_parser(_source(path), tools=tools, think=False)
    out = parser.feed(call) + parser.finish()
    assert [(c.name, c.arguments) for c in out.tool_calls] == [("search", args)], call


def test_kimi_k3_sections_split_in_any_chunking() -> None:
    """Kimi K3's thinking, response and tools sections: no tag reaches the content, however it streams."""
    from tests.prompt.templates_kit import FOLDER

    path = FOLDER / "Kimi-K3.jinja"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    text = ('Weather first.<|close|>think<|sep|><|open|>response<|sep|>Checking.<|close|>response<|sep|>'
            '<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|><|open|>argument key="city" '
            'type="string"<|sep|>Paris<|close|>argument<|sep|><|open|>argument key="days" type="number"<|sep|>3'
            '<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|><|close|>message<|sep|>')
    prompt = '<|open|>message role="assistant"<|sep|><|open|>think<|sep|>'
    for size in (1, 2, 5, 17, len(text)):
        parser = output_parser(_source(path), prompt=prompt, tools=TOOLS, think=True)
        out = parser.feed("")
        for i in range(0, len(text), size):
            out = out + parser.feed(text[i:i + size])
        out = out + parser.finish()
        assert (out.thinking, out.content) == ("Weather first.", "Checking."), size
        assert [(c.name, c.arguments) for c in out.tool_calls] == [("get_weather", CALL_ARGS)]
    other = output_parser(_source(path), prompt=prompt, tools=[{"type": "function", "function": {"name": "x"}}])
    out = other.feed(text) + other.finish()
    assert out.tool_calls == () and 'call tool="get_weather"' in out.content
