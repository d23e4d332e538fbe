"""Functionary v3.1 (``<function=NAME>{json}</function>``) and v3.2 (``>>>NAME\n{json}``, ``>>>all`` for text)."""

from __future__ import annotations

import re
from typing import Any

from power.prompt.families.family import Family, Forced
from power.prompt.families.readers import Calls, Coerce, json_value


def _v31(body: str, coerce: Coerce) -> Calls | None:
    name, found, rest = body.partition(">")
    args = json_value(rest) if found else None
    return [(name.strip(), args)] if re.fullmatch(r"[\w.\-]+", name.strip()) and isinstance(args, dict) else None


def _v32(body: str, coerce: Coerce) -> Calls | None:
    out: Calls = []
    for part in body.split(">>>"):
        name, _, rest = part.partition("\n")
        args: Any = json_value(rest)
        if name.strip() == "all" or not isinstance(args, dict):
            return None
        out.append((name.strip(), args))
    return out or None


V3_1 = Family("functionary_v3_1", "<function=", "</function>", _v31,
              markers=("<function=", "</function>", "<|eom_id|>"), forced=Forced("<function=", ">", "</function>"))
# The generation prompt ends with ">>>": a forced call starts at the name.
FAMILY = Family("functionary", ">>>", None, _v32, markers=(">>>", "recipient"), forced=Forced("", "\n", ""))
