"""String ``format`` values as ECMAScript patterns, which ``gbnf_regex`` turns into grammar.

Exact: ``date``, ``time``, ``date-time`` (RFC 3339, month lengths and leap
years included), ``uuid`` and ``ipv4``. As common subsets, so every string
written is valid but not every valid one can be written: ``hostname``,
``email`` and ``uri`` (no IP literals, quoted local parts, international names,
or hostnames of more than four labels). Narrower still, never so far that
nothing valid is left: a leap second is written only as ``23:59:60`` in UTC.

Not enforced (the grammar is wider than the schema): other formats, and the
64-character limit of an email's local part.
"""

from __future__ import annotations

__all__ = ["FORMATS"]

# date and time follow RFC 3339 to the day of the month; a leap second is valid only at 23:59:60 UTC,
# and written only where the offset makes that plain (Z or 00:00).
_DATE = (r"(\d{4}-(0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|\d{4}-(0[469]|11)-(0[1-9]|[12]\d|30)"
         r"|\d{4}-02-(0[1-9]|1\d|2[0-8])|(\d\d(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)-02-29)")
_TIME = (r"(([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)"
         r"|23:59:60(\.\d+)?([Zz]|[+-]00:00))")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"({_LABEL}\.){{0,3}}[A-Za-z0-9]([A-Za-z0-9-]{{0,59}}[A-Za-z0-9])?"  # at most 253 characters
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PCHAR = r"([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
_REG_NAME = r"([A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*"
FORMATS: dict[str, str] = {
    "date": rf"^{_DATE}$",
    "time": rf"^{_TIME}$",
    "date-time": rf"^{_DATE}[Tt]{_TIME}$",
    "uuid": r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",
    "ipv4": rf"^({_OCTET}\.){{3}}{_OCTET}$",
    "hostname": rf"^{_HOST}$",
    "email": rf"^{_ATOM}(\.{_ATOM})*@{_HOST}$",
    "uri": (rf"^[A-Za-z][A-Za-z0-9+.-]*:(//(([A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{{2}})*@)?{_REG_NAME}"
            rf"(:\d*)?(/{_PCHAR}*)*|/?({_PCHAR}+(/{_PCHAR}*)*)?)(\?({_PCHAR}|[/?])*)?(#({_PCHAR}|[/?])*)?$"),
}
