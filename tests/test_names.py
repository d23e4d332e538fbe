from __future__ import annotations

import pytest

from power.errors import InvalidName
from power.names import ModelName, is_valid_name, parse_name


@pytest.mark.parametrize("text,parts", [
    ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest")),
    ("llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b")),
    ("user/model:v1.0", ("registry.ollama.ai", "user", "model", "v1.0")),
    ("example.com/ns/m", ("example.com", "ns", "m", "latest")),
    ("localhost:5000/ns/m", ("localhost:5000", "ns", "m", "latest")),
    ("localhost:5000/ns/m:tag", ("localhost:5000", "ns", "m", "tag")),
    ("https://example.com/ns/m:t", ("example.com", "ns", "m", "t")),
    ("_x/y_-z:Q4_K_M", ("registry.ollama.ai", "_x", "y_-z", "Q4_K_M")),
])
def test_parse_fills_defaults(text: str, parts: tuple[str, ...]) -> None:
    assert parse_name(text).parts == parts


def test_scheme_kept_but_not_compared() -> None:
    plain = parse_name("http://example.com/ns/m")
    assert plain.scheme == "http"
    assert plain == parse_name("example.com/ns/m")


@pytest.mark.parametrize("bad", [
    "", ":", "model:", ":tag", "ns/", "/model", "a//b", "../etc/passwd", "..", ".hidden",
    "-model", "mo del", "model\x00", "a/b/c/d", "ns.dot/model", "model@sha256:" + "0" * 64,
    "m" * 81, "model:" + "t" * 81, "h" * 351 + "/ns/m", "ftp://host/ns/m", "model:t:t",
    "na:me/model", "mödel", "model/", "C:\\models\\x", "a\\b",
])
def test_invalid_names_refused(bad: str) -> None:
    with pytest.raises(InvalidName, match="invalid model name"):
        parse_name(bad)
    assert not is_valid_name(bad)


def test_length_limits_are_inclusive() -> None:
    assert parse_name("m" * 80 + ":" + "t" * 80).model == "m" * 80
    assert parse_name("h" * 350 + "/ns/m").host == "h" * 350


def test_display_shortest_form() -> None:
    assert parse_name("llama3").display() == "llama3:latest"
    assert parse_name("user/m:1").display() == "user/m:1"
    assert parse_name("Registry.Ollama.AI/Library/m").display() == "m:latest"
    assert parse_name("example.com/library/m").display() == "example.com/library/m:latest"
    assert str(parse_name("m:t")) == "m:t"


def test_case_insensitive_identity() -> None:
    a, b = parse_name("Llama3:Latest"), parse_name("llama3")
    assert a != b and a.matches(b) and a.key() == b.key()


def test_manifest_relpath_is_four_levels() -> None:
    assert parse_name("ns/m:t").manifest_relpath().parts == ("registry.ollama.ai", "ns", "m", "t")


def test_constructor_validates_parts() -> None:
    with pytest.raises(InvalidName):
        ModelName("registry.ollama.ai", "library", "..", "latest")
    with pytest.raises(InvalidName):
        ModelName("registry.ollama.ai", "lib/rary", "m", "latest")
