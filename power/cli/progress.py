"""Progress of pull, push and create, drawn from their NDJSON status stream like Ollama's.

A status with ``total`` and a ``digest`` or ``completed`` gets a bar line
(``pulling 8eeb52dfb3bb:  45% ▕█████    ▏ 1.2 GB/2.0 GB  35 MB/s  20s``, or
``loading model:  45% ▕...``);
any other status gets a line with a braille spinner until the next one starts.
On a terminal the lines are redrawn in place; elsewhere each line is written
once (a bar when its layer is complete, or at the end).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, TextIO

from power.cli.render import go_duration, human_bytes

__all__ = ["ProgressView", "bar_line", "SPINNER"]

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
REDRAW_INTERVAL = 0.1


def bar_line(label: str, completed: int, total: int, width: int, *, rate: float = 0.0,
             eta: float | None = None, done: bool = False) -> str:
    """One progress-bar line fitted to ``width`` columns."""
    completed = max(0, min(completed, total)) if total > 0 else max(0, completed)
    percent = int(completed * 100 // total) if total > 0 else 0
    pre = f"{label}: {percent:3d}% "
    if done:
        suf = f" {human_bytes(total)}".ljust(14)
    else:
        suf = f" {human_bytes(completed)}/{human_bytes(total)}".ljust(14)
        rate_text = f"{human_bytes(rate)}/s" if rate > 0 else ""
        eta_text = go_duration(int(round(eta)) * 1_000_000_000) if eta is not None and rate > 0 else ""
        suf += f" {rate_text:>9} {eta_text:>6}"
    inner = max(10, width - len(pre) - len(suf) - 2)
    filled = inner * completed // total if total > 0 else 0
    return f"{pre}▕{'█' * filled}{' ' * (inner - filled)}▏{suf}".rstrip()


@dataclass
class _Line:
    key: str
    label: str
    total: int = 0
    completed: int = 0
    is_bar: bool = False
    started: float = field(default_factory=time.monotonic)
    first_completed: int = 0
    spinning: bool = True
    printed: bool = False

    def done(self) -> bool:
        return self.is_bar and self.total > 0 and self.completed >= self.total

    def render(self, width: int, tick: int) -> str:
        if not self.is_bar:
            return f"{self.label} {SPINNER[tick % len(SPINNER)]}" if self.spinning else self.label
        elapsed = time.monotonic() - self.started
        moved = self.completed - self.first_completed
        rate = moved / elapsed if elapsed > 0.5 and moved > 0 else 0.0
        eta = (self.total - self.completed) / rate if rate > 0 else None
        return bar_line(self.label, self.completed, self.total, width, rate=rate, eta=eta, done=self.done())


class ProgressView:
    """Draws a status stream on ``stream`` (stderr in Ollama, so stdout stays clean)."""

    def __init__(self, stream: TextIO, *, tty: bool, width: int | None = None) -> None:
        self.stream = stream
        self.tty = tty
        self.width = width or shutil.get_terminal_size((80, 24)).columns
        self.lines: list[_Line] = []
        self.by_key: dict[str, _Line] = {}
        self.drawn = 0
        self.tick = 0
        self.last_draw = 0.0

    def update(self, status: Mapping[str, Any]) -> None:
        text = str(status.get("status") or "").strip()
        digest = str(status.get("digest") or "")
        total = int(status.get("total") or 0)
        is_bar = total > 0 and (bool(digest) or "completed" in status)
        key = digest if is_bar and digest else text
        if not key:
            return
        line = self.by_key.get(key)
        new = line is None
        if line is None:
            line = _Line(key, _label(text, digest) if is_bar else text, is_bar=is_bar)
            line.first_completed = int(status.get("completed") or 0)
            for other in self.lines:
                if not other.is_bar:
                    other.spinning = False
            self.lines.append(line)
            self.by_key[key] = line
        if is_bar:
            line.total = total
            line.completed = int(status.get("completed") or 0)
        self._draw(force=new or line.done())

    def close(self) -> None:
        for line in self.lines:
            line.spinning = False
        self._draw(force=True, final=True)

    # -- drawing -------------------------------------------------------------------
    def _draw(self, *, force: bool, final: bool = False) -> None:
        if not self.tty:
            self._append(final)
            return
        now = time.monotonic()
        if not force and now - self.last_draw < REDRAW_INTERVAL:
            return
        self.last_draw = now
        self.tick += 1
        out = [f"\x1b[{self.drawn}A"] if self.drawn else []
        out.append("\r")
        for line in self.lines:
            out.append(line.render(self.width - 1, self.tick) + "\x1b[K\n")
        self.drawn = len(self.lines)
        self.stream.write("".join(out))
        self.stream.flush()

    def _append(self, final: bool) -> None:
        for line in self.lines:
            if line.printed:
                continue
            if line.is_bar and not (line.done() or final):
                continue
            if not line.is_bar and line.spinning and not final and line is not self.lines[-1]:
                continue
            line.spinning = False
            line.printed = True
            self.stream.write(line.render(self.width - 1, 0) + "\n")
        self.stream.flush()


def _label(text: str, digest: str) -> str:
    if text and digest and digest in text:
        short = digest.removeprefix("sha256:")[:12]
        return text.replace(digest, short)
    return text or digest.removeprefix("sha256:")[:12]
