"""Firefunction v2: `` functools[{"name", "arguments"}]`` to the end."""

from __future__ import annotations

from power.prompt.families.family import Family, json_forced
from power.prompt.families.readers import json_calls

FAMILY = Family("firefunction", " functools", None, json_calls, forced=json_forced(" functools[", "]"))
