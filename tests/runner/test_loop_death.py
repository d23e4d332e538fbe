"""P12: an engine whose loop dies, for any reason, takes its runner with it; the next request gets a fresh one.

The fault is injected from inside the loop: a ``sitecustomize`` on the runner's
``PYTHONPATH`` makes ``Context.step`` raise while a marker file exists, in the
real runner process the real scheduler spawned.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from power.errors import EngineError, InvalidRequest
from power.runner import Scheduler
from tests.runner.procs import pid_alive, wait_for

LONG = {"num_predict": 100000, "temperature": 0}
FAULT = '''
import os
marker = os.environ.get("POWER_TEST_STEP_FAULT")
if marker:
    import power.native as native
    step = native.Context.step
    def faulty_step(self):
        if os.path.exists(marker):
            raise RuntimeError("injected fault in the engine loop")
        return step(self)
    native.Context.step = faulty_step
'''

# A runner that hangs up on the server and then takes its time to exit (as freeing a large model can).
HANG_UP = '''
import os, socket, stat, time
marker = os.environ.get("POWER_TEST_STEP_FAULT")
if marker:
    import power.native as native
    step = native.Context.step
    exit_now = os._exit
    def hang_up(self):
        if os.path.exists(marker):
            os._exit = lambda code: (time.sleep(20), exit_now(code))
            for fd in map(int, os.listdir("/proc/self/fd")):
                try:
                    if stat.S_ISSOCK(os.fstat(fd).st_mode):
                        socket.socket(fileno=fd).shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            time.sleep(20)
            exit_now(1)
        return step(self)
    native.Context.step = hang_up
'''


@pytest.fixture
def fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The marker file: while it exists, every runner started from now on fails its next step."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAULT)
    monkeypatch.setenv("PYTHONPATH", str(site))
    marker = tmp_path / "fail-now"
    monkeypatch.setenv("POWER_TEST_STEP_FAULT", str(marker))
    yield marker


def pid_of(sched: Scheduler, name: str) -> int:
    return next(r["pid"] for r in sched.ps() if r["name"] == name)


def test_a_dead_loop_ends_its_requests_and_its_runner(make_scheduler: Callable[..., Scheduler], fault: Path) -> None:
    sched = make_scheduler()
    streams = [sched.generate("tiny", f"prompt {i}", options=LONG) for i in range(2)]
    for s in streams:
        next(s)
    pid = pid_of(sched, "tiny")
    fault.touch()
    for s in streams:
        with pytest.raises(EngineError, match="engine stopped|unexpectedly stopped"):
            for _ in s:
                pass
    assert wait_for(lambda: not pid_alive(pid), 10), "the runner lives on without its engine loop"
    assert wait_for(lambda: sched.ps() == [], 5)
    fault.unlink()
    again = sched.generate("tiny", "hi", options={"num_predict": 3}).result()
    assert again["done_reason"] == "length"
    assert pid_of(sched, "tiny") != pid


def test_a_runner_that_hung_up_fails_its_requests_at_once_and_is_replaced(
        make_scheduler: Callable[..., Scheduler], fault: Path) -> None:
    """A runner that closed its socket but lingers (20 s here) costs its requests a moment, not its linger."""
    (fault.parent / "site" / "sitecustomize.py").write_text(HANG_UP)
    sched = make_scheduler()
    sched.generate("tiny", "warm", options={"num_predict": 2}).result()
    pid = pid_of(sched, "tiny")
    fault.touch()
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="unexpectedly stopped"):
        sched.generate("tiny", "hi", options=LONG).result()
    assert time.monotonic() - t0 < 10, "the request waited for the hung-up runner to exit by itself"
    fault.unlink()
    assert wait_for(lambda: not pid_alive(pid), 5), "the hung-up runner was left running"
    again = sched.generate("tiny", "hi", options={"num_predict": 3}).result()
    assert again["done_reason"] == "length" and pid_of(sched, "tiny") != pid


def test_requests_right_after_a_loop_death_start_a_new_runner(
        make_scheduler: Callable[..., Scheduler], fault: Path) -> None:
    """The runner says it is exiting ahead of its requests' errors, so nothing more is sent to it."""
    sched = make_scheduler()
    for _ in range(5):
        sched.generate("tiny", "warm", options={"num_predict": 2}).result()
        pid = pid_of(sched, "tiny")
        fault.touch()
        with pytest.raises(EngineError):
            sched.generate("tiny", "hi", options=LONG).result()
        fault.unlink()
        again = sched.generate("tiny", "hi", options={"num_predict": 3}).result()  # no wait: at once
        assert again["done_reason"] == "length" and pid_of(sched, "tiny") != pid


def test_the_error_names_the_engine_failure(make_scheduler: Callable[..., Scheduler], fault: Path) -> None:
    sched = make_scheduler()
    sched.generate("tiny", "warm", options={"num_predict": 2}).result()
    fault.touch()
    with pytest.raises(EngineError) as info:
        sched.generate("tiny", "hi", options=LONG).result()
    assert "injected fault" in str(info.value) or "unexpectedly stopped" in str(info.value)


@pytest.mark.parametrize("options", [{"top_k": 2**31}, {"top_k": -10**20}, {"repeat_last_n": 2**31},
                                     {"num_predict": 1e308}, {"seed": 2**64}, {"num_keep": 2**40}])
def test_out_of_range_options_are_refused_and_the_model_keeps_serving(
        make_scheduler: Callable[..., Scheduler], options: dict[str, object]) -> None:
    sched = make_scheduler()
    sched.generate("tiny", "warm", options={"num_predict": 2}).result()
    pid = pid_of(sched, "tiny")
    with pytest.raises(InvalidRequest, match=f'option "{next(iter(options))}"'):
        sched.generate("tiny", "hi", options=options)
    done = sched.generate("tiny", "hi", options={"num_predict": 3}).result()
    assert done["done_reason"] == "length" and pid_of(sched, "tiny") == pid


def test_in_range_extremes_reach_llama_cpp_safely(make_scheduler: Callable[..., Scheduler]) -> None:
    """The largest values the table allows are fitted to the model, not passed on (no allocation of 2^31)."""
    sched = make_scheduler()
    extremes = {"top_k": 2**31 - 1, "repeat_last_n": 2**31 - 1, "repeat_penalty": 3e38, "num_keep": 2**31 - 1,
                "seed": 2**63 - 1, "presence_penalty": -3e38, "frequency_penalty": 3e38, "temperature": 3e38,
                "num_predict": 2**31 - 1, "min_p": 1.0, "top_p": 0.0, "typical_p": 0.0}
    pid = None
    for key, value in extremes.items():
        opts = {key: value, "num_predict": 3} if key != "num_predict" else {key: value, "temperature": 0}
        stream = sched.generate("tiny", "hi " * 10, options=opts)
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) >= 4:
                break
        stream.close()
        assert chunks, key
        pid = pid or pid_of(sched, "tiny")
        assert pid_of(sched, "tiny") == pid, f"{key}={value} cost the runner"


def test_load_options_out_of_range_are_refused_and_large_ones_fitted(
        make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    for bad in ({"num_batch": -1}, {"num_batch": 0}, {"num_thread": -1}, {"num_gpu": -2}, {"main_gpu": -1},
                {"num_ctx": 2**31}, {"num_thread": 1.5}):
        with pytest.raises(InvalidRequest, match=f'option "{next(iter(bad))}"'):
            sched.load("tiny", options=bad)
    # 100000 threads would abort in libgomp, 2^31-1 batch in llama.cpp: fitted to the machine instead
    sched.load("tiny", options={"num_thread": 100000, "num_batch": 2**31 - 1, "num_gpu": 2**31 - 1,
                                "main_gpu": 2**31 - 1})
    assert sched.generate("tiny", "hi", options={"num_predict": 2, "num_thread": 100000, "num_batch": 2**31 - 1,
                                                 "num_gpu": 2**31 - 1, "main_gpu": 2**31 - 1}
                          ).result()["done_reason"] == "length"


def test_over_http_the_stream_ends_with_an_error_line_and_the_next_request_is_served(
        tmp_path: Path, fault: Path) -> None:
    from tests.server.realapp import real_app
    from tests.tinymodels import write_llama

    gguf = write_llama(tmp_path / "tiny.gguf", seed=0)
    gen = real_app(tmp_path / "home", {"tiny": gguf}, context_length=512)
    app = next(gen)
    try:
        body = {"model": "tiny", "prompt": "hi", "options": {"num_predict": 3}, "stream": False}
        assert app.client.simulate_post("/api/generate", json=body).status_code == 200
        pid = app.scheduler.ps()[0]["pid"]
        fault.touch()
        timer = threading.Timer(30, lambda: fault.unlink(missing_ok=True))
        timer.start()
        r = app.client.simulate_post("/api/generate", json={**body, "stream": True,
                                                             "options": {"num_predict": 50}})
        lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
        assert "error" in lines[-1] and "done" not in lines[-1]
        assert wait_for(lambda: not pid_alive(pid), 10)
        fault.unlink()
        timer.cancel()
        r = app.client.simulate_post("/api/generate", json=body)
        assert r.status_code == 200 and r.json["done"] and app.scheduler.ps()[0]["pid"] != pid
        r = app.client.simulate_post("/api/generate", json={**body, "options": {"top_k": 2**31}})
        assert r.status_code == 400 and "top_k" in r.json["error"]
    finally:
        gen.close()
