"""Nemotron Nano v2: ``<TOOLCALL>[{"name", "arguments"}]</TOOLCALL>``."""

from __future__ import annotations

from power.prompt.families.family import Family
from power.prompt.families.readers import json_calls

FAMILY = Family("nemotron", "<TOOLCALL>", "</TOOLCALL>", json_calls)
