"""P7 at the HTTP layer: 503 with Retry-After, timeouts as 504 or an error line; scheduler gauges; receive deadlines."""

from __future__ import annotations

import json
import time
from typing import Any

from falcon import testing

from power.errors import Busy, RequestTimeout, TimedOut
from power.server import create_app
from power.server.storeport import StorePort
from power.server.worker import ReceiveGuard
from power.store import ModelStore
from tests.server.conftest import FakeScheduler, chunks_for


def test_busy_is_503_with_retry_after(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(Busy())
    res = client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x"})
    assert res.status_code == 503 and res.headers["Retry-After"] == "1"
    assert res.json == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    scheduler.script.append(Busy())
    res = client.simulate_post("/v1/chat/completions",
                               json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
    assert res.status_code == 503 and res.headers["Retry-After"] == "1" and "message" in res.json["error"]


def test_timeout_before_the_first_token_is_504(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(TimedOut("request timed out: no first token within 300s"))
    res = client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x"})
    assert res.status_code == 504 and res.json == {"error": "request timed out: no first token within 300s"}


def test_timeout_mid_stream_is_an_error_line(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    chunks: list[Any] = chunks_for(["a", "b"])[:2] + [TimedOut("request timed out: no complete answer within 9s")]
    scheduler.script.append(chunks)
    res = client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "x"})
    lines = [json.loads(line) for line in res.text.splitlines()]
    assert res.status_code == 200 and lines[-1] == {"error": "request timed out: no complete answer within 9s"}


def test_slow_body_error_is_408() -> None:
    assert RequestTimeout().status == 408


class StatsScheduler(FakeScheduler):
    def stats(self) -> dict[str, Any]:
        return {"running": 3, "waiting": 2, "kv_used": 300, "kv_cache_usage": 0.25, "queue_capacity": 512,
                "models": [{"name": "tiny:latest", "running": 3, "waiting": 2, "kv_cache_usage": 0.25}],
                "gpus": [{"index": 0, "used": 1 << 30, "total": 8 << 30, "utilization": 0.5}]}


def test_gauges_come_from_scheduler_stats(settings: Any, library: ModelStore) -> None:
    app = create_app(settings, StorePort(library), StatsScheduler())
    text = testing.TestClient(app, headers={"Host": "127.0.0.1"}).simulate_get("/metrics").text
    for line in ("vllm:num_requests_running 3.0", "vllm:num_requests_waiting 2.0", "vllm:kv_cache_usage_perc 0.25",
                 "llamacpp:requests_processing 3.0", "llamacpp:requests_deferred 2.0",
                 "llamacpp:kv_cache_usage_ratio 0.25", "llamacpp:kv_cache_tokens 300.0",
                 'a3s_power_model_requests_waiting{model="tiny:latest"} 2.0',
                 'a3s_power_gpu_utilization_ratio{gpu="0"} 0.5',
                 'a3s_power_gpu_memory_used_bytes{gpu="0"} 1.073741824e+09'):
        assert line in text, line


def test_a_failing_stats_call_does_not_fail_the_scrape(settings: Any, library: ModelStore) -> None:
    class Broken(FakeScheduler):
        def stats(self) -> dict[str, Any]:
            raise RuntimeError("loop stuck")

    app = create_app(settings, StorePort(library), Broken())
    res = testing.TestClient(app, headers={"Host": "127.0.0.1"}).simulate_get("/metrics")
    assert res.status_code == 200 and "vllm:num_requests_running 0.0" in res.text


def test_receive_guard_deadlines() -> None:
    g = ReceiveGuard(header_timeout=2.0, body_min_rate=100, body_grace=1.0)
    g.head()
    left = g.remaining()
    assert left is not None and 1.9 < left <= 2.0
    g.body()
    g.received = 300  # 1s grace + 300 bytes at 100 B/s: 4s in all
    left = g.remaining()
    assert left is not None and 3.9 < left <= 4.0
    g.started = time.monotonic() - 10
    assert (g.remaining() or 0) < 0
    assert ReceiveGuard(0, 0, 0).remaining() is None
    off = ReceiveGuard(5, 0, 0)
    off.body()
    assert off.remaining() is None
