"""Command R7B / Command A (``<|START_ACTION|>[{"tool_name", "parameters"}]<|END_ACTION|>``) and Command R+
(``Action: ```json [...] `````, to the end of the turn)."""

from __future__ import annotations

from power.prompt.families.family import Family
from power.prompt.families.readers import json_calls

FAMILY = Family("cohere", "<|START_ACTION|>", "<|END_ACTION|>", json_calls,
                think=("<|START_THINKING|>", "<|END_THINKING|>"))
COMMAND_R_PLUS = Family("command_r_plus", "Action:", None, json_calls,
                        markers=("Action:", "tool_name", "parameter_definitions"))
