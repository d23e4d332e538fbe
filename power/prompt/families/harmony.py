"""gpt-oss (harmony): ``<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{json}<|call|>``.

The recipient may also stand before the channel (``to=functions.NAME<|channel|>commentary json``);
thinking is the ``analysis`` channel, up to ``<|end|>``.
"""

from __future__ import annotations

import re
from typing import Any

from power.prompt.families.family import Family, single_call
from power.prompt.families.readers import json_value


def _call(text: str) -> tuple[str, dict[str, Any]] | None:
    m = re.fullmatch(r"([\w.\-]+)[^<]*(?:<\|(?:channel|constrain)\|>[^<]*)*<\|message\|>(.*)", text, re.S)
    args = json_value(m.group(2)) if m else None
    return (m.group(1), args) if m and isinstance(args, dict) else None


FAMILY = Family("harmony", "to=functions.", "<|call|>",
                single_call(_call), forced=("to=functions.", "<|channel|>commentary json<|message|>", "<|call|>"),
                markers=("<|channel|>", "functions."),
                think=("<|channel|>analysis<|message|>", "<|end|>"))
