"""MiniMax-M2: ``<minimax:tool_call><invoke name="N"><parameter name="K">V</parameter></invoke></minimax:tool_call>``.

MiniMax-M1 writes JSON objects, one a line, in ``<tool_calls>`` (see ``apriel``).
"""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, Params
from power.prompt.families.readers import invoke_xml

FAMILY = Family("minimax", "<minimax:tool_call>", "</minimax:tool_call>", invoke_xml(),
                forced=Forced('<minimax:tool_call>\n<invoke name="', '">\n', "</invoke>\n</minimax:tool_call>",
                              Params('<parameter name="', '">', "</parameter>\n")))
