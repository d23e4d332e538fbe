"""ByteDance Seed-OSS: ``<seed:tool_call><function=NAME>...</seed:tool_call>``, thinking in ``<seed:think>``."""

from __future__ import annotations

from power.prompt.families.family import Family
from power.prompt.families.readers import xml_function

FAMILY = Family("seed_oss", "<seed:tool_call>", "</seed:tool_call>", xml_function,
                think=("<seed:think>", "</seed:think>"))
