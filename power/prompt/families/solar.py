"""Upstage Solar Open: ``<|tool_calls|><|tool_call:begin|>ID<|tool_call:name|>NAME<|tool_call:args|>{json}<|tool_call:end|><|calls|>``."""

from __future__ import annotations

from typing import Any

from power.prompt.families.family import CALL_ID, Family, Forced, each_call, name_then_json

_named = name_then_json("<|tool_call:args|>")


def _call(text: str) -> tuple[str, dict[str, Any]] | None:
    _, found, rest = text.partition("<|tool_call:name|>")
    return _named(rest) if found else None


FAMILY = Family("solar", "<|tool_calls|>", "<|calls|>",
                each_call("<|tool_call:begin|>", "<|tool_call:end|>", _call),
                forced=Forced(f"<|tool_calls|><|tool_call:begin|>{CALL_ID}<|tool_call:name|>", "<|tool_call:args|>",
                              "<|tool_call:end|><|calls|>"))
