"""Tokenizing through the scheduler: never a slot, never the queue, never a load (the vocab runner)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from power.errors import Busy, InvalidRequest, ModelNotFound
from power.native import load_vocab
from power.runner import Scheduler, Stream
from tests.runner.procs import pid_alive, wait_for

LONG = {"num_predict": 100000, "temperature": 0}


def vocab_pid(sched: Scheduler) -> int:
    runner = sched._vocab  # the scheduler's own process, which no listing shows
    assert runner is not None
    return runner.pid


def test_full_slots_and_queue_do_not_hold_up_tokenizing(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(max_queue=1)
    streams = [sched.generate("tiny", f"story {i}", options=LONG) for i in range(2)]  # both parallel slots
    queued: list[Stream] = []
    waiter = threading.Thread(target=lambda: queued.append(sched.generate("tiny", "queued", options=LONG)))
    try:
        for s in streams:
            assert not next(s).get("done")
        waiter.start()
        assert wait_for(lambda: sched.ps()[0]["waiting"] == 1, 10)
        with pytest.raises(Busy):  # slots and queue full
            sched.generate("tiny", "one more", options=LONG)
        toks = sched.tokenize("tiny", "hello world", add_special=False)
        assert sched.detokenize("tiny", toks) == "hello world"
        pieces = sched.tokenize("tiny", "hello world", add_special=False, pieces=True)
        assert [p["id"] for p in pieces] == toks and "".join(p["piece"] for p in pieces) == "hello world"
        assert not any(s.finished for s in streams) and not queued  # the third still waits for a slot
        assert sched._vocab is None  # the loaded runner answered: the vocab runner was never started
    finally:
        for s in streams:
            s.close()
        if waiter.ident is not None:
            waiter.join(30)
        for s in queued:
            s.close()


def test_models_that_are_not_loaded_stay_unloaded(make_scheduler: Callable[..., Scheduler],
                                                  models: dict[str, Path]) -> None:
    sched = make_scheduler(max_loaded_models=1)
    sched.load("other")
    [row] = sched.ps()
    for name in ("tiny", "third", "embed", "stopper"):
        vocab = load_vocab(models[name])
        try:
            want = vocab.tokenize("a b c", add_special=True, parse_special=True)
        finally:
            vocab.close()
        assert sched.tokenize(name, "a b c") == want
    assert sched.ps() == [row]  # nothing loaded, nothing evicted
    assert pid_alive(vocab_pid(sched))
    with pytest.raises(InvalidRequest, match="not in the model's vocabulary"):
        sched.detokenize("tiny", [10 ** 6])
    with pytest.raises(ModelNotFound):
        sched.tokenize("nope", "x")


def test_a_vocab_runner_that_dies_is_replaced_and_ends_with_the_scheduler(
        make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler()
    assert sched.tokenize("tiny", "x")
    pid = vocab_pid(sched)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: sched._vocab is not None and sched._vocab.closed, 10)
    assert sched.detokenize("tiny", sched.tokenize("tiny", "again", add_special=False)) == "again"
    fresh = vocab_pid(sched)
    assert fresh != pid and pid_alive(fresh) and sched.ps() == []
    sched.close(deadline=2.0)
    assert wait_for(lambda: not pid_alive(fresh), 10)
