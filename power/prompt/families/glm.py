"""GLM 4.6/4.7, Laguna, Ling, Spark: ``<tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>``."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, Params
from power.prompt.families.hermes import read

FAMILY = Family("glm", "<tool_call>", "</tool_call>", read, markers=("<tool_call>", "<arg_key>"),
                forced=Forced("<tool_call>", "\n", "</tool_call>",
                              Params("<arg_key>", "</arg_key>\n<arg_value>", "</arg_value>\n"), loose=True))
