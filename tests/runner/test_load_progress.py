"""Load progress through the scheduler: the runner reports each percent of the weights, streams that ask see it.

The runners here sleep at each report (``load_pause``, a test hook that says what it does), so a load lasts
long enough to be watched from another thread deterministically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from power.errors import ModelNotFound
from power.runner import Scheduler
from tests.runner.procs import wait_for

PAUSE = 0.05


def split(stream: Any) -> tuple[list[dict[str, int]], list[dict[str, Any]]]:
    """The stream's load items and its output chunks, checking that no load item follows output."""
    loads: list[dict[str, int]] = []
    chunks: list[dict[str, Any]] = []
    for item in stream:
        if "load" in item:
            assert not chunks, "load progress after output"
            assert item["text"] == "" and item["tokens"] == []
            loads.append(item["load"])
        else:
            chunks.append(item)
    return loads, chunks


def assert_rises_to_total(loads: list[dict[str, int]]) -> None:
    assert len(loads) >= 3
    total = loads[0]["total"]
    done = [p["completed"] for p in loads]
    assert all(p["total"] == total for p in loads) and total > 0
    assert done == sorted(set(done)), "completed must rise strictly"
    assert done[0] < total and done[-1] == total
    assert len(loads) <= 102  # one report a percent at most, plus the first and the last


def test_progress_only_when_asked_then_the_answer(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(kwargs={"load_pause": PAUSE})
    loads, chunks = split(sched.generate("tiny", "hello", options={"num_predict": 4}, load_progress=True))
    assert_rises_to_total(loads)
    assert chunks[-1]["done"] and len([t for c in chunks for t in c["tokens"]]) == 4
    assert chunks[-1]["load_duration"] > 0
    # Loaded now: nothing to report, even when asked.
    loads, chunks = split(sched.generate("tiny", "hello", options={"num_predict": 2}, load_progress=True))
    assert loads == [] and chunks[-1]["done"]
    # Not asked: a stream that has to load sees only output, as before.
    loads, chunks = split(sched.generate("other", "hello", options={"num_predict": 2}))
    assert loads == [] and chunks[-1]["done"] and chunks[-1]["load_duration"] > 0


def test_ps_shows_a_load_in_progress_and_waiters_share_it(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(kwargs={"load_pause": PAUSE})
    got: dict[int, tuple[list[dict[str, int]], list[dict[str, Any]]]] = {}

    def ask(i: int) -> None:
        got[i] = split(sched.generate("tiny", f"hi {i}", options={"num_predict": 3}, load_progress=True))

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    rows: list[dict[str, Any]] = []
    assert wait_for(lambda: bool(rows.extend(r for r in sched.ps() if r.get("status") == "loading model"
                                             and 0 < r["completed"] < r["total"]) or rows), timeout=30)
    row = rows[0]
    assert row["name"] == "tiny" and row["total"] > 0 and row["pid"] > 0 and "expires_at" in row
    second = threading.Thread(target=ask, args=(1,))  # joins the load under way: its progress, not a new one
    second.start()
    seen = [row["completed"]]
    while first.is_alive():
        now = [r for r in sched.ps() if r["name"] == "tiny"]
        if now and "status" in now[0]:
            seen.append(now[0]["completed"])
        time.sleep(PAUSE / 2)
    first.join()
    second.join()
    assert seen == sorted(seen)
    [done] = sched.ps()
    assert "status" not in done and "completed" not in done  # loaded: the row is as it always was
    for loads, chunks in got.values():
        assert loads[-1]["completed"] == loads[-1]["total"] and chunks[-1]["done"]
    assert_rises_to_total(got[0][0])
    assert got[1][0][0]["completed"] > 0  # the late one starts where the load was


def test_errors_before_any_progress_keep_their_type(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(kwargs={"load_pause": PAUSE})
    with pytest.raises(ModelNotFound):
        sched.generate("nope", "hi", load_progress=True)


def test_a_load_that_fails_after_progress_ends_the_stream_with_its_error(
        make_scheduler: Callable[..., Scheduler]) -> None:
    from power.errors import PowerError

    sched = make_scheduler(load_timeout=1.0, kwargs={"load_pause": 0.3})
    stream = sched.generate("tiny", "hi", options={"num_predict": 2}, load_progress=True)
    seen = []
    with pytest.raises(PowerError, match="timed out waiting for the model to load"):
        for item in stream:
            seen.append(item["load"])
    assert seen and seen[-1]["completed"] < seen[-1]["total"]  # it never got to the end
    assert sched.ps() == []


def test_the_runner_reports_once_a_percent() -> None:
    from power.runner.process import LoadProgress

    sent: list[dict[str, Any]] = []

    class Outbox:
        def send(self, msg: dict[str, Any]) -> None:
            sent.append(msg)

    report = LoadProgress(Outbox())  # type: ignore[arg-type]
    assert all(report(f) for f in (0.0, 0.001, 0.009, 0.01, 0.013, 0.5, 0.5, 0.49, 0.999, 1.0, 1.0))
    assert [m["progress"] for m in sent] == [0.0, 0.01, 0.5, 0.99, 1.0]
    assert all(m["op"] == "progress" for m in sent)
