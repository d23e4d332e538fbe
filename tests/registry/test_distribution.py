"""Push to and pull from the real CNCF distribution server (Debian's docker-registry) on loopback."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.errors import RemoteNotFound
from power.names import parse_name
from power.store import ModelStore
from tests.registry.conftest import FAST, create_tiny, make_registry
from tests.registry.servers import Scripted, TokenServer, docker_registry


def blobs_of(store: ModelStore, name: str) -> dict[str, bytes]:
    manifest = store.layout.read(name).manifest
    return {d: store.blobs.path(d).read_bytes() for d in manifest.digests()}


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["status"] for e in events]


def roundtrip(url: str, make_store: Any, tiny_gguf: Path, options: Any = FAST, **kwargs: Any) -> None:
    src: ModelStore = make_store("src")
    create_tiny(src, "reg.test/team/tiny:v1", tiny_gguf)
    pushed = list(make_registry(src, url, options, **kwargs).push("reg.test/team/tiny:v1"))
    assert statuses(pushed)[0] == "retrieving manifest"
    assert statuses(pushed)[-2:] == ["pushing manifest", "success"]
    layers = [e for e in pushed if e["status"].startswith("pushing ") and "digest" in e]
    assert layers and all(e["status"] == f"pushing {e['digest'][7:19]}" for e in layers)
    assert any(e.get("completed") == e["total"] for e in layers)

    dst: ModelStore = make_store("dst")
    pulled = list(make_registry(dst, url, options, **kwargs).pull("reg.test/team/tiny:v1"))
    assert statuses(pulled)[0] == "pulling manifest"
    assert statuses(pulled)[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert blobs_of(dst, "reg.test/team/tiny:v1") == blobs_of(src, "reg.test/team/tiny:v1")
    assert dst.layout.read("reg.test/team/tiny:v1").raw == src.layout.read("reg.test/team/tiny:v1").raw
    record = dst.get("reg.test/team/tiny:v1")
    assert record.system == "be brief" and record.model_path is not None


def test_push_delete_pull_roundtrip(registry_url: str, make_store: Any, tiny_gguf: Path) -> None:
    roundtrip(registry_url, make_store, tiny_gguf)


def test_chunked_upload_and_second_push_skips_blobs(registry_url: str, make_store: Any, tiny_gguf: Path) -> None:
    chunked = dataclasses.replace(FAST, upload_chunk=100 << 10)  # the GGUF goes up in PATCH chunks
    roundtrip(registry_url, make_store, tiny_gguf, chunked)
    src = ModelStore(make_store("src").root)
    again = list(make_registry(src, registry_url).push("reg.test/team/tiny:v1"))
    assert again[-1] == {"status": "success"}


def test_pull_same_model_again_is_cached_and_local_delete_then_pull(registry_url: str, make_store: Any,
                                                                    tiny_gguf: Path) -> None:
    src = make_store("src")
    create_tiny(src, "reg.test/team/tiny:v1", tiny_gguf)
    list(make_registry(src, registry_url).push("reg.test/team/tiny:v1"))
    before = blobs_of(src, "reg.test/team/tiny:v1")
    src.delete("reg.test/team/tiny:v1")
    assert src.blobs.digests() == set()
    events = list(make_registry(src, registry_url).pull("reg.test/team/tiny:v1"))
    assert blobs_of(src, "reg.test/team/tiny:v1") == before
    events = list(make_registry(src, registry_url).pull("reg.test/team/tiny:v1"))
    cached = [e for e in events if "digest" in e]
    assert cached and all(e["completed"] == e["total"] for e in cached)


def test_unknown_model_is_ollamas_404(registry_url: str, store: ModelStore) -> None:
    with pytest.raises(RemoteNotFound, match="^pull model manifest: file does not exist$") as err:
        next(make_registry(store, registry_url).pull("reg.test/team/nothing:here"))
    assert err.value.status == 404
    assert store.list() == []


def test_cross_repository_mount(registry_url: str, make_store: Any, tiny_gguf: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer whose ``from`` names a model on the same registry is mounted, not uploaded."""
    import json

    from power.registry.client import RegistryClient
    from power.store.blobs import sha256_digest

    src = make_store("src")
    create_tiny(src, "reg.test/team/base:v1", tiny_gguf)
    list(make_registry(src, registry_url).push("reg.test/team/base:v1"))
    # The child names its parent in the layers' "from", as a model created FROM a pulled one does.
    stored = src.layout.read("reg.test/team/base:v1")
    doc = json.loads(stored.raw)
    for layer in doc["layers"]:
        layer["from"] = "reg.test/team/base:v1"
    raw = json.dumps(doc).encode()
    src.layout.write(parse_name("reg.test/other/child:v1"), raw)
    mounts: list[tuple[str, str | None]] = []
    real = RegistryClient.start_upload

    def spy(self: RegistryClient, digest: str, mount_from: str = "") -> str | None:
        location = real(self, digest, mount_from)
        mounts.append((mount_from, location))
        return location

    monkeypatch.setattr(RegistryClient, "has_blob", lambda self, digest: False)
    monkeypatch.setattr(RegistryClient, "start_upload", spy)
    list(make_registry(src, registry_url).push("reg.test/other/child:v1"))
    assert ("team/base", None) in mounts  # 201: mounted
    dst = make_store("dst")
    list(make_registry(dst, registry_url).pull("reg.test/other/child:v1"))
    assert dst.layout.read("reg.test/other/child:v1").digest == sha256_digest(raw)


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[str, TokenServer]]:
    token = TokenServer.create()
    server = Scripted(token.handler())
    try:
        yield from ((url, token) for url in docker_registry(tmp_path / "registry", token, server.url))
    finally:
        server.close()


def test_token_auth_roundtrip_with_signed_requests(token_registry: tuple[str, TokenServer], make_store: Any,
                                                   tiny_gguf: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    url, token = token_registry
    key = Ed25519PrivateKey.generate()
    key_path = tmp_path / "id_ed25519"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    roundtrip(url, make_store, tiny_gguf, key_path=key_path)
    assert token.requests, "the registry never asked for a token"
    first = token.requests[0]
    assert first["service"] == token.service and first["ts"] and first["nonce"]
    assert any("push" in r.get("scope", "") for r in token.requests)
    public_b64, _, signature = first["authorization"].partition(":")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert public.split()[1].decode() == public_b64 and signature


def test_token_realm_on_another_host_is_refused(store: ModelStore) -> None:
    def challenge(req: Any) -> None:
        req.send_response(401)
        req.send_header("WWW-Authenticate", 'Bearer realm="http://evil.example/token",service="x"')
        req.send_header("Content-Length", "0")
        req.end_headers()

    server = Scripted(challenge)
    try:
        from power.errors import RegistryError
        with pytest.raises(RegistryError, match="refusing token realm evil.example"):
            next(make_registry(store, server.url).pull("reg.test/team/tiny"))
    finally:
        server.close()


def test_two_pulls_at_once_share_the_blobs(registry_url: str, make_store: Any, tiny_gguf: Path) -> None:
    src = make_store("src")
    create_tiny(src, "reg.test/team/tiny:v1", tiny_gguf)
    list(make_registry(src, registry_url).push("reg.test/team/tiny:v1"))
    dst = make_store("dst")
    results: list[Any] = []

    def pull(tag: str) -> None:
        try:
            results.append(list(make_registry(dst, registry_url).pull("reg.test/team/tiny:v1"))[-1])
        except Exception as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=pull, args=(str(i),)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [{"status": "success"}] * 3
    assert blobs_of(dst, "reg.test/team/tiny:v1") == blobs_of(src, "reg.test/team/tiny:v1")
    assert not [p for p in dst.blobs.root.iterdir() if "partial" in p.name]
