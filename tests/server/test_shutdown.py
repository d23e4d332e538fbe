"""Graceful shutdown (P8) and no orphaned runners, against the real gunicorn server and real runners."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from power.store import ModelStore
from tests.runner.procs import pid_alive, wait_for
from tests.server.conftest import add_model
from tests.server.live import LiveServer, runner_pids
from tests.tinymodels import write_llama

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

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


def test_new_requests_get_503_with_retry_after_while_streams_drain(home_template: Path) -> None:
    server = _server(home_template, A3S_POWER_SHUTDOWN_TIMEOUT="20")
    lines, _, reader = _start_stream(server, 1_000_000)
    os.kill(server.proc.pid, signal.SIGTERM)
    time.sleep(0.5)
    # Answered at once (not left in the listen backlog until the worker exits), before any work starts, in
    # each API's error shape: a balancer retries them on another replica (nginx: proxy_next_upstream http_503).
    t0 = time.monotonic()
    for path, body, error in [
            ("/api/generate", {"model": "tiny", "prompt": "hi"}, {"error": "server is shutting down"}),
            ("/v1/completions", {"model": "tiny", "prompt": "hi"},
             {"error": {"message": "server is shutting down", "type": "api_error", "param": None, "code": None}}),
            ("/v1/messages", {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
             {"type": "error", "error": {"type": "overloaded_error", "message": "server is shutting down"}}),
            ("/api/pull", {"model": "library/other"}, {"error": "server is shutting down"})]:
        resp = requests.post(f"{server.url}{path}", json=body, timeout=10)
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "1", (path, resp.status_code, resp.text)
        assert resp.json() == error, path
    health = requests.get(f"{server.url}/health", timeout=10)  # readiness probes see why
    assert health.status_code == 503 and health.json()["reasons"] == ["the server is shutting down"]
    assert time.monotonic() - t0 < 10
    assert server.proc.poll() is None and "error" not in lines[-1]  # the stream goes on meanwhile
    assert server.proc.wait(20 + 30) == 0
    reader.join(10)
    assert lines[-1] == {"error": "server is shutting down"}
    with pytest.raises(requests.ConnectionError):  # gone: refused
        requests.get(f"{server.url}/health", timeout=5)


def _sse_stream(server: LiveServer, api: str) -> tuple[list[str], threading.Event, threading.Thread]:
    """A long stream through the official client of ``api``; what it yields, then how it ended."""
    seen: list[str] = []
    first = threading.Event()

    def read() -> None:
        try:
            if api == "openai":
                client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
                for chunk in client.completions.create(model="tiny", prompt="count", max_tokens=1_000_000,
                                                       stream=True):
                    seen.append(chunk.choices[0].text if chunk.choices else "")
                    first.set()
            else:
                client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
                with client.messages.stream(model="tiny", max_tokens=1_000_000,
                                            messages=[{"role": "user", "content": "count"}]) as stream:
                    for event in stream:
                        seen.append(event.type)
                        first.set()
            seen.append("end: no error")
        except (openai.APIError, anthropic.APIError) as exc:  # an error event, read and raised by the client
            seen.append(f"error: {type(exc).__name__}: {exc}")
        except Exception as exc:  # pragma: no cover - a cut connection; reported by the asserts
            seen.append(f"cut: {type(exc).__name__}: {exc}")
        first.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return seen, first, t


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_sigterm_ends_a_long_sse_stream_with_an_error_event(home_template: Path, api: str) -> None:
    server = _server(home_template)
    seen, first, reader = _sse_stream(server, api)
    assert first.wait(60), "no first event"
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(SHUTDOWN_S + 30) == 0
    reader.join(10)
    assert len(seen) > 1 and seen[-1].startswith("error: ") and "server is shutting down" in seen[-1], seen[-3:]


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
