"""Ollama's Go templates (``text/template``): lexer and parser, node tree, functions, renderer."""

from __future__ import annotations

from power.prompt.go.template import GoTemplate, parse_template

__all__ = ["GoTemplate", "parse_template"]
