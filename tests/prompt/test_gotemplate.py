"""The Go template interpreter: syntax, semantics, functions and limits."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from power.errors import TemplateError
from power.prompt.go import GoTemplate
from power.prompt.limits import Limits


def render(src: str, data: dict | None = None, **kw: object) -> str:
    return GoTemplate(src).render(data if data is not None else {}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("src, data, want", [
    ("hello {{ .Name }}", {"Name": "go"}, "hello go"),
    ("a {{- \" b \" -}} c", {}, "a b c"),
    ("a  \n {{- .X }}  \n b", {"X": 1}, "a1  \n b"),
    ("{{ .X -}} \n\t y", {"X": "x"}, "xy"),
    ("a {{/* note */}} b", {}, "a  b"),
    ("a {{- /* note */ -}} b", {}, "ab"),
    ("{{ .Missing }}|{{ .A.B.C }}", {"A": {}}, "|"),
    ("{{ if .X }}yes{{ else if .Y }}maybe{{ else }}no{{ end }}", {"Y": 1}, "maybe"),
    ("{{ if .X }}yes{{ else }}no{{ end }}", {"X": []}, "no"),
    ("{{ range .L }}[{{ . }}]{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("{{ range $i, $v := .L }}{{ $i }}={{ $v }} {{ end }}", {"L": ["a", "b"]}, "0=a 1=b "),
    ("{{ range $v := .L }}{{ $v }}{{ end }}", {"L": ["a", "b"]}, "ab"),
    ("{{ range $k, $v := .M }}{{ $k }}:{{ $v }};{{ end }}", {"M": {"x": 1, "y": 2}}, "x:1;y:2;"),
    ("{{ range 3 }}{{ . }}{{ end }}", {}, "012"),
    ("{{ range .L }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}", {"L": [1, 2, 3]}, "1"),
    ("{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ . }}{{ end }}", {"L": [1, 2, 3]}, "13"),
    ("{{ with .U }}{{ .Name }}{{ else }}none{{ end }}", {"U": {"Name": "ann"}}, "ann"),
    ("{{ with .U }}x{{ else with .V }}{{ . }}{{ else }}z{{ end }}", {"V": "v"}, "v"),
    ("{{ $x := 1 }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}", {"L": [5, 6]}, "6"),
    ("{{ $.Top }}{{ with .In }}{{ $.Top }}{{ .V }}{{ end }}", {"Top": "T", "In": {"V": 1}}, "TT1"),
    ("{{ .S | printf \"%s!\" }}", {"S": "hi"}, "hi!"),
    ("{{ (index .L 1).Name }}", {"L": [{"Name": "a"}, {"Name": "b"}]}, "b"),
    ("{{ index .M \"k\" }}{{ index .L 0 }}", {"M": {"k": "v"}, "L": [7]}, "v7"),
    ("{{ slice .S 1 3 }}|{{ slice .L 1 }}", {"S": "hello", "L": [1, 2, 3]}, "el|[2 3]"),
    ("{{ len .L }}{{ len .S }}{{ len .M }}", {"L": [1], "S": "ab", "M": {}}, "120"),
    ("{{ and 1 0 }}|{{ and 1 2 }}|{{ or 0 \"\" }}|{{ or 0 3 }}|{{ not 0 }}", {}, "0|2||3|true"),
    ("{{ eq 1 2 3 1 }}{{ ne \"a\" \"b\" }}{{ lt 1 2 }}{{ le 2 2 }}{{ gt 1 2 }}{{ ge \"b\" \"a\" }}",
     {}, "truetruetruetruefalsetrue"),
    ("{{ printf \"%05d|%-4s|%q|%.2f|%v|%t|%x|%%\" 42 \"ab\" \"q\" 3.14159 .L true 255 }}",
     {"L": [1, 2]}, '00042|ab  |"q"|3.14|[1 2]|true|ff|%'),
    ("{{ print 1 2 \"a\" \"b\" 3 }}|{{ println \"x\" 1 }}", {}, "1 2ab3|x 1\n"),
    ("{{ html \"<a href='x'>&\" }}|{{ js \"it's <b>\" }}", {},
     "&lt;a href=&#39;x&#39;&gt;&amp;|it\\'s \\u003Cb\\u003E"),
    ("{{ json .V }}", {"V": {"a": "<x>", "b": [1, True, None]}},
     '{"a":"\\u003cx\\u003e","b":[1,true,null]}'),
    ("{{ .V }}|{{ .L }}|{{ 1.5 }}|{{ 2.0 }}|{{ true }}|{{ nil }}", {"V": {"k": 1}, "L": [{"a": 1}]},
     '{"k":1}|[{"a":1}]|1.5|2|true|'),
    ("{{ 'a' }} {{ 0x1F }} {{ 1_000 }} {{ -3 }} {{ `raw\\n` }}", {}, "97 31 1000 -3 raw\\n"),
    ("{{ \"tab\\there\" }}", {}, "tab\there"),
    ("{{ .Function.Name }}:{{ .Function.Parameters.Type }}",
     {"Function": {"name": "f", "parameters": {"type": "object"}}}, "f:object"),
    ("{{ .ToolCallID }}", {"tool_call_id": "c1"}, "c1"),
    ('{{define "x"}}<{{ . }}>{{end}}{{ template "x" .V }}{{ block "y" 2 }}[{{ . }}]{{ end }}',
     {"V": 1}, "<1>[2]"),
])
def test_render(src: str, data: dict, want: str) -> None:
    assert render(src, data) == want


def test_dates_and_typescript() -> None:
    today = dt.date.today()
    assert render("{{ currentDate }}") == today.isoformat()
    assert render("{{ yesterdayDate }}") == (today - dt.timedelta(days=1)).isoformat()
    prop = {"P": {"type": "string", "enum": ["c", "f"]}, "A": {"type": "array", "items": {"type": "integer"}},
            "U": {"anyOf": [{"type": "string"}, {"type": "null"}]}}
    out = render("{{ toTypeScriptType .P }}|{{ toTypeScriptType .A }}|{{ toTypeScriptType .U }}", prop)
    assert out == '"c" | "f"|number[]|string | null'


def test_vars_lists_every_field() -> None:
    t = GoTemplate("{{ if .Tools }}{{ range .Messages }}{{ .Content }}{{ end }}{{ end }}{{ (.X).Y }}")
    assert {"Tools", "Messages", "Content", "X", "Y"} <= t.vars


def test_cut_at_response_stops_rendering() -> None:
    t = GoTemplate("{{ if not .Response }}A{{ end }}[{{ .Prompt }}] {{ .Response }}</s>")
    assert t.render({"Prompt": "p", "Response": ""}, cut_at_response=True) == "A[p] "


@pytest.mark.parametrize("src", [
    "{{ .X", "{{ if .X }}no end", "{{ end }}", "{{ else }}", "{{ range }}{{ end }}",
    "{{ nosuchfunc 1 }}", "{{ $undefined }}", "{{ break }}", "{{ (1 }}", "{{ 1 2 }}",
    "{{ .X | 3 }}", "{{/* unclosed", "{{ \"unterminated }}", "{{ template \"nope\" }}",
    "{{ index .L 5 }}", "{{ slice .S 3 1 }}", "{{ lt 1 \"a\" }}", "{{ len 3 }}",
    "{{ printf \"%0999999d\" 1 }}", "{{ .S.Field }}", "{{ range .S }}{{ end }}",
    "{{ eq .L .L }}", "{{ $x = 1 }}", "{{ if 1 }}{{ else }}{{ else }}{{ end }}",
])
def test_errors_are_template_errors(src: str) -> None:
    with pytest.raises(TemplateError):
        render(src, {"L": [1], "S": "str"})


def test_error_names_the_line() -> None:
    with pytest.raises(TemplateError, match="line 3"):
        GoTemplate("a\nb\n{{ if }}")


def test_recursion_forever_is_stopped_quickly() -> None:
    start = time.monotonic()
    with pytest.raises(TemplateError):
        render('{{ define "loop" }}{{ template "loop" . }}{{ end }}{{ template "loop" . }}')
    assert time.monotonic() - start < 2


def test_huge_loop_is_stopped_quickly() -> None:
    start = time.monotonic()
    with pytest.raises(TemplateError, match="steps|longer"):
        render("{{ range 1000000000 }}{{ end }}")
    assert time.monotonic() - start < 5


def test_output_explosion_is_stopped() -> None:
    limits = Limits(max_output=10_000)
    src = ('{{ define "d" }}{{ . }}{{ . }}{{ end }}'
           '{{ range 100 }}{{ range 100 }}{{ range 100 }}xxxxxxxxxx{{ end }}{{ end }}{{ end }}')
    with pytest.raises(TemplateError, match="output"):
        GoTemplate(src, limits).render({})


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(TemplateError, match="deep"):
        GoTemplate("{{ if 1 }}" * 500 + "{{ end }}" * 500)
    with pytest.raises(TemplateError):
        GoTemplate("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")


def test_oversized_source_is_refused() -> None:
    with pytest.raises(TemplateError, match="longer"):
        GoTemplate("x" * 100, Limits(max_source=10))
