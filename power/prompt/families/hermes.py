"""Hermes / Qwen 2.5-3 / Granite 4 / Bielik / MiMo: ``<tool_call>{"name", "arguments"}</tool_call>``.

Qwen3-Coder's and GLM's bodies share the tag, so the one family reads all three
bodies (see ``qwen3_coder`` and ``glm``).
"""

from __future__ import annotations

from power.prompt.families.family import Family
from power.prompt.families.readers import Calls, Coerce, arg_pairs, json_calls, xml_function

_glm = arg_pairs()


def read(body: str, coerce: Coerce) -> Calls | None:
    return json_calls(body, coerce) or xml_function(body, coerce) or _glm(body, coerce)


FAMILY = Family("hermes", "<tool_call>", "</tool_call>", read)
