"""GigaChat 3 (``function call<|role_sep|>\n{json}``) and 3.1 (``<|function_call|>{json}``), to the end."""

from __future__ import annotations

from power.prompt.families.family import Family, json_forced
from power.prompt.families.readers import json_calls

FAMILY = Family("gigachat", "<|function_call|>", None, json_calls, forced=json_forced("<|function_call|>", ""))
V3 = Family("gigachat_v3", "function call<|role_sep|>", None, json_calls,
            markers=("function call", "<|role_sep|>"), forced=json_forced("function call<|role_sep|>\n", ""))
