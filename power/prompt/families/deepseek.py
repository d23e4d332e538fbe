"""DeepSeek V3.1 and R1 (``<｜tool▁calls▁begin｜>``), V3.2 (DSML ``function_calls``) and V4 (DSML ``tool_calls``).

V3.1: ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{json}<｜tool▁call▁end｜>``; R1:
``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{json}\n```<｜tool▁call▁end｜>``.
"""

from __future__ import annotations

from typing import Any

from power.prompt.families.family import Family, Forced, Params, each_call
from power.prompt.families.readers import invoke_xml, json_value

_SEP = "<｜tool▁sep｜>"


def _call(text: str) -> tuple[str, dict[str, Any]] | None:
    head, found, rest = text.partition(_SEP)
    if not found:
        return None
    if head.strip() == "function":  # R1: the name, a newline, then fenced JSON
        name, _, rest = rest.partition("\n")
    else:
        name = head
    args = json_value(rest)
    return (name.strip(), args) if name.strip() and isinstance(args, dict) else None


FAMILY = Family("deepseek", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
                each_call("<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", _call),
                forced=(Forced("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>", _SEP, "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
                        Forced("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function" + _SEP, "\n```json\n",  # R1
                               "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>")))


def _dsml(section: str) -> Forced:
    return Forced(f"<｜DSML｜{section}>\n<｜DSML｜invoke name=\"", "\">\n", f"</｜DSML｜invoke>\n</｜DSML｜{section}>",
                  Params('<｜DSML｜parameter name="', '" string="true">', "</｜DSML｜parameter>\n",
                         json_value='" string="false">'))


DSML = Family("deepseek_dsml", "<｜DSML｜function_calls>", "</｜DSML｜function_calls>",
              invoke_xml("｜DSML｜"), markers=("｜DSML｜", "function_calls"), forced=_dsml("function_calls"))
DSML_V4 = Family("deepseek_v4", "<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>", invoke_xml("｜DSML｜"),
                 markers=("｜DSML｜", "tool_calls"), forced=_dsml("tool_calls"))
