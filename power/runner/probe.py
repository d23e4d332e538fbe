"""Print, as JSON, the GPU devices llama.cpp's backends find in this install.

Run in a subprocess by ``power.runner.memory.detect_gpus`` for builds with a GPU backend
that NVML and nvidia-smi do not see (Vulkan, for AMD and Intel GPUs): the server process
itself never loads llama.cpp.

    python -m power.runner.probe
"""

from __future__ import annotations

import json


def main() -> int:
    from power import native

    gpus = [d for d in native.devices() if d.kind in ("gpu", "igpu")]
    print(json.dumps([{"index": i, "name": d.name, "description": d.description, "kind": d.kind,
                       "total": d.memory_total, "free": d.memory_free} for i, d in enumerate(gpus)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
