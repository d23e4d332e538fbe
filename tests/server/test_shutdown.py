"""Graceful shutdown (P8) and no orphaned runners, against the real gunicorn server and real runners."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from power.store import ModelStore
from tests.runner.procs import pid_alive, wait_for
from tests.server.conftest import add_model
from tests.server.live import LiveServer, runner_pids
from tests.tinymodels import write_llama

SHUTDOWN_S = 3.0


@pytest.fixture(scope="module")
def home_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with a tiny model whose long context lets a stream outlast the shutdown deadline."""
    home = tmp_path_factory.mktemp("shutdown-models")
    library = ModelStore(home / "models", noprune=True)
    add_model(library, "tiny", write_llama(home / "tiny.gguf", n_ctx_train=32768, n_embd=256, n_layer=4,
                                           n_ff=1024, n_head=8, n_head_kv=4))
    return home


def _server(home: Path, **env: str) -> LiveServer:
    return LiveServer(home, {"OLLAMA_CONTEXT_LENGTH": "32768", "OLLAMA_NOPRUNE": "1",
                             "A3S_POWER_SHUTDOWN_TIMEOUT": str(SHUTDOWN_S), **env})


def _start_stream(server: LiveServer, num_predict: int) -> tuple[list[dict[str, Any]], threading.Event,
                                                                  threading.Thread]:
    lines: list[dict[str, Any]] = []
    first = threading.Event()

    def read() -> None:
        try:
            for line in server.stream_lines("/api/generate", {"model": "tiny", "prompt": "count",
                                                              "options": {"num_predict": num_predict}}):
                lines.append(line)
                first.set()
        except OSError as exc:  # pragma: no cover - reported by the asserts
            lines.append({"socket_error": str(exc)})
        first.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert first.wait(60), "no first chunk"
    return lines, first, t


def _runners(server: LiveServer) -> set[int]:
    found: set[int] = set()
    wait_for(lambda: bool(found.update(runner_pids(server.children())) or found), 10)
    return found


def test_sigterm_lets_a_short_stream_finish_then_exits_0(home_template: Path) -> None:
    server = _server(home_template, A3S_POWER_SHUTDOWN_TIMEOUT="20")
    lines, _, reader = _start_stream(server, 32)
    runners = _runners(server)
    assert runners
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(60) == 0
    reader.join(10)
    assert lines[-1].get("done") is True and lines[-1]["done_reason"] == "length", lines[-1]
    assert wait_for(lambda: not any(pid_alive(p) for p in runners), 5)


def test_sigterm_ends_a_long_stream_with_an_error_line(home_template: Path) -> None:
    server = _server(home_template)
    lines, _, reader = _start_stream(server, 1_000_000)
    runners = _runners(server)
    start = time.monotonic()
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(SHUTDOWN_S + 30) == 0
    assert time.monotonic() - start < SHUTDOWN_S + 15
    reader.join(10)
    assert len(lines) > 1 and lines[-1] == {"error": "server is shutting down"}, lines[-1]
    assert wait_for(lambda: not any(pid_alive(p) for p in runners), 5)


def test_new_requests_are_not_served_while_shutting_down(home_template: Path) -> None:
    server = _server(home_template)
    _, _, reader = _start_stream(server, 1_000_000)
    os.kill(server.proc.pid, signal.SIGTERM)
    time.sleep(0.5)
    try:  # the worker accepts nothing more: refused, or reset when the server is gone
        status, _ = server.request("GET", "/api/version", timeout=SHUTDOWN_S + 30)
    except OSError:
        status = 0
    assert status == 0
    assert server.proc.wait(SHUTDOWN_S + 30) == 0
    reader.join(10)


@pytest.mark.parametrize("victims", ["master", "worker", "both"])
def test_sigkill_leaves_no_runner(home_template: Path, victims: str) -> None:
    server = _server(home_template)
    _start_stream(server, 1_000_000)
    runners = _runners(server)
    workers = {p for p in server.children() if p not in runners}
    assert runners and workers
    if victims in ("worker", "both"):
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    if victims in ("master", "both"):
        os.kill(server.proc.pid, signal.SIGKILL)
    assert wait_for(lambda: not any(pid_alive(p) for p in runners), SHUTDOWN_S + 15), "a runner outlived it"
    if victims == "master":
        assert wait_for(lambda: not any(pid_alive(p) for p in workers), SHUTDOWN_S + 30)
    server.stop(30)
