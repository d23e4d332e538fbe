"""``python -m power.runner``: the runner process (see ``power.runner.process``)."""

from __future__ import annotations

from power.runner.process import main

raise SystemExit(main())
