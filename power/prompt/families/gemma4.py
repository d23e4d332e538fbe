"""Gemma 4: ``<|tool_call>call:NAME{key:<|"|>text<|"|>,n:3}<tool_call|>``, thinking in ``<|channel>thought ... <channel|>``."""

from __future__ import annotations

import json
import re
from typing import Any

from power.prompt.families.family import Family, Forced, Params, single_call
from power.prompt.families.readers import json_value

_QUOTE = '<|"|>'
_STRING = re.compile(re.escape(_QUOTE) + r"(.*?)" + re.escape(_QUOTE), re.S)
_KEY = re.compile(r"([{,]\s*)([A-Za-z_][\w\-]*)\s*:")


def _to_json(text: str) -> str:
    """Gemma's object notation as JSON: quoted strings set aside, bare keys quoted."""
    strings: list[str] = []

    def stash(m: re.Match[str]) -> str:
        strings.append(m.group(1))
        return f"\x00{len(strings) - 1}\x00"
    text = _KEY.sub(lambda m: f'{m.group(1)}"{m.group(2)}":', _STRING.sub(stash, text))
    return re.sub("\x00(\\d+)\x00", lambda m: json.dumps(strings[int(m.group(1))]), text)


def _call(text: str) -> tuple[str, dict[str, Any]] | None:
    m = re.fullmatch(r"\s*call:([\w.\-]+)(\{.*\})\s*", text, re.S)
    args = json_value(_to_json(m.group(2))) if m else None
    return (m.group(1), args) if m and isinstance(args, dict) else None



FAMILY = Family("gemma4", "<|tool_call>", "<tool_call|>", single_call(_call),
                think=("<|channel>thought", "<channel|>"),
                forced=Forced("<|tool_call>call:", "{", "}<tool_call|>", Params("", ":", "", sep=",", quote=_QUOTE)))
