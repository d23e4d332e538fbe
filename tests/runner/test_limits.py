"""Bounded work (P7) and the scheduler-wide counters that /metrics reads, over real runners."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from power.engine.options import MAX_PREDICT, RequestOptions
from power.errors import TimedOut
from power.runner import Scheduler
from power.runner.stats import GpuSampler, parse_gpu_usage, summarize
from tests.runner.procs import wait_for

LONG = {"num_predict": 100000, "temperature": 0}


def test_stats_without_models_loads_nothing(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    st = sched.stats()
    assert st["running"] == 0 and st["waiting"] == 0 and st["kv_cache_usage"] == 0.0
    assert st["models"] == [] and st["queue_capacity"] == sched.settings.max_queue
    assert sched.ps() == []


def test_stats_count_running_waiting_and_kv(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(num_parallel=2, context_length=2048)
    streams = [sched.generate("tiny", f"prompt {i}", options=LONG) for i in range(2)]
    third = threading.Thread(target=lambda: streams.append(sched.generate("tiny", "third", options=LONG)))
    third.start()  # blocks until a sequence frees up: it waits in the runner's queue
    assert wait_for(lambda: sched.stats()["waiting"] == 1, 5)
    st = sched.stats()
    assert st["running"] == 2 and 0 < st["kv_used"] <= st["kv_capacity"]
    assert 0.0 < st["kv_cache_usage"] <= 1.0
    [row] = st["models"]
    assert row["name"] == "tiny" and row["running"] == 2 and row["waiting"] == 1 and row["in_flight"] == 3
    for i in range(3):
        if i == 2:
            third.join(10)
        streams[i].cancel()
        streams[i].result()
    assert wait_for(lambda: sched.stats()["running"] == 0, 5)
    assert len(sched.ps()) == 1  # counting never unloads or reloads


def test_first_token_timeout_cancels_a_queued_request(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(num_parallel=1, first_token_timeout=1.0, context_length=2048)
    sched.generate("tiny", "warm up", options={"num_predict": 2}).result()  # the first decode is slow
    busy = sched.generate("tiny", "hold the only sequence", options=LONG)
    next(busy)
    start = time.monotonic()
    with pytest.raises(TimedOut, match="no first token within 1s"):
        sched.generate("tiny", "never reaches a sequence", options={"num_predict": 4})
    assert time.monotonic() - start < 5
    assert wait_for(lambda: sched.stats()["waiting"] == 0, 5)  # the runner dropped it from its queue
    next(busy)  # the running stream is untouched
    busy.cancel()
    assert busy.result()["done_reason"] == "cancel"


def test_total_timeout_ends_a_stream_with_an_error_and_frees_it(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(request_timeout=2.0, context_length=2048)
    sched.generate("tiny", "warm up", options={"num_predict": 2}).result()
    start = time.monotonic()
    stream = sched.generate("tiny", "go on forever", options=LONG)
    got = 0
    with pytest.raises(TimedOut, match="no complete answer within 2s"):
        for chunk in stream:
            got += len(chunk["tokens"])
    assert 1.9 < time.monotonic() - start < 30
    assert wait_for(lambda: sched.stats()["running"] == 0, 5)
    again = sched.generate("tiny", "short", options={"num_predict": 3}).result()
    assert again["done_reason"] == "length"


def test_timeouts_off_when_zero(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(first_token_timeout=0, request_timeout=0)
    assert sched.generate("tiny", "hi", options={"num_predict": 3}).result()["done"]


def test_num_ctx_clamped_to_the_trained_context(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    sched.load("tiny", options={"num_ctx": 10**9})
    [row] = sched.ps()
    assert row["context_length"] == 2048  # the tiny model's trained context
    sched.load("tiny", options={"num_ctx": -5})
    assert sched.ps()[0]["context_length"] == 4


def test_num_predict_clamped() -> None:
    assert RequestOptions.from_options({"num_predict": 10**15}).num_predict == MAX_PREDICT
    assert RequestOptions.from_options({"num_predict": -7}).num_predict == -1


def test_gpu_usage_parsing_and_sampler_cache() -> None:
    text = "0, 1024, 81920, 37\n1, 0, 81920, [N/A]\ngarbage\n"
    assert parse_gpu_usage(text) == [
        {"index": 0, "used": 1024 << 20, "total": 81920 << 20, "utilization": 0.37},
        {"index": 1, "used": 0, "total": 81920 << 20, "utilization": 0.0}]
    calls: list[list[str]] = []

    def run(cmd: list[str]) -> str:
        calls.append(list(cmd))
        return text

    sampler = GpuSampler(True, ttl=60, run=run)
    assert sampler.sample()[0]["utilization"] == 0.37
    sampler.sample()
    assert len(calls) == 1 and "--format=csv,noheader,nounits" in calls[0]
    assert GpuSampler(False, run=run).sample() == []


def test_gpu_sampler_without_blocking_answers_the_last_figures_and_refreshes_behind() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def slow(cmd: list[str]) -> str:
        calls.append(1)
        gate.wait(10)  # nvidia-smi taking its time
        return "0, 2048, 81920, 50\n"

    sampler = GpuSampler(True, ttl=60, run=slow)
    start = time.monotonic()
    assert sampler.sample(block=False) == [] and sampler.sample(block=False) == []  # nothing yet, no wait
    assert time.monotonic() - start < 1
    gate.set()
    assert wait_for(lambda: sampler.sample(block=False) == [
        {"index": 0, "used": 2048 << 20, "total": 81920 << 20, "utilization": 0.5}], 5)
    assert len(calls) == 1  # one refresh for both calls, and none while the figures are fresh


def test_summarize_totals() -> None:
    rows = [{"name": "a", "running": 2, "waiting": 1, "kv_used": 100, "n_ctx": 400},
            {"name": "b", "running": 1, "waiting": 0, "kv_used": 0, "n_ctx": 100}]
    st = summarize(rows, pending_loads=2, queue_capacity=9)
    assert (st["running"], st["waiting"], st["kv_cache_usage"]) == (3, 3, 0.2)


def test_a_scrape_waits_for_idle_runners_but_not_for_busy_ones(make_scheduler: Callable[..., Scheduler]) -> None:
    """scrape_stats: idle, the runners' own answer (every finished request counted); busy, the last answer
    once the wait is over, even from a runner that does not answer at all (stopped here), and a fresh
    one again once it does."""
    sched = make_scheduler(context_length=2048)
    sched.generate("tiny", "warm up", options={"num_predict": 3}).result()
    assert sched.scrape_waits()  # no answer yet to fall back on
    idle = sched.scrape_stats()
    assert idle["models"] == sched.stats()["models"] and idle["running"] == 0
    [row] = idle["models"]
    assert row["prompt_cache"]["kv"]["misses"] >= 1
    stream = sched.generate("tiny", "go on and on", options=LONG)
    next(stream)
    pid = sched._models["tiny"].runner.pid  # type: ignore[union-attr]
    assert not sched.scrape_waits()  # busy, with an answer to fall back on: the worker's loop may scrape
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        busy = sched.scrape_stats(busy_wait=0.2)
        assert time.monotonic() - start < 2 and busy["models"] == idle["models"]  # the last answer
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_for(lambda: sched.scrape_stats(busy_wait=0.2)["running"] == 1, 10)  # fresh again
    stream.cancel()
    stream.result()
    assert wait_for(lambda: sched.scrape_stats()["running"] == 0, 10)
    assert sched.scrape_waits()  # idle: a scrape waits for the runners' own answer
    os.kill(pid, signal.SIGSTOP)  # ... unless it must not (the HTTP worker's event loop): then the last one
    try:
        start = time.monotonic()
        assert sched.scrape_stats(block=False)["running"] == 0 and time.monotonic() - start < 1
    finally:
        os.kill(pid, signal.SIGCONT)
