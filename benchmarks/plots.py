"""matplotlib for the benchmarks' plots, headless, or None where it is not installed (pip install .[bench])."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend, or None (with a warning) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install .[bench]): no plot")
        return None
    return plt
