"""Load progress on /api/generate and /api/chat (opt-in ``load_progress``) and /api/ps, over the real engine.

The runners sleep at each load-progress report (``load_pause``), so a load can be watched from another thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from power.api.schemas import CHAT_RESPONSE, GENERATE_RESPONSE, PS
from tests.server.realapp import RealApp, real_app
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_llama

ASK = [{"role": "user", "content": "hello"}]


@pytest.fixture
def real(tmp_path: Path) -> Iterator[RealApp]:
    models = {name: write_llama(tmp_path / f"{name}.gguf", seed=i, n_layer=4, name=name,
                                chat_template=CHATML_TOOLS_TEMPLATE)
              for i, name in enumerate(("tiny", "other", "third"))}
    yield from real_app(tmp_path / "home", models, context_length=512, load_pause=0.04)


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def loading(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in out if x.get("status") == "loading model"]


def check_progress(out: list[dict[str, Any]], schema: dict[str, Any]) -> None:
    progress = loading(out)
    assert len(progress) >= 3 and out[:len(progress)] == progress  # all of them before any answer
    done = [p["completed"] for p in progress]
    total = progress[0]["total"]
    assert done == sorted(set(done)) and done[0] < total and done[-1] == total
    assert all(p["total"] == total and p["done"] is False for p in progress)
    for line in out:
        jsonschema.validate(line, schema)
    assert out[-1]["done"] is True and len(out) > len(progress) + 1


def test_chat_and_generate_stream_progress_only_when_asked(real: RealApp) -> None:
    c = real.client
    r = c.simulate_post("/api/chat", json={"model": "tiny", "messages": ASK, "load_progress": True,
                                           "options": {"num_predict": 4}})
    assert r.status_code == 200
    out = lines(r.text)
    check_progress(out, CHAT_RESPONSE)
    first = loading(out)[0]
    assert first["model"] == "tiny:latest" and first["message"] == {"role": "assistant", "content": ""}
    assert out[-1]["load_duration"] > 0

    r = c.simulate_post("/api/generate", json={"model": "other", "prompt": "hi", "load_progress": True,
                                               "options": {"num_predict": 4}})
    out = lines(r.text)
    check_progress(out, GENERATE_RESPONSE)
    assert loading(out)[0]["response"] == ""

    # Unchanged clients see nothing new: no opt-in, no progress lines, though the model loads.
    out = lines(c.simulate_post("/api/generate", json={"model": "third", "prompt": "hi",
                                                       "options": {"num_predict": 3}}).text)
    assert loading(out) == [] and out[-1]["done"] and out[-1]["load_duration"] > 0
    # A loaded model has nothing to report; nor has an answer that is not streamed.
    out = lines(c.simulate_post("/api/chat", json={"model": "tiny", "messages": ASK, "load_progress": True,
                                                   "options": {"num_predict": 3}}).text)
    assert loading(out) == [] and out[-1]["done"]
    real.scheduler.unload("tiny:latest")
    whole = c.simulate_post("/api/chat", json={"model": "tiny", "messages": ASK, "load_progress": True,
                                               "stream": False, "options": {"num_predict": 3}}).json
    assert "status" not in whole and whole["done"] is True


def test_ps_shows_the_model_while_it_loads(real: RealApp) -> None:
    c = real.client
    result: dict[str, Any] = {}

    def ask() -> None:
        result["r"] = c.simulate_post("/api/generate", json={"model": "tiny", "prompt": "hi", "load_progress": True,
                                                             "options": {"num_predict": 2}})

    t = threading.Thread(target=ask)
    t.start()
    seen: list[dict[str, Any]] = []
    while t.is_alive():
        body = c.simulate_get("/api/ps").json
        jsonschema.validate(body, PS)
        seen += [m for m in body["models"] if m.get("status") == "loading model"]
        time.sleep(0.02)
    t.join()
    assert seen, "the load was never seen in /api/ps"
    assert all(m["name"] == "tiny:latest" and m["total"] == seen[0]["total"] for m in seen)
    done = [m["completed"] for m in seen]
    assert done == sorted(done) and any(0 < d < seen[0]["total"] for d in done)
    [row] = c.simulate_get("/api/ps").json["models"]
    assert "status" not in row and row["name"] == "tiny:latest"
    check_progress(lines(result["r"].text), GENERATE_RESPONSE)


def test_a_load_request_streams_its_progress(real: RealApp) -> None:
    c = real.client
    body = {"model": "tiny", "messages": [], "load_progress": True}
    out = lines(c.simulate_post("/api/chat", json=body).text)
    progress = loading(out)
    assert len(progress) >= 3 and out[:-1] == progress
    assert progress[-1]["completed"] == progress[-1]["total"] and progress[0]["completed"] < progress[0]["total"]
    assert out[-1] == {"model": "tiny:latest", "created_at": out[-1]["created_at"],
                       "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "load"}
    assert [m["name"] for m in c.simulate_get("/api/ps").json["models"]] == ["tiny:latest"]
    again = lines(c.simulate_post("/api/generate", json={"model": "tiny", "load_progress": True}).text)
    assert [x["done_reason"] for x in again] == ["load"] and again[0]["response"] == ""
    missing = c.simulate_post("/api/chat", json={**body, "model": "ghost"})
    assert missing.status_code == 404
    # Not asked: one JSON object, as before.
    plain = c.simulate_post("/api/generate", json={"model": "other"})
    assert plain.json["done_reason"] == "load" and plain.headers["content-type"].startswith("application/json")


def test_the_ollama_client_asks_through_options_and_reads_the_progress(real: RealApp) -> None:
    import httpx
    import ollama

    client = ollama.Client(host="http://127.0.0.1:11434", transport=httpx.WSGITransport(app=real.app),
                           headers={"Host": "127.0.0.1:11434"})
    parts = list(client.generate("tiny", "hello", stream=True, options={"load_progress": True, "num_predict": 4}))
    progress = [(p.completed, p.total) for p in parts if p.completed is not None]
    assert len(progress) >= 3 and progress[-1][0] == progress[-1][1]
    assert [c for c, _ in progress] == sorted({c for c, _ in progress})
    assert parts[-1].done and parts[-1].eval_count == 4
    assert "".join(p.response or "" for p in parts)  # the answer follows
    chat = list(client.chat("other", messages=ASK, stream=True, options={"load_progress": True, "num_predict": 3}))
    assert chat[0].done is False and chat[0].message.content == "" and chat[-1].done
    assert len(chat) > 3 + 1


def test_load_progress_must_be_a_boolean(real: RealApp) -> None:
    r = real.client.simulate_post("/api/chat", json={"model": "tiny", "messages": ASK, "load_progress": "yes"})
    assert r.status_code == 400 and "load_progress" in r.json["error"]
    r = real.client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "hi",
                                                         "options": {"load_progress": 1}})
    assert r.status_code == 400 and r.json == {"error": "options.load_progress must be true or false"}
