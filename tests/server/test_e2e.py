"""End to end: real gunicorn, real store and runner, the official ollama and openai clients, a tiny model."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from power.store import ModelStore
from tests.server.conftest import add_model
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, png, write_llama, write_mmproj

ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gunicorn(home: Path, **env_extra: str) -> Iterator[str]:
    """Run the real server (gunicorn + runners) on a free loopback port over the store in ``home``."""
    port = _free_port()
    env = {**os.environ, "A3S_POWER_HOME": str(home), "OLLAMA_MODELS": str(home / "models"),
           "OLLAMA_HOST": f"127.0.0.1:{port}", **env_extra}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "power/server/gunicorn_conf.py",
                             "power.server.app:get_app()"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode() if proc.stdout else "gunicorn exited")
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("e2e-home")
    library = ModelStore(home / "models", noprune=True)
    add_model(library, "tiny", write_llama(home / "tiny.gguf", chat_template=CHATML_TOOLS_TEMPLATE))
    add_model(library, "embedder", write_llama(home / "embed.gguf", pooling=1, name="tiny-embed"))
    with gunicorn(home, OLLAMA_CONTEXT_LENGTH="512") as url:
        yield url


def test_ollama_client(server: str) -> None:
    client = ollama.Client(host=server)
    names = [m.model for m in client.list().models]
    assert "tiny:latest" in names
    shown = client.show("tiny")
    assert shown.modelinfo and "completion" in (shown.capabilities or [])
    out = client.generate(model="tiny", prompt="hello", options={"num_predict": 8, "seed": 1})
    assert out.done and out.done_reason in ("stop", "length") and out.eval_count
    pieces = list(client.generate(model="tiny", prompt="hello", stream=True, options={"num_predict": 8}))
    assert pieces[-1].done and pieces[-1].context
    chat = client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 8})
    assert chat.message.role == "assistant" and chat.done
    streamed = list(client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True,
                                options={"num_predict": 8}))
    assert streamed[-1].done and streamed[-1].done_reason in ("stop", "length")
    emb = client.embed(model="embedder", input=["a", "b"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 64
    assert any(m.model == "tiny:latest" for m in client.ps().models)
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="missing", prompt="x")
    assert err.value.status_code == 404


def test_openai_client(server: str) -> None:
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    assert "tiny:latest" in [m.id for m in client.models.list()]
    done = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert done.choices[0].message.role == "assistant" and done.usage.completion_tokens > 0
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=8, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-2].choices[0].finish_reason in ("stop", "length")
    comp = client.completions.create(model="tiny", prompt="once upon", max_tokens=4)
    assert comp.choices[0].finish_reason in ("stop", "length")
    emb = client.embeddings.create(model="embedder", input="hello")
    assert len(emb.data[0].embedding) == 64
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])


def test_serve_entry_point(tmp_path: Path) -> None:
    import urllib.request

    port = _free_port()
    env = {**os.environ, "A3S_POWER_HOME": str(tmp_path), "OLLAMA_HOST": f"127.0.0.1:{port}"}
    code = "from power.config import load_settings; from power.server import serve; raise SystemExit(serve(load_settings()))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
    finally:
        proc.terminate()
        assert proc.wait(timeout=40) == 0


def test_ollama_client_creates_and_chats_with_a_vision_model(server: str, tmp_path: Path) -> None:
    """The model and its projector uploaded as blobs and created in one call, as `ollama create` does."""
    client = ollama.Client(host=server)
    text = write_llama(tmp_path / "seer.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    mmproj = write_mmproj(tmp_path / "seer-mmproj.gguf", n_embd_text=64)
    files = {p.name: client.create_blob(p) for p in (text, mmproj)}
    assert client.create(model="seer", files=files).status == "success"
    assert "vision" in (client.show("seer").capabilities or [])
    out = client.chat(model="seer", options={"num_predict": 4, "temperature": 0}, messages=[
        {"role": "user", "content": "what colour is this?", "images": [png(24, 24, (0, 200, 0))]}])
    assert out.done and out.eval_count == 4 and out.prompt_eval_count >= 4
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="tiny", messages=[{"role": "user", "content": "and this?", "images": [png(8, 8)]}])
    assert err.value.status_code == 400 and "does not support vision" in err.value.error


def test_create_with_a_draft_model_over_http(server: str, tmp_path: Path) -> None:
    """DRAFT's API form (Ollama's draft_files, uploaded as a blob): shown by show; a draft of another
    vocabulary is a 400 that says why, and nothing is created."""
    import httpx

    client = ollama.Client(host=server)
    target = write_llama(tmp_path / "target.gguf", seed=4)
    draft = write_llama(tmp_path / "draft.gguf", seed=5, n_layer=1)
    alien = write_llama(tmp_path / "alien.gguf", seed=5, specials=[f"<|x{i}|>" for i in range(200)])
    digests = {p.name: client.create_blob(p) for p in (target, draft, alien)}
    ok = httpx.post(f"{server}/api/create", timeout=60, json={
        "model": "speccy", "files": {"target.gguf": digests["target.gguf"]},
        "draft_files": {"draft.gguf": digests["draft.gguf"]}, "stream": False})
    assert ok.status_code == 200 and ok.json()["status"] == "success"
    shown = client.show("speccy")
    assert "\nDRAFT /" in (shown.modelfile or "")
    assert httpx.post(f"{server}/api/show", json={"model": "speccy"}).json()["details"]["draft"]["family"] == "llama"
    bad = httpx.post(f"{server}/api/create", timeout=60, json={
        "model": "alienspec", "files": {"target.gguf": digests["target.gguf"]},
        "draft_files": {"alien.gguf": digests["alien.gguf"]}, "stream": False})
    assert bad.status_code == 400
    assert bad.json()["error"] == ("draft model's vocabulary does not match the model's: the draft has 468 tokens "
                                   "and the model 268; they may differ by at most 128")
    assert "alienspec:latest" not in [m.model for m in client.list().models]
    # The runner drafts with it: the same greedy answer as the model alone, drafts counted, a bigger /api/ps.
    assert client.create(model="nospec", files={"target.gguf": digests["target.gguf"]}).status == "success"
    answers, sizes = {}, {}
    for name in ("speccy", "nospec"):
        out = httpx.post(f"{server}/api/generate", timeout=120, json={
            "model": name, "prompt": "abc abc", "stream": False, "options": {"temperature": 0, "num_predict": 24}})
        assert out.status_code == 200, out.text
        answers[name] = out.json()
        sizes[name] = next(m.size for m in client.ps().models if m.model == f"{name}:latest")
        if name == "speccy":  # /metrics counts what the draft model's context evaluated to keep up
            metrics = httpx.get(f"{server}/metrics").text
            found = re.search(r'^a3s_power_draft_evaluated_tokens_total\{model="speccy:latest"\} (\S+)$', metrics, re.M)
            assert found and float(found.group(1)) >= 2, metrics[-2000:]
            assert re.search(r'^a3s_power_draft_copied_tokens_total\{model="speccy:latest"\} 0\.0$', metrics, re.M)
    assert answers["speccy"]["response"] == answers["nospec"]["response"]
    assert answers["speccy"]["eval_count"] == 24 and answers["speccy"]["draft_count"] > 0
    assert "draft_count" not in answers["nospec"]
    assert sizes["speccy"] > sizes["nospec"] + draft.stat().st_size
