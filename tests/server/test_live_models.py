"""Metrics gauges and safe delete (P5) against the real gunicorn server and real runners."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.store import ModelStore
from tests.runner.procs import wait_for
from tests.server.conftest import add_model
from tests.server.live import LiveServer
from tests.tinymodels import write_llama


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("live-models")
    library = ModelStore(home / "models", noprune=True)
    wide = {"n_ctx_train": 32768, "n_embd": 256, "n_layer": 4, "n_ff": 1024, "n_head": 8, "n_head_kv": 4}
    add_model(library, "tiny", write_llama(home / "tiny.gguf", **wide))
    add_model(library, "victim", write_llama(home / "victim.gguf", seed=7, name="victim", **wide))
    live = LiveServer(home, {"OLLAMA_CONTEXT_LENGTH": "32768"})
    yield live
    assert live.stop() == 0


def _gauges(server: LiveServer) -> dict[str, float]:
    status, body = server.request("GET", "/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _stream_in_background(server: LiveServer, model: str, num_predict: int) -> tuple[list[dict[str, Any]],
                                                                                     threading.Event,
                                                                                     threading.Thread]:
    lines: list[dict[str, Any]] = []
    first = threading.Event()

    def read() -> None:
        for line in server.stream_lines("/api/generate", {"model": model, "prompt": "count",
                                                          "options": {"num_predict": num_predict}}):
            lines.append(line)
            first.set()
        first.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert first.wait(60)
    return lines, first, t


def test_metrics_scrape_loads_nothing(server: LiveServer) -> None:
    g = _gauges(server)
    assert g["vllm:num_requests_running"] == 0 and g["vllm:num_requests_waiting"] == 0
    assert g["vllm:kv_cache_usage_perc"] == 0 and g["a3s_power_models_loaded"] == 0
    status, body = server.request("GET", "/api/ps")
    assert status == 200 and b'"models":[]' in body.replace(b" ", b"")


def test_metrics_show_a_running_stream_and_its_kv_use(server: LiveServer) -> None:
    lines, _, reader = _stream_in_background(server, "tiny", 1000)
    assert wait_for(lambda: _gauges(server)["vllm:num_requests_running"] == 1, 10)
    g = _gauges(server)
    assert g["llamacpp:requests_processing"] == 1 and g["llamacpp:requests_deferred"] == 0
    assert 0 < g["vllm:kv_cache_usage_perc"] <= 1 and g["llamacpp:kv_cache_tokens"] > 0
    assert g['a3s_power_model_requests_running{model="tiny:latest"}'] == 1
    assert g["a3s_power_models_loaded"] == 1
    reader.join(120)
    assert lines[-1].get("done") is True
    assert wait_for(lambda: _gauges(server)["vllm:num_requests_running"] == 0, 10)


def test_delete_while_generating_lets_the_stream_finish(server: LiveServer) -> None:
    blob = next(p for p in (Path(server.home) / "models" / "blobs").iterdir()
                if p.stat().st_size == (Path(server.home) / "victim.gguf").stat().st_size)
    lines, _, reader = _stream_in_background(server, "victim", 800)
    status, _ = server.request("DELETE", "/api/delete", {"model": "victim"})
    assert status == 200
    status, tags = server.request("GET", "/api/tags")
    assert b"victim" not in tags
    reader.join(120)
    assert lines[-1].get("done") is True and lines[-1]["done_reason"] == "length", lines[-1]
    assert not any("error" in line for line in lines)
    assert blob.exists()  # the runner still holds it: garbage collection spared it
    status, _ = server.request("POST", "/api/generate", {"model": "victim", "prompt": "x"})
    assert status == 404
