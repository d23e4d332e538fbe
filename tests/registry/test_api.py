"""/api/pull and /api/push through the Falcon app with the real store, and Hugging Face pulls."""

from __future__ import annotations

import hashlib
import json
import time
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
    settings = Settings(home=tmp_path, models=store.root, allow_private_pulls=True,  # the registry is on loopback
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hf(web: Nginx, tiny_gguf: Path, tiny_mmproj: Path) -> Iterator[Scripted]:
    """A Hugging Face API stand-in whose files live on nginx (reached by redirect, as the CDN is).

    ``someone/Tiny-GGUF`` is a vision repository (a model and projectors), ``someone/Text-GGUF`` holds only
    a model, and ``someone/Bad-GGUF``'s projector does not match the sha256 its listing gives.
    """
    model, projector = tiny_gguf.read_bytes(), tiny_mmproj.read_bytes()
    (web.root / "blob.gguf").write_bytes(model)
    (web.root / "mmproj.gguf").write_bytes(projector)
    good = {"rfilename": "Tiny-Q4_K_M.gguf", "lfs": {"sha256": sha256(model), "size": len(model)}}
    listings = {
        "someone/Tiny-GGUF": [
            {"rfilename": "README.md"},
            {"rfilename": "Tiny-Q8_0.gguf", "size": 5, "lfs": {"sha256": "00" * 32, "size": 5}},
            good,
            {"rfilename": "mmproj-Tiny-Q8_0.gguf", "size": 9},  # F16 is preferred, so never fetched
            {"rfilename": "mmproj-Tiny-F16.gguf", "lfs": {"sha256": sha256(projector), "size": len(projector)}},
        ],
        "someone/Text-GGUF": [good],
        "someone/Bad-GGUF": [
            good, {"rfilename": "mmproj-Bad-F16.gguf", "lfs": {"sha256": "ab" * 32, "size": len(projector)}}],
    }
    served = {"Tiny-Q4_K_M.gguf": "blob.gguf", "mmproj-Tiny-F16.gguf": "mmproj.gguf",
              "mmproj-Bad-F16.gguf": "mmproj.gguf"}

    def handle(req: Any) -> None:
        repo = req.path.removeprefix("/api/models/").partition("?")[0]
        user_repo, _, filename = req.path.lstrip("/").partition("/resolve/main/")
        if req.path.startswith("/api/models/") and repo in listings:
            body, status, headers = json.dumps({"siblings": listings[repo]}).encode(), 200, {}
        elif user_repo in listings and filename in served:
            if filename == "mmproj-Bad-F16.gguf":
                time.sleep(1.0)  # the model arrives first, so the failed pull has a blob to clean up
            body, status, headers = b"", 302, {"Location": f"{web.url}/{served[filename]}"}
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


def test_hf_pull_of_a_vision_repo_brings_its_projector(hf: Scripted, store: ModelStore, tiny_gguf: Path,
                                                       tiny_mmproj: Path) -> None:
    events = list(make_registry(store, hf_endpoint=hf.url).pull("hf.co/someone/Tiny-GGUF"))
    assert events[0] == {"status": "pulling manifest"} and events[-1] == {"status": "success"}
    model = "sha256:" + sha256(tiny_gguf.read_bytes())
    projector = "sha256:" + sha256(tiny_mmproj.read_bytes())
    for digest in (model, projector):  # both with progress, under the digests the listing gives
        assert any(e.get("digest") == digest and e.get("completed") == e["total"] for e in events)
    assert "GET /someone/Tiny-GGUF/resolve/main/mmproj-Tiny-F16.gguf" in hf.paths
    assert not any("mmproj-Tiny-Q8_0" in p for p in hf.paths)
    record = store.get("hf.co/someone/Tiny-GGUF:latest")
    assert record.model_path == store.blobs.path(model)
    assert record.projector_paths == (store.blobs.path(projector),)
    shown = store.show("hf.co/someone/Tiny-GGUF")
    assert "vision" in shown["capabilities"] and shown["projector_info"]["general.architecture"] == "clip"
    assert store.blobs.digests() == {*store.layout.read("hf.co/someone/Tiny-GGUF").manifest.digests()}

    again = list(make_registry(store, hf_endpoint=hf.url).pull("hf.co/someone/Tiny-GGUF"))
    cached = [e for e in again if "digest" in e]
    assert {e["digest"] for e in cached} == {model, projector} and all(e["completed"] == e["total"] for e in cached)


def test_hf_pull_of_a_text_repo_has_no_projector(hf: Scripted, store: ModelStore) -> None:
    events = list(make_registry(store, hf_endpoint=hf.url).pull("hf.co/someone/Text-GGUF:Q4_K_M"))
    assert events[-1] == {"status": "success"}
    assert len({e["digest"] for e in events if "digest" in e}) == 1
    record = store.get("hf.co/someone/Text-GGUF:Q4_K_M")
    assert record.model_path is not None and record.projector_paths == ()
    shown = store.show("hf.co/someone/Text-GGUF:Q4_K_M")
    assert "vision" not in shown["capabilities"] and "projector_info" not in shown
    assert not any("mmproj" in p for p in hf.paths)


def test_hf_projector_is_checked_against_the_listed_sha256(hf: Scripted, store: ModelStore) -> None:
    from power.errors import DigestMismatch

    with pytest.raises(DigestMismatch, match="ab" * 32):
        list(make_registry(store, hf_endpoint=hf.url).pull("hf.co/someone/Bad-GGUF"))
    # Nothing is created, and the model file that arrived before the projector failed is not left behind.
    assert store.list() == [] and store.blobs.digests() == set()
