"""The exact text Ollama prints: sizes, ages, Go durations, tables, ps columns, timings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from power.cli.progress import bar_line
from power.cli.render import (
    WordWrap, go_duration, human_bytes, human_duration, human_number, human_time, list_rows,
    metrics_summary, parse_time, processor, ps_rows, table, until,
)

NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("size, text", [
    (0, "0 B"), (999, "999 B"), (1000, "1 KB"), (1500, "1.5 KB"), (439_000, "439 KB"),
    (4_700_000_000, "4.7 GB"), (4_000_000_000, "4 GB"), (12_345_678, "12 MB"), (2_019_000_000, "2.0 GB"),
    (1_300_000_000_000, "1.3 TB"),
])
def test_human_bytes_is_decimal(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize("n, text", [
    (8_000_000_000, "8B"), (3_210_000_000, "3.2B"), (137_000_000, "137M"), (268_100_000, "268.10M"),
    (108_000, "108K"), (999, "999"),
])
def test_human_number(n: int, text: str) -> None:
    assert human_number(n) == text


@pytest.mark.parametrize("seconds, text", [
    (0.2, "Less than a second"), (1, "1 second"), (42, "42 seconds"), (61, "About a minute"),
    (4 * 60 + 5, "4 minutes"), (3600, "About an hour"), (5 * 3600, "5 hours"), (3 * 86400, "3 days"),
    (15 * 86400, "2 weeks"), (70 * 86400, "2 months"), (800 * 86400, "2 years"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_time_past_future_forever_and_zero() -> None:
    assert human_time(NOW - timedelta(days=15), now=NOW) == "2 weeks ago"
    assert human_time(NOW + timedelta(minutes=4, seconds=30), now=NOW) == "4 minutes from now"
    assert human_time(NOW + timedelta(days=365 * 292), now=NOW) == "Forever"
    assert human_time(None) == "Never"


@pytest.mark.parametrize("nanos, text", [
    (0, "0s"), (999, "999ns"), (1500, "1.5µs"), (410_826_000, "410.826ms"), (1_000_000, "1ms"),
    (2_299_065_293, "2.299065293s"), (60_000_000_000, "1m0s"), (3_661_500_000_000, "1h1m1.5s"),
])
def test_go_duration(nanos: int, text: str) -> None:
    assert go_duration(nanos) == text


def test_parse_time_accepts_nanoseconds_and_offsets() -> None:
    dt = parse_time("2025-07-07T20:22:19.184789123Z")
    assert dt == datetime(2025, 7, 7, 20, 22, 19, 184789, tzinfo=timezone.utc)
    assert parse_time("2025-07-07T22:22:19+02:00") == datetime(2025, 7, 7, 20, 22, 19, tzinfo=timezone.utc)
    assert parse_time("garbage") is None and parse_time(None) is None


def test_table_is_borderless_left_aligned_with_four_spaces() -> None:
    text = table(["NAME", "ID"], [["llama3.2:latest", "a80c4f17acd5"], ["x:1", "b"]])
    assert text == ("NAME               ID\n"
                    "llama3.2:latest    a80c4f17acd5\n"
                    "x:1                b\n")


@pytest.mark.parametrize("size, vram, text", [
    (100, 0, "100% CPU"), (100, 100, "100% GPU"), (100, 52, "48%/52% CPU/GPU"), (0, 5, "Unknown"),
])
def test_processor(size: int, vram: int, text: str) -> None:
    assert processor(size, vram) == text


def test_until_stopping_when_expired() -> None:
    assert until(NOW - timedelta(seconds=1), now=NOW) == "Stopping..."
    assert until(NOW + timedelta(minutes=5, seconds=1), now=NOW) == "5 minutes from now"


def test_list_rows_filter_by_prefix_and_short_id() -> None:
    models = [
        {"name": "llama3.2:latest", "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
         "size": 2_019_393_189, "modified_at": (NOW - timedelta(days=15)).isoformat()},
        {"name": "Qwen:7b", "digest": "sha256:" + "b" * 64, "size": 1000, "modified_at": NOW.isoformat()},
    ]
    assert list_rows(models, now=NOW) == [
        ["llama3.2:latest", "a80c4f17acd5", "2.0 GB", "2 weeks ago"],
        ["Qwen:7b", "bbbbbbbbbbbb", "1 KB", "Less than a second ago"],
    ]
    assert [r[0] for r in list_rows(models, "qw", now=NOW)] == ["Qwen:7b"]


def test_ps_rows() -> None:
    row = ps_rows([{"name": "tiny:latest", "digest": "c" * 64, "size": 73_000_000, "size_vram": 0,
                    "context_length": 4096, "expires_at": (NOW + timedelta(minutes=4, seconds=59)).isoformat()}],
                  now=NOW)
    assert row == [["tiny:latest", "cccccccccccc", "73 MB", "100% CPU", "4096", "4 minutes from now"]]
    loading = ps_rows([{"name": "big:latest", "digest": "d" * 64, "size": 9_000_000_000, "size_vram": 0,
                        "context_length": 4096, "expires_at": NOW.isoformat(), "status": "loading model",
                        "completed": 450, "total": 1000}], now=NOW)
    assert loading[0][-1] == "loading 45%"


def test_metrics_summary_lines() -> None:
    text = metrics_summary({"total_duration": 2_299_065_293, "load_duration": 691_823_210,
                            "prompt_eval_count": 61, "prompt_eval_duration": 410_826_000,
                            "eval_count": 451, "eval_duration": 1_170_660_000})
    assert text.splitlines() == [
        "total duration:       2.299065293s",
        "load duration:        691.82321ms",
        "prompt eval count:    61 token(s)",
        "prompt eval duration: 410.826ms",
        "prompt eval rate:     148.48 tokens/s",
        "eval count:           451 token(s)",
        "eval duration:        1.17066s",
        "eval rate:            385.25 tokens/s",
    ]
    assert metrics_summary({}) == ""


def test_word_wrap_moves_whole_words_across_chunks() -> None:
    w = WordWrap(12)
    out = "".join(w.feed(piece) for piece in ["hello wo", "rld and ", "more words\nnext"]) + w.flush()
    assert [line.rstrip() for line in out.split("\n")] == ["hello world", "and more", "words", "next"]
    assert WordWrap(0).feed("no wrap at all") == "no wrap at all"


def test_bar_line_shape() -> None:
    line = bar_line("pulling 8eeb52dfb3bb", 900_000_000, 2_000_000_000, 100, rate=35_000_000, eta=20)
    assert line.startswith("pulling 8eeb52dfb3bb:  45% ▕")
    assert "▏ 900 MB/2 GB" in line and "35 MB/s" in line and line.endswith("20s")
    assert len(line) <= 100
    done = bar_line("pulling 8eeb52dfb3bb", 5, 5, 80, done=True)
    assert done.startswith("pulling 8eeb52dfb3bb: 100% ▕█") and done.endswith("▏ 5 B")


@pytest.mark.parametrize("tty", [True, False])
def test_run_draws_a_load_bar_on_stderr_then_the_answer(tty: bool) -> None:
    import io

    from power.cli.progress import ProgressView
    from power.cli.run import AnswerPrinter, stream_answer

    out, err = io.StringIO(), io.StringIO()
    total = 2_000_000
    chunks = [{"model": "m", "response": "", "done": False, "status": "loading model", "completed": c,
               "total": total} for c in (0, 500_000, 1_500_000, total)]
    chunks += [{"model": "m", "response": "Hello", "done": False}, {"model": "m", "response": " there", "done": False},
               {"model": "m", "response": "", "done": True, "done_reason": "stop"}]
    printer = AnswerPrinter(out, tty=False, wordwrap=False, hide_thinking=False,
                            progress=ProgressView(err, tty=tty, width=80))
    content, _, final = stream_answer(chunks, printer)
    assert content == "Hello there" and out.getvalue() == "Hello there\n" and final["done"]
    drawn = err.getvalue()
    assert "loading model: 100% ▕" in drawn and drawn.rstrip().endswith("▏ 2 MB" + ("\x1b[K" if tty else ""))
    if tty:
        assert "loading model:   0% ▕" in drawn and "\x1b[1A" in drawn  # redrawn in place as it rises
    else:
        assert drawn.count("\n") == 1  # one finished bar line, not one per report
    quiet = io.StringIO()
    stream_answer(chunks[4:], AnswerPrinter(io.StringIO(), tty=False, wordwrap=False, hide_thinking=False,
                                            progress=ProgressView(quiet, tty=tty, width=80)))
    assert quiet.getvalue() == ""  # no load, no bar
