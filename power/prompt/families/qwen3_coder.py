"""Qwen3-Coder, Qwen3.5, Nemotron 3, StepFun: ``<tool_call><function=NAME><parameter=K>V</parameter></function></tool_call>``."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, Params
from power.prompt.families.hermes import read

FAMILY = Family("qwen3_coder", "<tool_call>", "</tool_call>", read, markers=("<tool_call>", "<function="),
                forced=Forced("<tool_call>\n<function=", ">\n", "</function>\n</tool_call>",
                              Params("<parameter=", ">\n", "\n</parameter>\n")))
