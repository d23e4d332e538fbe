"""Granite 3.x: ``<|tool_call|>[{"name", "arguments"}]`` to the end; thinking in ``<think>``, answer in
``<response>``. (Granite 4 uses Hermes's ``<tool_call>``.)"""

from __future__ import annotations

from power.prompt.families.family import Family, json_forced
from power.prompt.families.readers import json_calls

FAMILY = Family("granite", "<|tool_call|>", None, json_calls, forced=json_forced("<|tool_call|>[", "]"))
