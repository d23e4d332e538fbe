"""Run one pull in its own process (so a test can kill it with SIGKILL midway)."""

from __future__ import annotations

import sys
from pathlib import Path

from power.registry import Registry
from power.store import ModelStore
from tests.registry.conftest import FAST, LOCAL_PULLS


def main() -> None:
    models, model = sys.argv[1], sys.argv[2]
    registry = Registry(ModelStore(Path(models)), options=FAST, connect_timeout=2.0, destinations=LOCAL_PULLS)
    for _ in registry.pull(model, insecure=True):
        pass


if __name__ == "__main__":
    main()
