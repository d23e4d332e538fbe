from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power.errors import ModelfileError
from power.store.modelfile import Command, format_modelfile, parse_modelfile

FULL = '''\ufeff# a comment
FROM llama3.2
from ./adapter-base.gguf
PARAMETER temperature 0.7
parameter num_ctx 4096
PARAMETER stop "<|start_header_id|>"
PARAMETER stop <|eot_id|>
PARAMETER use_mmap false
PARAMETER Top_P .9
TEMPLATE """{{ if .System }}<|system|>
{{ .System }}{{ end }}"""
System "You are \\"Mario\\"."
ADAPTER ./lora.gguf
LICENSE """MIT
text"""
LICENSE Apache-2.0
MESSAGE user Is Toronto in Canada?
MESSAGE assistant "yes"
REQUIRES 0.6.0
DRAFT ./draft.gguf
RENDERER qwen3
PARSER qwen3
'''


def test_every_instruction() -> None:
    mf = parse_modelfile(FULL)
    assert [c.name for c in mf.froms] == ["from", "from"]
    assert mf.froms[0].args == "llama3.2" and mf.froms[0].line == 2
    assert mf.parameters == {"temperature": 0.7, "num_ctx": 4096, "use_mmap": False, "top_p": 0.9,
                             "stop": ["<|start_header_id|>", "<|eot_id|>"]}
    assert mf.last("template") == "{{ if .System }}<|system|>\n{{ .System }}{{ end }}"
    assert mf.last("system") == 'You are "Mario".'
    assert mf.values("adapter") == ["./lora.gguf"]
    assert mf.values("license") == ["MIT\ntext", "Apache-2.0"]
    assert mf.messages == [{"role": "user", "content": "Is Toronto in Canada?"},
                           {"role": "assistant", "content": "yes"}]
    assert mf.last("requires") == "0.6.0" and mf.last("draft") == "./draft.gguf"
    assert mf.last("renderer") == "qwen3" and mf.last("parser") == "qwen3"


def test_crlf_blank_lines_and_indented_comments() -> None:
    mf = parse_modelfile("\r\n   # note\r\nFROM m\r\n\r\n  SYSTEM   hi there  \r\n")
    assert mf.last("system") == "hi there"


def test_triple_quote_on_one_line_and_multi_line_quote() -> None:
    mf = parse_modelfile('FROM m\nSYSTEM """one"""\nTEMPLATE "a\nb"\n')
    assert mf.last("system") == "one" and mf.last("template") == "a\nb"


@pytest.mark.parametrize("text,match", [
    ("SYSTEM hi\n", "no FROM line"),
    ("", "no FROM line"),
    ("FROM m\nFOO bar\n", r"\(line 2\): command must be one of"),
    ("FROM m\nSYSTEM \"\"\"abc\nmore\n", r'\(line 2\): unexpected EOF: unterminated """'),
    ("FROM m\n\nSYSTEM \"abc\n", r"\(line 3\): unexpected EOF"),
    ("FROM m\nPARAMETER foo 1\n", r"\(line 2\): unknown parameter 'foo'"),
    ("FROM m\nPARAMETER num_ctx big\n", r"\(line 2\): invalid int value \[big\]"),
    ("FROM m\nPARAMETER temperature nan\n", r"\(line 2\): invalid float value"),
    ("FROM m\nPARAMETER use_mmap maybe\n", r"invalid bool value"),
    ("FROM m\nPARAMETER num_ctx\n", r"\(line 2\): missing value"),
    ("FROM m\nPARAMETER\n", r"\(line 2\): missing name"),
    ("FROM\n", r"\(line 1\): missing value for FROM"),
    ("FROM m\nMESSAGE robot hi\n", r"\(line 2\): message role must be one of"),
    ("FROM m\nSYSTEM \"a\" trailing\n", r"\(line 2\): unexpected text after closing quote"),
])
def test_errors_name_the_line(text: str, match: str) -> None:
    with pytest.raises(ModelfileError, match=match):
        parse_modelfile(text)


def test_bytes_input_must_be_utf8() -> None:
    with pytest.raises(ModelfileError, match="UTF-8"):
        parse_modelfile(b"FROM \xff\n")
    assert parse_modelfile(b"FROM m\n").froms[0].args == "m"


@pytest.mark.parametrize("value", [
    "plain", " leading", "trailing ", "multi\nline", 'has "quotes" inside', 'ends with "q"',
    'has """ triple', "", "back\\slash", "  ", " \n", "a \n b ", " ends\\", '"a" \\', '"starts quoted',
])
def test_writer_round_trips(value: str) -> None:
    cmds = [Command("from", "/blobs/sha256-x"), Command("system", value),
            Command("parameter", value or "x", "stop"), Command("message", value, "user")]
    text = format_modelfile(cmds)
    mf = parse_modelfile(text)
    assert mf.last("system") == value
    assert mf.parameters["stop"] == [value or "x"]
    assert mf.messages == [{"role": "user", "content": value}]


def test_writer_format_matches_ollama() -> None:
    text = format_modelfile([Command("from", "/b/sha256-1"), Command("template", "{{ .Prompt }}"),
                             Command("parameter", "<|eot_id|>", "stop"),
                             Command("system", "two\nlines")])
    assert text == 'FROM /b/sha256-1\nTEMPLATE {{ .Prompt }}\nPARAMETER stop <|eot_id|>\nSYSTEM "two\nlines"\n'


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('FROMPARAMETERSYSTEMtemplatestop "#\n\\x0.:')) | st.characters(),
               max_size=200))
def test_fuzz_parser_raises_only_modelfile_error(text: str) -> None:
    try:
        parse_modelfile(text)
    except ModelfileError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80).filter(lambda s: "\r" not in s and not ('"""' in s and s.endswith("\\"))))
def test_fuzz_writer_round_trip(value: str) -> None:
    text = format_modelfile([Command("from", "m"), Command("system", value)])
    try:
        mf = parse_modelfile(text)
    except ModelfileError:
        pytest.fail(f"writer produced an unparsable value for {value!r}")
    assert mf.last("system") == value
