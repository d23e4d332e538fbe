"""a3s-power: a drop-in replacement for Ollama over llama.cpp."""

from __future__ import annotations

import os
import sys

__all__ = ["__version__", "python_command"]

# Numeric and dotted on purpose: clients (Open WebUI, VS Code) parse it and
# require >= 0.6.4.
__version__ = "0.14.0"

# The folder that holds this package: site-packages for an install, the checkout otherwise.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_command(module: str) -> list[str]:
    """The argv of ``python -m module`` in a fresh interpreter that imports this very package.

    ``-m`` and ``-c`` put the working directory first on ``sys.path``, where any folder named
    ``power`` would shadow the package the parent runs; ``-P`` leaves it out, and the
    package's own folder is added when the child would not otherwise see it (a checkout).
    """
    boot = (f"import runpy, sys; r = {_ROOT!r}; r in sys.path or sys.path.insert(0, r); "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return [sys.executable, "-P", "-c", boot]
