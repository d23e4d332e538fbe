"""What a model's templates say it can do: ``tools``, ``insert``, ``thinking``.

Ollama derives these from the template: a Go template that reads ``.Tools``
supports tools, one that reads ``.Suffix`` supports fill-in-the-middle, and one
whose ``{{ .Thinking }}`` sits between literal tags supports thinking. A Jinja
chat template supports tools when it mentions them or writes calls in a known family's syntax. (``completion``,
``embedding`` and ``vision`` come from the GGUF, not from here.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from power.errors import TemplateError
from power.prompt.builtin import fim_template
from power.prompt.families import family_of
from power.prompt.go.template import parse_template
from power.prompt.parsing.thinking import thinking_tags

__all__ = ["capabilities_of"]


def capabilities_of(template_text: str | None, jinja_text: str | None,
                    metadata: Mapping[str, Any] | None = None) -> set[str]:
    """Capabilities implied by a Go template, a Jinja chat template and (for FIM) the vocabulary.

    A template that does not parse implies nothing; rendering will report it.
    """
    caps: set[str] = set()
    if template_text:
        try:
            tmpl = parse_template(template_text)
        except TemplateError:
            tmpl = None
        if tmpl is not None:
            if tmpl.uses("Tools"):
                caps.add("tools")
            if tmpl.uses("Suffix"):
                caps.add("insert")
    if jinja_text and ("tools" in jinja_text or "tool_call" in jinja_text
                       or family_of(jinja_text) is not None):
        caps.add("tools")
    if thinking_tags(template_text, None) or thinking_tags(None, jinja_text):
        caps.add("thinking")
    if metadata is not None and fim_template(metadata) is not None:
        caps.add("insert")
    return caps
