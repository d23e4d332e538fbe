"""Anthropic's Messages API under ``/v1/messages`` (what Claude Code and the ``anthropic`` SDK speak).

``convert`` translates requests into native messages, tools and options;
``prepare`` renders the prompt (shared with ``count_tokens``); ``turn`` runs the
generation with stop sequences and an enforced thinking budget; ``blocks``
turns parsed output into content blocks; ``sse`` writes the event stream.
"""

from __future__ import annotations

from power.server.anthropic.resources import CountTokensResource, MessagesResource

__all__ = ["CountTokensResource", "MessagesResource"]
