"""The real chat templates of the pinned llama.cpp, and the conversation the tests render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

FOLDER = Path(__file__).resolve().parents[2] / "vendor" / "llama.cpp" / "models" / "templates"
TEMPLATES = sorted(FOLDER.glob("*.jinja")) if FOLDER.is_dir() else []


def template_params() -> list[Any]:
    """One pytest param per template in the folder; one skipped param when it is absent."""
    if not TEMPLATES:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{FOLDER} is absent"))]
    return [pytest.param(p, id=p.stem) for p in TEMPLATES]


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city"},
        "days": {"type": "integer", "description": "How many days"}},
        "required": ["city"]}}}]
CALL_ARGS = {"city": "Paris", "days": 3}


def conversation(*, images: bool = True) -> list[dict[str, Any]]:
    """System, user (with an image), assistant tool call, its result, assistant follow-up."""
    user: dict[str, Any] = {"role": "user", "content": "What is the weather in Paris?"}
    if images:
        user["images"] = ["aGVsbG8="]
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        user,
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": dict(CALL_ARGS)}}]},
        {"role": "tool", "content": "sunny, 22 C", "tool_name": "get_weather"},
        {"role": "assistant", "content": "It is sunny in Paris."},
    ]
