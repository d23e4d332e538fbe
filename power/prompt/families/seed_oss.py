"""ByteDance Seed-OSS: ``<seed:tool_call><function=NAME>...</seed:tool_call>``, thinking in ``<seed:think>``."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, Params
from power.prompt.families.readers import xml_function

FAMILY = Family("seed_oss", "<seed:tool_call>", "</seed:tool_call>", xml_function,
                think=("<seed:think>", "</seed:think>"),
                forced=Forced("<seed:tool_call>\n<function=", ">\n", "</function>\n</seed:tool_call>",
                              Params("<parameter=", ">", "</parameter>\n")))
