"""Image paths in `run` prompts: which are taken, which stay text."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from power.cli.images import extract_images


@pytest.fixture
def pics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("a.png", "b.JPG", "with space.webp", "c.jpeg"):
        (tmp_path / name).write_bytes(name.encode())
    return tmp_path


def decoded(images: list[str]) -> list[bytes]:
    return [base64.b64decode(i) for i in images]


def test_paths_of_every_form_are_taken_in_order(pics: Path) -> None:
    err = io.StringIO()
    prompt = f"compare ./a.png with {pics}/b.JPG and {pics}/with\\ space.webp and '~/c.jpeg' please"
    text, images = extract_images(prompt, err=err)
    assert text == "compare with and and please"
    assert decoded(images) == [b"a.png", b"b.JPG", b"with space.webp", b"c.jpeg"]
    assert err.getvalue().count("Added image") == 4


@pytest.mark.parametrize("prompt", [
    "what is ./missing.png?",      # no such file
    "read ./a.pngx now",           # not an image extension
    "plain words, a.png is not a path",
    "see ./Modelfile",
])
def test_what_stays_text(pics: Path, prompt: str) -> None:
    assert extract_images(prompt) == (prompt, [])


def test_newlines_of_a_multiline_prompt_survive(pics: Path) -> None:
    text, images = extract_images("first line\n./a.png  second line\nthird")
    assert text == "first line\n second line\nthird" and len(images) == 1


def test_a_directory_named_like_an_image_is_not_read(pics: Path) -> None:
    (pics / "dir.png").mkdir()
    assert extract_images("look ./dir.png") == ("look ./dir.png", [])
