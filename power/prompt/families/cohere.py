"""Command R7B / Command A (``<|START_ACTION|>[{"tool_name", "parameters"}]<|END_ACTION|>``) and Command R+
(``Action: ```json [...] `````, to the end of the turn)."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, json_forced
from power.prompt.families.readers import json_calls

FAMILY = Family("cohere", "<|START_ACTION|>", "<|END_ACTION|>", json_calls,
                think=("<|START_THINKING|>", "<|END_THINKING|>"),
                forced=json_forced("<|START_ACTION|>[\n    ", "\n]<|END_ACTION|>", name="tool_name",
                                   args="parameters", extra='"tool_call_id": "0", '))
COMMAND_R_PLUS = Family("command_r_plus", "Action:", None, json_calls,
                        markers=("Action:", "tool_name", "parameter_definitions"),
                        forced=Forced('Action:\n```json\n[\n    {\n        "tool_name": "',
                                      '",\n        "parameters": ', "\n    }\n]```", name_json=True))
