"""Text the CLI prints, formatted exactly as Ollama's: sizes, ages, durations, tables.

Everything here is pure (no I/O) so the formats can be tested line by line.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "human_bytes", "human_number", "human_duration", "human_time", "go_duration", "parse_time",
    "table", "processor", "until", "list_rows", "ps_rows", "metrics_summary", "WordWrap",
]

_UNITS = ((1000**4, "TB"), (1000**3, "GB"), (1000**2, "MB"), (1000, "KB"))


def human_bytes(size: int | float) -> str:
    """Decimal sizes the way Ollama prints them: ``4.7 GB``, ``12 MB``, ``800 B``."""
    size = int(size)
    for scale, unit in _UNITS:
        if size >= scale:
            value = size / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def human_number(n: int | float) -> str:
    """Parameter counts: ``8B``, ``3.2B``, ``137.00M`` → ``137M``, ``25K``."""
    n = int(n)
    if n >= 1_000_000_000:
        v = n / 1e9
        return f"{v:.0f}B" if v == math.floor(v) else f"{v:.1f}B"
    if n >= 1_000_000:
        v = n / 1e6
        return f"{v:.0f}M" if v == math.floor(v) else f"{v:.2f}M"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)


def human_duration(seconds: float) -> str:
    """Ollama's coarse durations: ``Less than a second``, ``About a minute``, ``2 weeks``."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds // 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(round(seconds / 3600))
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600 / 24 / 365)} years"


def parse_time(text: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp with up to nanoseconds; None when absent or unreadable."""
    if not text:
        return None
    t = text.strip()
    if "." in t:
        head, _, rest = t.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        t = head + "." + rest[:min(digits, 6)].ljust(6, "0") + rest[digits:]
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def human_time(when: datetime | None, zero: str = "Never", now: datetime | None = None) -> str:
    """``2 weeks ago``, ``4 minutes from now``, ``Forever`` beyond 20 years ahead."""
    if when is None or when.year <= 1:
        return zero
    now = now or datetime.now(timezone.utc)
    delta = (now - when).total_seconds()
    if delta / 3600 / 24 / 365 < -20:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def _frac(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    if not rest:
        return str(whole)
    width = len(str(unit)) - 1
    return f"{whole}.{rest:0{width}d}".rstrip("0")


def go_duration(nanos: int) -> str:
    """Format nanoseconds as Go's ``time.Duration.String`` does (``1.5s``, ``1m2.25s``, ``340µs``)."""
    nanos = int(nanos)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    if n < 1000:
        return f"{sign}{n}ns"
    if n < 1_000_000:
        return f"{sign}{_frac(n, 1000)}µs"
    if n < 1_000_000_000:
        return f"{sign}{_frac(n, 1_000_000)}ms"
    hours, rem = divmod(n, 3600 * 1_000_000_000)
    minutes, rem = divmod(rem, 60 * 1_000_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _frac(rem, 1_000_000_000) + "s"


def table(header: Sequence[str] | None, rows: Iterable[Sequence[str]], *, pad: str = "    ") -> str:
    """A borderless, left-aligned table with ``pad`` between columns (Ollama's tablewriter setup)."""
    data = [list(header)] if header else []
    data += [list(r) for r in rows]
    if not data:
        return ""
    ncols = max(len(r) for r in data)
    widths = [max((len(r[i]) if i < len(r) else 0) for r in data) for i in range(ncols)]
    lines = []
    for r in data:
        cells = []
        for i in range(ncols):
            cell = r[i] if i < len(r) else ""
            cells.append(cell.ljust(widths[i]) if i < ncols - 1 else cell)
            if i < ncols - 1 and widths[i]:
                cells[-1] += pad
        lines.append("".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def processor(size: int, size_vram: int) -> str:
    """The PROCESSOR column of ``ps``."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def until(expires: datetime | None, now: datetime | None = None) -> str:
    """The UNTIL column of ``ps``: ``Stopping...`` once expired."""
    now = now or datetime.now(timezone.utc)
    if expires is not None and expires < now:
        return "Stopping..."
    return human_time(expires, "Never", now)


def list_rows(models: Iterable[Mapping[str, Any]], prefix: str = "",
              now: datetime | None = None) -> list[list[str]]:
    """Rows of ``list``: NAME, ID, SIZE, MODIFIED, filtered by a case-insensitive name prefix."""
    rows = []
    for m in models:
        name = str(m.get("name") or m.get("model") or "")
        if prefix and not name.lower().startswith(prefix.lower()):
            continue
        digest = str(m.get("digest", "")).removeprefix("sha256:")
        rows.append([name, digest[:12], human_bytes(int(m.get("size") or 0)),
                     human_time(parse_time(m.get("modified_at")), "Never", now)])
    return rows


def ps_rows(models: Iterable[Mapping[str, Any]], now: datetime | None = None) -> list[list[str]]:
    """Rows of ``ps``: NAME, ID, SIZE, PROCESSOR, CONTEXT, UNTIL."""
    rows = []
    for m in models:
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        digest = str(m.get("digest", "")).removeprefix("sha256:")
        total = int(m.get("total") or 0)
        when = (f"loading {int(m.get('completed') or 0) * 100 // total}%" if m.get("status") == "loading model"
                and total > 0 else until(parse_time(m.get("expires_at")), now))
        rows.append([str(m.get("name") or m.get("model") or ""), digest[:12], human_bytes(size),
                     processor(size, vram), str(m.get("context_length") or ""), when])
    return rows


def metrics_summary(final: Mapping[str, Any]) -> str:
    """The ``--verbose`` timing lines Ollama prints to stderr after an answer."""
    lines = []
    total, load = int(final.get("total_duration") or 0), int(final.get("load_duration") or 0)
    pcount, pdur = int(final.get("prompt_eval_count") or 0), int(final.get("prompt_eval_duration") or 0)
    ecount, edur = int(final.get("eval_count") or 0), int(final.get("eval_duration") or 0)
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    if pcount > 0:
        lines.append(f"prompt eval count:    {pcount} token(s)")
    if pdur > 0:
        lines.append(f"prompt eval duration: {go_duration(pdur)}")
        lines.append(f"prompt eval rate:     {pcount / (pdur / 1e9):.2f} tokens/s")
    if ecount > 0:
        lines.append(f"eval count:           {ecount} token(s)")
    if edur > 0:
        lines.append(f"eval duration:        {go_duration(edur)}")
        lines.append(f"eval rate:            {ecount / (edur / 1e9):.2f} tokens/s")
    return "".join(line + "\n" for line in lines)


class WordWrap:
    """Word wrapping for streamed text: pieces arrive token by token, lines break at spaces.

    The word being typed is held back until a space or newline ends it, so it can
    move to the next line whole; ``flush`` releases it at the end of the answer.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.column = 0
        self.word = ""

    def feed(self, text: str) -> str:
        if self.width <= 0:
            return text
        out: list[str] = []
        for ch in text:
            if ch == "\n":
                out.append(self._word() + "\n")
                self.column = 0
            elif ch == " ":
                out.append(self._word())
                if self.column >= self.width:
                    out.append("\n")
                    self.column = 0
                else:
                    out.append(" ")
                    self.column += 1
            else:
                self.word += ch
        return "".join(out)

    def flush(self) -> str:
        return self._word() if self.width > 0 else ""

    def _word(self) -> str:
        word, self.word = self.word, ""
        if not word:
            return ""
        prefix = ""
        if self.column + len(word) > self.width and self.column > 0:
            prefix = "\n"
            self.column = 0
        self.column += len(word)
        return prefix + word
