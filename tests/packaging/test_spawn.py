"""Child processes import the parent's ``power``, not a ``power/`` folder where they happen to start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import power
from power import python_command
from power.cli.private import free_port
from tests.tinymodels import write_llama

DECOY = 'raise ImportError("the decoy power package was imported")\n'


@pytest.fixture
def decoy(tmp_path: Path) -> Path:
    """A working directory holding a ``power/`` package that fails on import, beside a tiny model."""
    folder = tmp_path / "work"
    (folder / "power" / "lib").mkdir(parents=True)
    (folder / "power" / "__init__.py").write_text(DECOY)
    (folder / "power" / "__main__.py").write_text(DECOY)
    write_llama(folder / "tiny.gguf")
    (folder / "Modelfile").write_text("FROM ./tiny.gguf\nPARAMETER num_predict 6\nPARAMETER seed 1\n")
    return folder


def cli_argv() -> list[str]:
    """How a user starts the CLI: the console script next to this interpreter (``python -P -m power`` if none)."""
    script = Path(sys.executable).with_name("a3s-power")
    return [str(script)] if script.is_file() else [sys.executable, "-P", "-m", "power"]


def test_the_command_leaves_out_the_working_directory() -> None:
    argv = python_command("power.runner.probe")
    assert argv[:3] == [sys.executable, "-P", "-c"]
    assert "power.runner.probe" in argv[3]


def test_a_child_started_in_a_decoy_folder_runs_the_parents_package(decoy: Path) -> None:
    out = subprocess.run([*python_command("power"), "--version"], cwd=decoy, capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    assert power.__version__ in out.stdout
    probe = subprocess.run(python_command("power.runner.probe"), cwd=decoy, capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert isinstance(json.loads(probe.stdout.strip().splitlines()[-1]), list)


def test_run_without_a_server_from_a_decoy_folder(decoy: Path, tmp_path: Path) -> None:
    """``create`` then ``run`` with nothing listening: the private server and its runner start in the decoy."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(A3S_POWER_HOME=str(home), OLLAMA_MODELS=str(home / "models"), OLLAMA_HOST=f"127.0.0.1:{free_port()}",
               OLLAMA_CONTEXT_LENGTH="256")
    created = subprocess.run([*cli_argv(), "create", "tiny", "-f", "Modelfile"], cwd=decoy, env=env,
                             capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    ran = subprocess.run([*cli_argv(), "run", "tiny", "hello"], cwd=decoy, env=env, capture_output=True, text=True,
                         timeout=180, stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "decoy" not in ran.stdout + ran.stderr
    assert ran.stdout.strip()
