"""Stop strings that may span tokens: emit text that cannot be part of a stop, hold back the rest."""

from __future__ import annotations

__all__ = ["StopMatcher"]


class StopMatcher:
    """Feed text pieces; get back what is safe to emit and whether a stop string was hit.

    Text that could be the beginning of a stop string is held back until the
    next piece decides it; the stop string itself is never emitted.
    """

    __slots__ = ("stops", "matched", "_held", "_longest")

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.matched: str | None = None  # the stop string that was hit (the longest of those starting first)
        self._held = ""
        self._longest = max((len(s) for s in self.stops), default=0)

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text to emit, stopped)."""
        if not self.stops:
            return text, False
        buf = self._held + text
        cut = -1
        for s in self.stops:
            i = buf.find(s)
            if i != -1 and (cut == -1 or i < cut or (i == cut and len(s) > len(self.matched or ""))):
                cut, self.matched = i, s
        if cut != -1:
            self._held = ""
            return buf[:cut], True
        # Hold back the longest tail that is a prefix of some stop string.
        hold = 0
        for n in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self.stops):
                hold = n
                break
        self._held = buf[len(buf) - hold:] if hold else ""
        return buf[:len(buf) - hold], False

    def flush(self) -> str:
        """Text held back when generation ends for another reason."""
        held, self._held = self._held, ""
        return held
