"""/api/pull and /api/push through the Falcon app with the real store, and Hugging Face pulls."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from power.config import Settings
from power.errors import RemoteNotFound
from power.server.app import create_app
from power.server.storeport import StorePort
from power.store import ModelStore
from tests.registry.conftest import create_tiny, make_registry
from tests.registry.servers import Nginx, Scripted


class NoScheduler:
    def ps(self) -> list[Any]:
        return []

    def unload(self, name: str) -> None:
        pass


def app_client(tmp_path: Path, store: ModelStore, registry_url: str) -> testing.TestClient:
    settings = Settings(home=tmp_path, models=store.root,
                        registry_hosts={"registry.ollama.ai": registry_url, "reg.test": registry_url})
    return testing.TestClient(create_app(settings, StorePort(store), NoScheduler()),  # type: ignore[arg-type]
                              headers={"Host": "127.0.0.1:11434"})


def ndjson(result: testing.Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.text.splitlines() if line.strip()]


def test_api_push_then_pull_streaming_and_not(tmp_path: Path, registry_url: str, make_store: Any,
                                              tiny_gguf: Path) -> None:
    src = make_store("src")
    create_tiny(src, "team/tiny:v1", tiny_gguf)
    client = app_client(tmp_path, src, registry_url)
    pushed = client.simulate_post("/api/push", json={"model": "team/tiny:v1"})
    assert pushed.status_code == 200 and pushed.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(pushed)
    assert lines[0] == {"status": "retrieving manifest"} and lines[-1] == {"status": "success"}

    dst = make_store("dst")
    client = app_client(tmp_path, dst, registry_url)
    pulled = client.simulate_post("/api/pull", json={"model": "team/tiny:v1"})
    lines = ndjson(pulled)
    assert lines[0] == {"status": "pulling manifest"}
    assert [x["status"] for x in lines[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    layer = [x for x in lines if x.get("digest")]
    assert layer and all(set(x) <= {"status", "digest", "total", "completed"} for x in layer)
    assert client.simulate_get("/api/tags").json["models"][0]["name"] == "team/tiny:v1"

    again = client.simulate_post("/api/pull", json={"name": "team/tiny:v1", "stream": False})
    assert again.status_code == 200 and again.json == {"status": "success"}


def test_api_unknown_model_is_404(tmp_path: Path, registry_url: str, store: ModelStore) -> None:
    client = app_client(tmp_path, store, registry_url)
    for stream in (True, False):
        r = client.simulate_post("/api/pull", json={"model": "team/nope:v9", "stream": stream})
        assert r.status_code == 404 and r.json == {"error": "pull model manifest: file does not exist"}
    r = client.simulate_post("/api/pull", json={"model": "bad name!"})
    assert r.status_code == 400 and r.json == {"error": "invalid model name"}


@pytest.fixture
def hf(web: Nginx, tiny_gguf: Path) -> Iterator[Scripted]:
    """A Hugging Face API stand-in whose files live on nginx (reached by redirect, as the CDN is)."""
    data = tiny_gguf.read_bytes()
    (web.root / "blob.gguf").write_bytes(data)
    listing = {"siblings": [
        {"rfilename": "README.md"},
        {"rfilename": "Tiny-Q8_0.gguf", "size": 5, "lfs": {"sha256": "00" * 32, "size": 5}},
        {"rfilename": "Tiny-Q4_K_M.gguf", "lfs": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}},
        {"rfilename": "mmproj-Tiny-F16.gguf", "size": 9},
    ]}

    def handle(req: Any) -> None:
        if req.path.startswith("/api/models/someone/Tiny-GGUF"):
            body, status, headers = json.dumps(listing).encode(), 200, {}
        elif req.path == "/someone/Tiny-GGUF/resolve/main/Tiny-Q4_K_M.gguf":
            body, status, headers = b"", 302, {"Location": f"{web.url}/blob.gguf"}
        else:
            body, status, headers = b"not found", 404, {}
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(body)

    server = Scripted(handle)
    yield server
    server.close()


def test_hf_pull_picks_default_quant(hf: Scripted, store: ModelStore, tiny_gguf: Path) -> None:
    events = list(make_registry(store, hf_endpoint=hf.url).pull("hf.co/someone/Tiny-GGUF"))
    assert events[0] == {"status": "pulling manifest"} and events[-1] == {"status": "success"}
    digest = "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert any(e.get("digest") == digest and e.get("completed") == e["total"] for e in events)
    record = store.get("hf.co/someone/Tiny-GGUF:latest")
    assert record.model_path == store.blobs.path(digest)


def test_hf_pull_explicit_quant_and_missing_quant(hf: Scripted, store: ModelStore) -> None:
    from power.errors import DigestMismatch

    registry = make_registry(store, hf_endpoint=hf.url)
    with pytest.raises(RemoteNotFound, match=r"no Q2_K GGUF .*found: Q4_K_M, Q8_0"):
        next(registry.pull("huggingface.co/someone/Tiny-GGUF:Q2_K"))
    with pytest.raises(RemoteNotFound, match="file does not exist"):
        next(registry.pull("hf.co/nobody/none"))
    with pytest.raises(Exception) as err:  # the Q8_0 file's listed hash is wrong and its URL missing
        list(registry.pull("hf.co/someone/Tiny-GGUF:Q8_0"))
    assert not isinstance(err.value, DigestMismatch) or "digest" in str(err.value)
    assert store.list() == [] and store.blobs.digests() == set()
