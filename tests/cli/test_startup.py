"""The CLI starts without importing what only some commands need (#20: startup time).

Timing is a benchmark's job; what a test can hold steady is which modules load: the Jinja
sandbox, jsonschema, the families' parsers and the model store cost most of a cold start.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("jinja2", "jsonschema", "power.prompt.chat", "power.prompt.families", "power.store.library",
         "power.store.create", "falcon", "gunicorn")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_cli_entry_point_loads_no_heavy_module() -> None:
    loaded = _loaded_after("import power.cli.main")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_version_command_loads_no_heavy_module() -> None:
    # No server answers on this port, so --version goes through the client and stops there.
    loaded = _loaded_after("import os\nos.environ['OLLAMA_HOST'] = '127.0.0.1:9'\n"
                           "from power.cli.main import main\nmain(['--version'])")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_prompt_package_still_exports_its_names() -> None:
    import power.prompt as prompt

    for name in prompt.__all__:
        assert getattr(prompt, name) is not None
    assert "render_chat" in dir(prompt)
