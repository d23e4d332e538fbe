"""``python -m power``: the a3s-power CLI."""

from __future__ import annotations

from power.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
