"""ElasticPool (power/server/threads.py): gunicorn's request threads, which end when idle."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from power.server.threads import ElasticPool
from power.store import ModelStore
from tests.server.conftest import add_model
from tests.server.live import LiveServer, descendants
from tests.tinymodels import write_llama


def _wait(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_results_exceptions_and_threads_on_demand() -> None:
    pool = ElasticPool(4, idle=0.3)
    assert pool.submit(lambda a, b=0: a + b, 2, b=3).result(5) == 5
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 10) for _ in range(10)]
    assert _wait(lambda: pool.threads == 4)  # never more than max_workers
    time.sleep(0.1)
    assert pool.threads == 4 and sum(f.running() for f in futures) == 4
    gate.set()
    assert all(f.result(10) is True for f in futures)  # the queued six ran on the same four threads
    assert _wait(lambda: pool.threads == 0, 5)  # idle threads end
    assert pool.submit(lambda: "again").result(5) == "again"  # and start again on demand
    pool.shutdown(wait=True)
    assert pool.threads == 0
    with pytest.raises(RuntimeError):
        pool.submit(print)


def test_one_idle_thread_serves_a_sequence_of_tasks() -> None:
    pool = ElasticPool(8, idle=5)
    names = {pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(20)}
    assert len(names) == 1  # a waiting thread takes the next task: no thread per task
    pool.shutdown()


def test_shutdown_lets_queued_work_finish_or_cancels_it() -> None:
    pool = ElasticPool(1, idle=5)
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    queued = pool.submit(lambda: "ran")
    pool.shutdown(wait=False)
    gate.set()
    assert first.result(5) is True and queued.result(5) == "ran"
    pool = ElasticPool(1, idle=5)
    gate.clear()
    pool.submit(gate.wait, 10)
    dropped = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert dropped.cancelled()


def _worker_threads(server: LiveServer) -> int:
    worker = min(descendants(server.proc.pid))  # the gunicorn worker (runners start after it)
    return int(Path(f"/proc/{worker}/status").read_text().split("Threads:")[1].split()[0])


def test_request_threads_end_after_a_burst(tmp_path: Path) -> None:
    gguf = write_llama(tmp_path / "tiny.gguf", seed=2)
    add_model(ModelStore(tmp_path / "models", noprune=True), "tiny", gguf)
    server = LiveServer(tmp_path, {"A3S_POWER_THREAD_IDLE": "1", "OLLAMA_NUM_PARALLEL": "2"})
    try:
        body = json.dumps({"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})

        def generate() -> None:
            req = urllib.request.Request(server.url + "/api/generate", body.encode(), method="POST")
            with urllib.request.urlopen(req, timeout=120) as r:
                assert json.loads(r.read())["done"] is True

        generate()
        time.sleep(1.5)
        before = _worker_threads(server)
        burst = [threading.Thread(target=generate) for _ in range(24)]
        for t in burst:
            t.start()
        peak = before
        while any(t.is_alive() for t in burst):
            peak = max(peak, _worker_threads(server))
            time.sleep(0.01)
        assert peak > before + 4  # the queued requests each held a thread
        assert _wait(lambda: _worker_threads(server) <= before, 20), (before, _worker_threads(server))
        generate()  # and the server still serves
    finally:
        assert server.stop() == 0


def test_the_submitter_never_starts_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thread.start waits for the new thread to run: the pool's spawner does it, never the worker's loop."""
    starters: list[str] = []
    start = threading.Thread.start

    def recording(self: threading.Thread) -> None:
        if self.name.startswith("t-pool"):  # the pool's threads (not, say, a trim's timer)
            starters.append(threading.current_thread().name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", recording)
    pool = ElasticPool(8, idle=5, name="t-pool")
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 10) for _ in range(8)]
    assert _wait(lambda: sum(f.running() for f in futures) == 8)
    gate.set()
    assert all(f.result(10) for f in futures)
    pool.shutdown()
    assert starters[0] == threading.current_thread().name  # the spawner itself, made with the pool
    assert starters[1:] == ["t-pool-spawner"] * 8


def test_the_heap_is_trimmed_once_while_tasks_run_and_once_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trim stops every thread for a moment: ten threads ending beside a running task trim once (not ten
    times), and the endings once no task runs trim again (once a second at most)."""
    from power.server import threads as threads_module

    trims: list[float] = []
    def trim() -> None:
        if threading.current_thread().name.startswith("t-trim"):  # this pool's (other tests' pools may end now)
            trims.append(time.monotonic())

    monkeypatch.setattr(threads_module, "trim_heap", trim)
    pool = ElasticPool(16, idle=0.2, name="t-trim")
    gate = threading.Event()
    long = pool.submit(gate.wait, 30)
    shorts = [pool.submit(time.sleep, 0.05) for _ in range(10)]
    assert all(f.result(10) is None for f in shorts)
    assert _wait(lambda: pool.threads == 1)  # the ten ended beside the running task
    time.sleep(0.3)
    assert len(trims) == 1
    gate.set()
    assert long.result(10) is True
    assert _wait(lambda: len(trims) == 2, 5)  # its thread ended with nothing running: trimmed again
    time.sleep(1.5)
    assert len(trims) == 2
    pool.shutdown()
