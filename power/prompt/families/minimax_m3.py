"""MiniMax-M3: every tool tag behind the namespace token ``]<]minimax[>[``, a parameter's name as its tag.

``NS<tool_call>\\nNS<invoke name="N">NS<city>Paris NS</city>NS<days>3 NS</days>NS</invoke>\\nNS</tool_call>``
(without the spaces); objects nest as elements, arrays as ``NS<item>`` elements. Thinking is in
``<mm:think>``; with thinking off the answer starts after a bare ``</mm:think>``.
"""

from __future__ import annotations

import re
from typing import Any

from power.prompt.families.family import PARAM_KEY, Family, Forced, Params
from power.prompt.families.readers import Calls, Coerce, plain_coerce, xml_calls

NS = "]<]minimax[>["
_INVOKE = re.compile(r'\s*<invoke name="([^"]+)">(.*?)</invoke>\s*', re.S)
_ELEMENT = re.compile(r"<([\w.\-]+)>(.*?)</\1>", re.S)
_PARAMETER = re.compile(r"<([\w.\-]+)>()(.*?)</\1>", re.S)  # (name, no string="..." here, value)


def _value(text: str) -> Any:
    """An element's content: nested elements as an object (``item``s as an array), else the text."""
    children = _ELEMENT.findall(text)
    if not children or _ELEMENT.sub("", text).strip():
        return None if "<" in text else text
    if all(tag == "item" for tag, _ in children):
        return [plain_coerce("", "", v) if not _ELEMENT.search(v) else _value(v) for _, v in children]
    return {tag: plain_coerce("", "", v) if not _ELEMENT.search(v) else _value(v) for tag, v in children}


def read(body: str, coerce: Coerce = plain_coerce) -> Calls | None:
    def nested(tool: str, key: str, text: str) -> Any:
        return _value(text) if _ELEMENT.search(text) else coerce(tool, key, text)
    return xml_calls(_INVOKE, _PARAMETER, body.replace(NS, ""), nested)


FAMILY = Family("minimax_m3", NS + "<tool_call>", NS + "</tool_call>", read, markers=(NS, "<tool_call>"),
                think=("<mm:think>", "</mm:think>"),
                forced=Forced(f'{NS}<tool_call>\n{NS}<invoke name="', '">', f"{NS}</invoke>\n{NS}</tool_call>",
                              Params(NS + "<", ">", f"{NS}</{PARAM_KEY}>", raw_excludes=(NS,))))
