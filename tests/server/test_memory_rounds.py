"""Memory after repeated bursts of queued streams, against real gunicorn (issue 14).

A burst of queued requests raises the worker's RSS (request threads, their requests' objects); once the
threads have ended (``A3S_POWER_THREAD_IDLE``) and the heap is trimmed it must come back, and each further
burst must not add to what the first one left. The bounds are generous (CI machines are noisy): a leak of
what each request allocates would grow the worker by megabytes a round and still fail them; the figures
belong to ``benchmarks/load.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from power.server.serve import ALLOCATOR
from power.store import ModelStore
from tests.server.conftest import add_model
from tests.server.live import LiveServer, runner_pids
from tests.tinymodels import write_llama

STREAMS = 160  # per round: 2 run, the rest queue
ROUNDS = 3
MIB = 1024


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} missing for {pid}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("rounds-home")
    add_model(ModelStore(home / "models", noprune=True), "tiny", write_llama(home / "tiny.gguf", seed=5))
    live = LiveServer(home, {"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_MAX_QUEUE": "512", "OLLAMA_KEEP_ALIVE": "-1",
                             "A3S_POWER_THREAD_IDLE": "1"})
    yield live
    assert live.stop() == 0


def _worker(server: LiveServer) -> int:
    children = server.children()
    workers = [p for p in children - runner_pids(children) if _status(p, "PPid") == server.proc.pid]
    assert len(workers) == 1, workers
    return workers[0]


def _round(server: LiveServer, pid: int, threads_idle: int) -> tuple[int, int]:
    """One burst of queued streams; (peak threads, RSS in KiB once the burst's threads ended)."""
    done: list[int] = []

    def one(i: int) -> None:
        lines = list(server.stream_lines("/api/generate", {"model": "tiny", "prompt": f"tale {i}", "raw": True,
                                                            "options": {"num_predict": 4}}, timeout=300))
        done.append(int(bool(lines and lines[-1].get("done"))))

    clients = [threading.Thread(target=one, args=(i,)) for i in range(STREAMS)]
    for t in clients:
        t.start()
    peak = 0
    while any(t.is_alive() for t in clients):
        peak = max(peak, _status(pid, "Threads"))
        time.sleep(0.05)
    for t in clients:
        t.join()
    assert sum(done) == STREAMS
    deadline = time.monotonic() + 60
    while _status(pid, "Threads") > threads_idle and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.5)  # the last ending thread's trim (at most TRIM_EVERY_S after the one before)
    return peak, _status(pid, "VmRSS")


def test_rss_comes_back_after_each_burst_and_rounds_do_not_add(server: LiveServer) -> None:
    status, _ = server.request("POST", "/api/generate", {"model": "tiny", "prompt": "warm", "stream": False,
                                                          "options": {"num_predict": 2}})
    assert status == 200  # the model is loaded and the first request's imports are done before the start
    pid = _worker(server)
    with open(f"/proc/{pid}/environ", "rb") as fh:  # the allocator the server chose (power/server/serve.py)
        assert f"PYTHONMALLOC={ALLOCATOR}".encode() in fh.read().split(b"\0")
    time.sleep(2.5)
    threads_idle = _status(pid, "Threads")
    start = _status(pid, "VmRSS")
    after = []
    for _ in range(ROUNDS):
        peak, rss = _round(server, pid, threads_idle)
        assert peak > threads_idle + 50  # the burst really queued on request threads
        after.append(rss)
    # the first burst's residue is bounded; later ones reuse what it left and add nothing that stays
    print(f"worker RSS KiB start={start} after rounds={after}")
    assert after[0] - start < 16 * MIB, (start, after)
    assert max(after[1:]) - after[0] < 4 * MIB, (start, after)
