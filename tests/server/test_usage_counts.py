"""Usage counts are honest: the whole prompt is counted on every API, the reused part reported apart.

Ollama counts ``prompt_eval_count`` as the whole prompt (llama-server's ``cache_n + prompt_n``); before this
the same prompt sent four times reported fewer tokens each time as the KV cache held more of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from power.server.usage import UsageStore
from tests.server.realapp import RealApp, real_app
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_llama

MESSAGES = [{"role": "system", "content": "You are a terse assistant who answers in one word."},
            {"role": "user", "content": "Name a colour that the sky can have at dusk, please."}]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApp]:
    home = tmp_path_factory.mktemp("usage-counts")
    model = write_llama(home / "tiny.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    usage = UsageStore(home / "usage.db", {"*": {"input": 1.0, "cached_input": 0.25, "output": 2.0}})
    yield from real_app(home, {"tiny": model}, usage=usage)


def _native(real: RealApp) -> dict:
    r = real.client.simulate_post("/api/chat", json={"model": "tiny", "messages": MESSAGES, "stream": False,
                                                     "options": {"num_predict": 3, "temperature": 0}})
    assert r.status_code == 200, r.text
    return r.json


def test_the_same_prompt_counts_the_same_each_time_on_every_api(real: RealApp) -> None:
    counts = [_native(real)["prompt_eval_count"] for _ in range(4)]
    assert len(set(counts)) == 1 and counts[0] > 20, counts
    whole = counts[0]
    client = real.openai()
    out = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, temperature=0)
    assert out.usage.prompt_tokens == whole
    # everything but the last prompt token was in the KV cache from the native requests
    assert out.usage.prompt_tokens_details.cached_tokens == whole - 1
    assert out.usage.total_tokens == whole + out.usage.completion_tokens
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    last = [c for c in stream][-1]
    assert last.usage.prompt_tokens == whole and last.usage.prompt_tokens_details.cached_tokens == whole - 1


def test_usage_database_keeps_whole_and_cached_counts_and_prices_them_apart(real: RealApp) -> None:
    before = real.client.simulate_get("/v1/usage").json["totals"]
    a = _native(real)
    b = _native(real)
    after = real.client.simulate_get("/v1/usage").json["totals"]
    assert after["requests"] - before["requests"] == 2
    assert after["prompt_tokens"] - before["prompt_tokens"] == a["prompt_eval_count"] + b["prompt_eval_count"]
    cached = after["cached_tokens"] - before["cached_tokens"]
    assert cached >= a["prompt_eval_count"] - 1  # the second request reused all but its last token
    completion = after["completion_tokens"] - before["completion_tokens"]
    prompt = after["prompt_tokens"] - before["prompt_tokens"]
    expected = ((prompt - cached) * 1.0 + cached * 0.25 + completion * 2.0) / 1e6
    assert after["cost"] - before["cost"] == pytest.approx(expected, rel=1e-6)


def test_an_old_usage_database_gains_the_cached_column(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "usage.db"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE usage (id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT,
        endpoint TEXT NOT NULL, model TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL, total_duration_ns INTEGER NOT NULL, load_duration_ns INTEGER NOT NULL,
        prompt_eval_duration_ns INTEGER NOT NULL, eval_duration_ns INTEGER NOT NULL, cost REAL NOT NULL);
        INSERT INTO usage VALUES (1, 1.0, 'r', '/api/chat', 'tiny:latest', 10, 2, 0, 0, 0, 0, 0.0);""")
    db.commit()
    db.close()
    store = UsageStore(path)
    totals = store.query()["totals"]
    assert totals["prompt_tokens"] == 10 and totals["cached_tokens"] == 0
