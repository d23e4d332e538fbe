"""Kimi K2: ``<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{json}<|tool_call_end|>...``."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, each_call, name_then_json

FAMILY = Family("kimi", "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>",
                each_call("<|tool_call_begin|>", "<|tool_call_end|>",
                          name_then_json("<|tool_call_argument_begin|>", "functions.")),
                forced=Forced("<|tool_calls_section_begin|><|tool_call_begin|>functions.",
                              ":0<|tool_call_argument_begin|>", "<|tool_call_end|><|tool_calls_section_end|>"))
