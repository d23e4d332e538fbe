"""Tencent Hy3: GLM's key/value tags with an ``:opensource`` suffix, one ``<tool_call:opensource>`` a call."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, Params, each_call
from power.prompt.families.readers import arg_pairs, plain_coerce

_pairs = arg_pairs(":opensource", sep="<tool_sep:opensource>")

FAMILY = Family("hy3", "<tool_calls:opensource>", "</tool_calls:opensource>",
                each_call("<tool_call:opensource>", "</tool_call:opensource>",
                          lambda text: next(iter(_pairs(text, plain_coerce) or []), None)),
                markers=("opensource", "tool_calls"),
                forced=Forced("<tool_calls:opensource>\n<tool_call:opensource>", "<tool_sep:opensource>\n",
                              "</tool_call:opensource>\n</tool_calls:opensource>",
                              Params("<arg_key:opensource>", "</arg_key:opensource>\n<arg_value:opensource>",
                                     "</arg_value:opensource>\n")))
