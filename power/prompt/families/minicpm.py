"""MiniCPM 5: ``<function name="NAME"><param name="K">V</param></function>``."""

from __future__ import annotations

from power.prompt.families.family import Family, Forced, Params
from power.prompt.families.readers import Calls, Coerce, invoke_xml

_invoke = invoke_xml(param="param", invoke="function")


def _read(body: str, coerce: Coerce) -> Calls | None:
    return _invoke('<function name="' + body + "</function>", coerce)


FAMILY = Family("minicpm", '<function name="', "</function>", _read, markers=('<function name="', "<param name="),
                forced=Forced('<function name="', '">', "</function>", Params('<param name="', '">', "</param>")))
