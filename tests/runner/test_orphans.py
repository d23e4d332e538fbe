"""No runner outlives its server, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.runner.procs import pid_alive, wait_for

ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent("""
    import sys, threading
    sys.path.insert(0, {root!r})
    from power.config import load_settings
    from power.runner import ModelSpec, Scheduler

    sched = Scheduler(load_settings({{"A3S_POWER_HOME": {home!r}}}), lambda n: ModelSpec(n, {model!r}), gpus=[])
    {action}
    print(sched.ps()[0]["pid"], flush=True)
    threading.Event().wait()
""")


def _run_server(tmp_path: Path, model: Path, action: str) -> tuple[subprocess.Popen[str], int]:
    script = SERVER.format(root=str(ROOT), home=str(tmp_path), model=str(model), action=action)
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline() if server.stdout else ""
    assert line.strip().isdigit(), "the server script did not report a runner"
    return server, int(line)


def test_runner_dies_with_a_sigkilled_server(tmp_path: Path, models: dict[str, Path]) -> None:
    server, runner = _run_server(tmp_path, models["tiny"], 'sched.load("tiny")')
    assert pid_alive(runner)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    assert wait_for(lambda: not pid_alive(runner), 5)


def test_runner_dies_with_a_sigkilled_server_mid_stream(tmp_path: Path, models: dict[str, Path]) -> None:
    action = 'stream = sched.generate("tiny", "hi", options={"num_predict": 1000000}); next(stream)'
    server, runner = _run_server(tmp_path, models["tiny"], action)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    assert wait_for(lambda: not pid_alive(runner), 5)
