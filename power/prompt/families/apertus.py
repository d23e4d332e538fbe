"""Apertus: ``<|tools_prefix|>[{"NAME": {arguments}}]<|tools_suffix|>``."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced
from power.prompt.families.readers import named_json

FAMILY = Family("apertus", "<|tools_prefix|>", "<|tools_suffix|>", named_json,
                forced=Forced('<|tools_prefix|>[{"', '": ', "}]<|tools_suffix|>", name_json=True))
