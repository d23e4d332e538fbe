"""Muse Glimmer: ``<atem:function_calls><atem:invoke name="N"><atem:parameter name="K">V</atem:parameter>...``."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, Params
from power.prompt.families.readers import invoke_xml

FAMILY = Family("muse", "<atem:function_calls>", "</atem:function_calls>", invoke_xml("atem:"),
                forced=Forced('<atem:function_calls>\n<atem:invoke name="', '">\n',
                              "</atem:invoke>\n</atem:function_calls>",
                              Params('<atem:parameter name="', '">', "</atem:parameter>\n")))
