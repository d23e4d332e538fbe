"""/health, /metrics, /v1/usage and /openapi.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from falcon import testing

from power.api import SCHEMAS


def test_health(client: testing.TestClient) -> None:
    body = client.simulate_get("/health").json
    assert body["status"] == "ok" and body["uptime"] >= 0 and body["models_loaded"] == []


def test_metrics_families(client: testing.TestClient) -> None:
    client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    text = client.simulate_get("/metrics").text
    for family in ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total", "llamacpp:requests_processing",
                   "llamacpp:requests_deferred", "vllm:num_requests_running", "vllm:num_requests_waiting",
                   "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_bucket",
                   "vllm:e2e_request_latency_seconds_count", "vllm:prompt_tokens_total",
                   "vllm:generation_tokens_total", "vllm:request_success_total",
                   "a3s_power_http_requests_total", "a3s_power_model_load_seconds_count"):
        assert family in text, family
    assert 'vllm:generation_tokens_total{model_name="tiny:latest"} 2.0' in text
    assert 'route="/api/generate"' in text


def test_usage_recorded_and_queried(client: testing.TestClient) -> None:
    client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    client.simulate_post("/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
    client.simulate_post("/api/embed", json={"model": "embedder", "input": "x"})
    body = client.simulate_get("/v1/usage").json
    tiny = next(d for d in body["data"] if d["model"] == "tiny:latest")
    assert tiny["requests"] == 2 and tiny["prompt_tokens"] == 14 and tiny["completion_tokens"] == 4
    assert abs(tiny["cost"] - (14 * 1.0 + 4 * 2.0) / 1e6) < 1e-12
    assert body["totals"]["requests"] == 3
    only = client.simulate_get("/v1/usage", params={"model": "embedder", "start": "2000-01-01"}).json
    assert [d["model"] for d in only["data"]] == ["embedder:latest"]
    assert client.simulate_get("/v1/usage", params={"end": "1999-01-01"}).json["data"] == []
    assert client.simulate_get("/v1/usage", params={"start": "garbage"}).status_code == 400


def test_openapi_uses_handler_schemas(client: testing.TestClient) -> None:
    doc = client.simulate_get("/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["schemas"] == SCHEMAS
    ref = doc["paths"]["/api/chat"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/ChatRequest"


def test_server_never_imports_native() -> None:
    code = ("import sys, power.server.app, power.server.storeport, power.runner;"
            "bad = [m for m in ('power.native', 'power.engine.core', 'cffi') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_is_ready_with_room_in_the_queue(client: testing.TestClient) -> None:
    resp = client.simulate_get("/health")
    assert resp.status_code == 200 and resp.json["ready"] is True and resp.json["status"] == "ok"
    assert resp.json["queue_capacity"] == 512 and resp.json["waiting"] == 0 and "reasons" not in resp.json
    assert client.simulate_head("/health").status_code == 200


def test_health_is_not_ready_when_the_queue_is_full(make_client: Any, scheduler: Any) -> None:
    client = make_client(max_queue=4)
    scheduler.depth = 3
    assert client.simulate_get("/health").status_code == 200
    scheduler.depth = 4
    resp = client.simulate_get("/health")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    body = resp.json
    assert body["ready"] is False and body["status"] == "unavailable" and body["waiting"] == 4
    assert body["reasons"] == ["the queue is full (4 waiting, OLLAMA_MAX_QUEUE=4)"]
    assert {"version", "uptime", "models_loaded", "running"} <= set(body)  # the old fields stay
    assert client.simulate_head("/health").status_code == 503


def test_health_is_not_ready_while_shutting_down(client: testing.TestClient, scheduler: Any) -> None:
    scheduler.closing = True
    resp = client.simulate_get("/health")
    assert resp.status_code == 503 and resp.json["reasons"] == ["the server is shutting down"]


def test_health_is_not_ready_when_the_store_cannot_be_read(client: testing.TestClient, library: Any) -> None:
    manifests = library.layout.manifests_dir
    moved = manifests.with_name("manifests.away")
    manifests.rename(moved)
    manifests.write_text("not a folder")  # unreadable as a folder whoever runs the test (root ignores modes)
    try:
        resp = client.simulate_get("/health")
        assert resp.status_code == 503 and resp.json["ready"] is False
        [reason] = resp.json["reasons"]
        assert reason.startswith(f"model store {manifests} is not readable")
    finally:
        manifests.unlink()
        moved.rename(manifests)
    assert client.simulate_get("/health").status_code == 200


def test_a_models_folder_not_made_yet_is_an_empty_library_not_a_fault(tmp_path: Path) -> None:
    from power.store import ModelStore

    assert ModelStore(tmp_path / "nothing-yet", noprune=True).unreadable() is None
    (tmp_path / "a-file").write_text("x")
    assert "is not readable" in (ModelStore(tmp_path / "a-file", noprune=True).unreadable() or "")
