"""Apriel (``<tool_calls>[{...}]</tool_calls>``) and MiniMax-M1 (the same tag, one JSON object a line)."""

from __future__ import annotations

from power.prompt.families.family import Family
from power.prompt.families.readers import json_calls

FAMILY = Family("apriel", "<tool_calls>", "</tool_calls>", json_calls)
