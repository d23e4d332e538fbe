"""Apriel (``<tool_calls>[{...}]</tool_calls>``) and MiniMax-M1 (the same tag, one JSON object a line)."""

from __future__ import annotations

from power.prompt.families.family import CALL_ID, Family, Forced, json_forced
from power.prompt.families.readers import json_calls

FAMILY = Family("apriel", "<tool_calls>", "</tool_calls>", json_calls,
                forced=(Forced('<tool_calls>[{"name": "', '", "arguments": ', f', "id": "{CALL_ID}"}}]</tool_calls>',
                               name_json=True),
                        json_forced("<tool_calls>\n", "\n</tool_calls>")))  # MiniMax-M1
