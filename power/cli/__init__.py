"""The ``a3s-power`` command line: argparse root, one module per command, rendering.

``main`` is the console-script entry point (and ``python -m power``).
"""

from __future__ import annotations

from power.cli.main import main

__all__ = ["main"]
