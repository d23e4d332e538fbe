"""LFM2 / LFM2.5: ``<|tool_call_start|>[name(key='value', n=3)]<|tool_call_end|>`` (Python call syntax)."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, Params
from power.prompt.families.readers import pythonic

FAMILY = Family("lfm2", "<|tool_call_start|>", "<|tool_call_end|>", pythonic,
                forced=Forced("<|tool_call_start|>[", "(", ")]<|tool_call_end|>",
                              Params("", "=", "", sep=", ", quote="'", raw_excludes=("\\", "\n"))))
