"""Nemotron Nano v2: ``<TOOLCALL>[{"name", "arguments"}]</TOOLCALL>``."""

from __future__ import annotations

from power.prompt.families.family import Family, json_forced
from power.prompt.families.readers import json_calls

FAMILY = Family("nemotron", "<TOOLCALL>", "</TOOLCALL>", json_calls, forced=json_forced("<TOOLCALL>[", "]</TOOLCALL>"))
