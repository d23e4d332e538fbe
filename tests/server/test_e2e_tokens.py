"""End to end on real gunicorn: tokenizing and reranking over real sockets while the official ollama client
streams a long generation, and the vocab runner's life (not a loaded model, gone with the server)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from power.store import ModelStore
from tests.server.conftest import add_model
from tests.server.test_e2e import gunicorn
from tests.tinymodels import write_bert_reranker, write_llama

ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")


def vocab_runners() -> list[int]:
    """Pids of live vocab runner processes (their command line names the module)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().split()[2]
            except OSError:
                continue
            if b"power.runner.vocabproc" in cmdline and state != "Z":
                pids.append(int(entry))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_tokens_and_rerank_answer_during_a_stream_and_the_vocab_runner_ends_with_the_server(tmp_path: Path) -> None:
    library = ModelStore(tmp_path / "models", noprune=True)
    add_model(library, "wide", write_llama(tmp_path / "wide.gguf", seed=2, n_embd=256, n_layer=4, n_ff=1024,
                                           n_head=8, n_head_kv=4, n_ctx_train=8192))
    add_model(library, "idle", write_llama(tmp_path / "idle.gguf", seed=3, name="idle"))
    add_model(library, "reranker", write_bert_reranker(tmp_path / "rr.gguf", seed=4))
    before = set(vocab_runners())
    with gunicorn(tmp_path, OLLAMA_CONTEXT_LENGTH="8192", OLLAMA_NUM_PARALLEL="1") as url:
        client = ollama.Client(host=url)
        http = httpx.Client(base_url=url, timeout=30)
        warm = http.post("/v1/rerank", json={"model": "reranker", "query": "q", "documents": ["warm"]})
        assert warm.status_code == 200  # loaded now: what follows is answered, not loaded
        stream = client.generate(model="wide", prompt="once upon a time", stream=True,
                                 options={"num_predict": 100000, "temperature": 0})
        assert not next(stream).done  # generating now, in the model's only slot
        started = time.monotonic()
        toks = http.post("/api/tokenize", json={"model": "wide", "content": "hello world"}).json()["tokens"]
        assert http.post("/detokenize", json={"model": "wide", "tokens": toks}).json()["content"] == "hello world"
        idle = http.post("/tokenize", json={"model": "idle", "content": "hello", "with_pieces": True}).json()
        assert "".join(p["piece"] for p in idle["tokens"]) == "hello"
        ranked = http.post("/v1/rerank", json={"model": "reranker", "query": "q", "documents": ["a", "b", "c"]})
        assert ranked.status_code == 200 and sorted(x["index"] for x in ranked.json()["results"]) == [0, 1, 2]
        took = time.monotonic() - started
        assert not next(stream).done, "the stream ended before the answers came"
        loaded = {m.model for m in client.ps().models}
        assert loaded == {"wide:latest", "reranker:latest"}  # "idle" was tokenized from its vocabulary only
        assert took < 20
        stream.close()
        mine = set(vocab_runners()) - before
        assert len(mine) == 1
    deadline = time.monotonic() + 20
    while mine & set(vocab_runners()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not mine & set(vocab_runners()), "the vocab runner outlived the server"
