"""The scheduler over real runner processes on tiny models."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

from power.errors import Busy, InvalidRequest, ModelNotFound, ShuttingDown
from power.runner import RunnerCrashed, Scheduler
from tests.runner.procs import pid_alive, wait_for

LONG = {"num_predict": 100000, "temperature": 0}


def pid_of(sched: Scheduler, name: str) -> int:
    return next(r["pid"] for r in sched.ps() if r["name"] == name)


def test_autoload_reports_load_duration_once(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    first = sched.generate("tiny", "hello", options={"num_predict": 4}).result()
    assert first["done"] and first["done_reason"] == "length" and len(first["tokens"]) == 4
    assert first["load_duration"] > 0 and first["eval_count"] == 4 and first["prompt_eval_count"] > 0
    again = sched.generate("tiny", "hello", options={"num_predict": 4}).result()
    assert again["load_duration"] == 0
    [row] = sched.ps()
    assert row["name"] == "tiny" and row["context_length"] == 512 and row["processor"] == "100% CPU"
    assert row["size"] > 0 and row["size_vram"] == 0 and row["digest"].startswith("sha256:")
    assert pid_alive(row["pid"])


def test_unknown_model_raises_before_streaming(make_scheduler: Callable[..., Scheduler]) -> None:
    with pytest.raises(ModelNotFound):
        make_scheduler().generate("nope", "hi")


def test_runner_errors_raise_before_the_first_chunk(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    with pytest.raises(InvalidRequest):
        sched.generate("tiny", "word " * 600, options={"num_predict": 2}, truncate=False)
    with pytest.raises(InvalidRequest):
        sched.generate("embed", "hi")  # an embedding model does not generate
    assert sched.generate("tiny", "hi", options={"num_predict": 2}).result()["done"]


def test_parallel_requests_all_complete(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    sched.load("tiny")
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results.append(sched.generate("tiny", f"prompt {i}", options={"num_predict": 8 + i}).result())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(len(r["tokens"]) for r in results) == [8, 9, 10, 11, 12, 13]
    assert all(r["done_reason"] == "length" for r in results)


def test_queue_overflow_is_busy(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(num_parallel=1, max_queue=1)
    running = sched.generate("tiny", "a", options=LONG)
    holder: dict[str, Any] = {}
    t = threading.Thread(target=lambda: holder.update(s=sched.generate("tiny", "b", options={"num_predict": 3})))
    t.start()
    assert wait_for(lambda: sched.ps()[0]["in_flight"] == 2)
    with pytest.raises(Busy):
        sched.generate("tiny", "c", options={"num_predict": 3})
    running.cancel()
    t.join(30)
    assert holder["s"].result()["done_reason"] == "length"
    assert running.result()["done_reason"] == "cancel"


def test_keep_alive_expiry_ends_the_runner(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    sched.generate("tiny", "hi", options={"num_predict": 2}, keep_alive=0.5).result()
    pid = pid_of(sched, "tiny")
    assert wait_for(lambda: not pid_alive(pid), 10)
    assert sched.ps() == []


def test_keep_alive_zero_unloads_after_the_request(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    stream = sched.generate("tiny", "hi", options={"num_predict": 30}, keep_alive="0")
    pid = pid_of(sched, "tiny")
    assert pid_alive(pid)
    assert stream.result()["done_reason"] == "length"  # the request itself is not cut short
    assert wait_for(lambda: not pid_alive(pid), 10)


def test_keep_alive_forever_and_renewal(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    sched.load("tiny", keep_alive=-1)
    assert sched.ps()[0]["expires_at"].year > 2200
    sched.load("tiny", keep_alive="1h")
    row = sched.ps()[0]
    assert 2000 < row["expires_at"].year < 2200
    with pytest.raises(InvalidRequest):
        sched.load("tiny", keep_alive="10")


def test_lru_eviction_with_one_loaded_model(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(max_loaded_models=1)
    sched.load("tiny")
    tiny_pid = pid_of(sched, "tiny")
    sched.generate("other", "hi", options={"num_predict": 2}).result()
    assert [r["name"] for r in sched.ps()] == ["other"]
    assert wait_for(lambda: not pid_alive(tiny_pid), 10)


def test_lru_evicts_the_least_recently_used(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(max_loaded_models=2)
    sched.load("tiny")
    sched.load("other")
    sched.load("tiny")  # tiny is now the most recently used
    sched.load("third")
    assert sorted(r["name"] for r in sched.ps()) == ["third", "tiny"]


def test_busy_model_is_not_evicted_the_load_waits(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(max_loaded_models=1)
    running = sched.generate("tiny", "a", options={"num_predict": 150})
    got: dict[str, Any] = {}
    t = threading.Thread(target=lambda: got.update(r=sched.generate("other", "b", options={"num_predict": 2})
                                                   .result()))
    t.start()
    first = running.result()
    t.join(60)
    assert first["done_reason"] == "length" and len(first["tokens"]) == 150
    assert got["r"]["done"] and [r["name"] for r in sched.ps()] == ["other"]


def test_changed_load_options_reload_the_runner(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    sched.load("tiny")
    pid = pid_of(sched, "tiny")
    sched.generate("tiny", "hi", options={"num_predict": 2, "temperature": 0.1}).result()
    assert pid_of(sched, "tiny") == pid  # sampling options do not reload
    sched.generate("tiny", "hi", options={"num_predict": 2, "num_ctx": 256}).result()
    assert pid_of(sched, "tiny") != pid and sched.ps()[0]["context_length"] == 256
    assert wait_for(lambda: not pid_alive(pid), 10)
    assert sched.tokenize("tiny", "hi")  # tokenizing takes whatever is loaded
    assert sched.ps()[0]["context_length"] == 256


def test_sigkill_mid_stream_then_a_fresh_runner(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    stream = sched.generate("tiny", "hi", options=LONG)
    next(stream)
    pid = pid_of(sched, "tiny")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RunnerCrashed, match="unexpectedly stopped"):
        for _ in stream:
            pass
    assert wait_for(lambda: sched.ps() == [], 5)
    again = sched.generate("tiny", "hi", options={"num_predict": 3}).result()
    assert again["done_reason"] == "length" and again["load_duration"] > 0
    assert pid_of(sched, "tiny") != pid


def test_unload_mid_stream_ends_with_unload(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    stream = sched.generate("tiny", "hi", options=LONG)
    next(stream)
    pid = pid_of(sched, "tiny")
    assert sched.unload("tiny") is True
    assert stream.result()["done_reason"] == "unload"
    assert not pid_alive(pid) or wait_for(lambda: not pid_alive(pid), 5)
    assert sched.unload("tiny") is False and sched.ps() == []


def test_cancel_frees_the_sequence_while_others_continue(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    doomed = sched.generate("tiny", "one", options=LONG)
    survivor = sched.generate("tiny", "two", options={"num_predict": 200})
    next(doomed)
    doomed.cancel()
    assert doomed.result()["done_reason"] == "cancel"
    third = sched.generate("tiny", "three", options={"num_predict": 5})  # gets the freed sequence
    assert third.result()["done_reason"] == "length"
    out = survivor.result()
    assert out["done_reason"] == "length" and len(out["tokens"]) == 200
    assert wait_for(lambda: sched.stats("tiny")["n_active"] == 0, 5)


def test_embed_and_tokens(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    res = sched.embed("embed", ["hello", "world"])
    assert len(res["embeddings"]) == 2 and res["load_duration"] > 0 and res["prompt_eval_count"] > 0
    assert abs(sum(x * x for x in res["embeddings"][0]) - 1.0) < 1e-3
    assert sched.ps()[0]["num_parallel"] == 1  # embedding models get one slot
    toks = sched.tokenize("tiny", "hello world", add_special=False)
    assert sched.detokenize("tiny", toks) == "hello world"


def test_load_failure_is_typed_and_leaves_nothing(make_scheduler: Callable[..., Scheduler],
                                                  tmp_path: Any, resolve: Any) -> None:
    from power.errors import PowerError
    from power.runner import ModelSpec

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    sched = make_scheduler(resolve=lambda name: ModelSpec(name, str(bad)) if name == "bad" else resolve(name))
    with pytest.raises(PowerError):
        sched.generate("bad", "hi")
    assert sched.ps() == []
    assert sched.generate("tiny", "hi", options={"num_predict": 2}).result()["done"]


def test_close_lets_streams_finish_then_ends_runners(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    stream = sched.generate("tiny", "hi", options={"num_predict": 60})
    pid = pid_of(sched, "tiny")
    sched.close(deadline=20)
    out = stream.result()
    assert out["done_reason"] == "length" and len(out["tokens"]) == 60
    assert wait_for(lambda: not pid_alive(pid), 5)
    with pytest.raises(ShuttingDown):
        sched.generate("tiny", "hi")


def test_close_deadline_ends_long_streams_with_an_error(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    stream = sched.generate("tiny", "hi", options=LONG)
    pid = pid_of(sched, "tiny")
    sched.close(deadline=0.3)
    with pytest.raises(ShuttingDown, match="shutting down") as info:
        stream.result()
    assert info.value.status == 503  # nothing of it reached a client: a balancer may send it elsewhere
    assert wait_for(lambda: not pid_alive(pid), 5)
    with pytest.raises(ShuttingDown):  # and no new work is taken
        sched.generate("tiny", "hi", options=LONG)


def test_reference_sampling_is_a_setting_that_reaches_the_runner(make_scheduler: Callable[..., Scheduler],
                                                                  tmp_path) -> None:
    """A3S_POWER_REFERENCE_SAMPLING (TOML reference_sampling) goes through the load options to the runner's
    engine (LoadOptions, sent to the runner whole), not through the environment; a runner sampling with it
    gives the seeded tokens a runner without it gives."""
    from power.config import load_settings

    assert load_settings({"A3S_POWER_HOME": str(tmp_path), "A3S_POWER_REFERENCE_SAMPLING": "1"}).reference_sampling
    assert not load_settings({"A3S_POWER_HOME": str(tmp_path), "A3S_POWER_REFERENCE_SAMPLING": "0"}).reference_sampling
    opts = {"num_predict": 12, "seed": 5, "temperature": 1.0, "top_k": 8, "repeat_penalty": 1.3}
    outs = []
    for reference in (False, True):
        sched = make_scheduler(reference_sampling=reference)
        outs.append(sched.generate("tiny", "hello there", options=opts).result()["tokens"])
        _, _, load, _ = sched._prepare("tiny", opts)
        assert load.reference_sampling is reference
    assert outs[0] == outs[1]


def test_level_batch_is_a_setting_that_reaches_the_runner(make_scheduler: Callable[..., Scheduler]) -> None:
    """A3S_POWER_LEVEL_BATCH (TOML level_batch) goes through the load options, as reference_sampling does."""
    for level in (True, False):
        _, _, load, _ = make_scheduler(level_batch=level)._prepare("tiny", {})
        assert load.level_batch is level
