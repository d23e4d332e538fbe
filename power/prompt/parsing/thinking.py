"""Split model output into thinking and content, incrementally.

Thinking models wrap their reasoning in tags (``<think>``...``</think>`` by
default; a Go template may declare others through the literal text around
``{{ .Thinking }}``). ``ThinkingParser`` takes text as it streams, holds back
anything that might be the start of a tag, and hands back what it has
decided. When the prompt already ends with the open tag, it starts inside the
thinking.
"""

from __future__ import annotations

import enum

from power.errors import TemplateError
from power.prompt.parsing.delta import Delta
from power.prompt.go.template import parse_template

__all__ = [
    "DEFAULT_TAGS",
    "ThinkingParser",
    "partial_suffix",
    "starts_thinking",
    "thinking_tags",
]

DEFAULT_TAGS = ("<think>", "</think>")
_SPACE = " \t\r\n"


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def thinking_tags(template: str | None = None, jinja: str | None = None) -> tuple[str, str] | None:
    """The open/close thinking tags a template declares, or None when it has none."""
    from power.prompt.families import family_thinking  # families import this module

    if template:
        try:
            tmpl = parse_template(template)
        except TemplateError:
            return None
        for before, after in tmpl.text_around("Thinking"):
            lines_before = [ln.strip() for ln in before.splitlines() if ln.strip()]
            lines_after = [ln.strip() for ln in after.splitlines() if ln.strip()]
            if lines_before and lines_after:
                return lines_before[-1], lines_after[0]
    special = family_thinking(jinja)
    if special is not None:
        return special
    if jinja and (DEFAULT_TAGS[0] in jinja or "reasoning_content" in jinja
                  or "enable_thinking" in jinja):
        return DEFAULT_TAGS
    return None


def starts_thinking(prompt: str, open_tag: str = DEFAULT_TAGS[0]) -> bool:
    """Whether the rendered prompt leaves the model inside its thinking."""
    return bool(open_tag) and prompt.rstrip(_SPACE).endswith(open_tag)


class _State(enum.Enum):
    LOOKING = 1  # before any output: is there an open tag?
    THINKING = 2
    AFTER = 3  # just past the close tag: drop whitespace
    CONTENT = 4


class ThinkingParser:
    """Incremental splitter of thinking and content; ``feed`` then ``finish``."""

    def __init__(self, open_tag: str = DEFAULT_TAGS[0], close_tag: str = DEFAULT_TAGS[1], *,
                 start_in_thinking: bool = False) -> None:
        if not open_tag or not close_tag:
            raise ValueError("thinking tags must not be empty")
        self.open_tag = open_tag
        self.close_tag = close_tag
        self.start_in_thinking = start_in_thinking
        self.state = _State.THINKING if start_in_thinking else _State.LOOKING
        self.buf = ""
        self.thinking_started = False  # leading whitespace of thinking is dropped

    def feed(self, text: str) -> Delta:
        """Take more output; return the content and thinking decided so far."""
        self.buf += text
        content: list[str] = []
        thinking: list[str] = []
        while self.buf:
            if self.state is _State.LOOKING:
                stripped = self.buf.lstrip(_SPACE)
                if stripped.startswith(self.open_tag):
                    self.buf = stripped[len(self.open_tag):]
                    self.state = _State.THINKING
                elif stripped.startswith(self.close_tag):  # no thinking: the answer follows a bare close tag
                    self.buf = stripped[len(self.close_tag):]
                    self.state = _State.AFTER
                elif not stripped or self.open_tag.startswith(stripped) or self.close_tag.startswith(stripped):
                    break
                else:
                    self.state = _State.CONTENT
            elif self.state is _State.THINKING:
                if not self.thinking_started:
                    self.buf = self.buf.lstrip(_SPACE)
                    if not self.buf:
                        break
                    self.thinking_started = True
                idx = self.buf.find(self.close_tag)
                if idx >= 0:
                    thinking.append(self.buf[:idx].rstrip(_SPACE))
                    self.buf = self.buf[idx + len(self.close_tag):]
                    self.state = _State.AFTER
                    continue
                # Hold back a possible partial close tag and the whitespace before it.
                hold = partial_suffix(self.buf, self.close_tag)
                body = self.buf[:len(self.buf) - hold]
                keep = len(body) - len(body.rstrip(_SPACE))
                cut = len(body) - keep
                thinking.append(self.buf[:cut])
                self.buf = self.buf[cut:]
                break
            elif self.state is _State.AFTER:
                self.buf = self.buf.lstrip(_SPACE)
                if self.buf:
                    self.state = _State.CONTENT
            else:
                content.append(self.buf)
                self.buf = ""
        return Delta("".join(content), "".join(thinking))

    def finish(self) -> Delta:
        """End of output: release whatever is held back."""
        rest, self.buf = self.buf, ""
        if self.state is _State.THINKING:
            return Delta("", rest.rstrip(_SPACE))
        if self.state is _State.AFTER:
            return Delta()
        return Delta(rest, "")
