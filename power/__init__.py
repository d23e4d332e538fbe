"""a3s-power: a drop-in replacement for Ollama over llama.cpp."""

from __future__ import annotations

__all__ = ["__version__"]

# Numeric and dotted on purpose: clients (Open WebUI, VS Code) parse it and
# require >= 0.6.4.
__version__ = "0.9.0"
