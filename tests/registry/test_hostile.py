"""A hostile registry of our own: every trick is a clean, typed error and leaves nothing in the store (P10, P11)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from power.errors import DigestMismatch, ManifestError, PowerError, RegistryError
from power.registry.transport import Transport
from power.store import ModelStore
from tests.registry.conftest import LOCAL_PULLS, make_registry
from tests.registry.servers import Scripted, free_port

BLOB = b"GGUF" + bytes(range(256)) * 64
GOOD = "sha256:" + hashlib.sha256(BLOB).hexdigest()
CONFIG = b'{"model_format":"gguf"}'
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()


def manifest(digest: str = GOOD, size: int = len(BLOB), media: str = "application/vnd.ollama.image.model",
             config_media: str = "application/vnd.docker.container.image.v1+json") -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "config": {"mediaType": config_media, "digest": CONFIG_DIGEST, "size": len(CONFIG)},
                       "layers": [{"mediaType": media, "digest": digest, "size": size}]}).encode()


def send(req: Any, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    req.send_response(status)
    for k, v in (headers or {}).items():
        req.send_header(k, v)
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    if req.command != "HEAD":
        req.wfile.write(body)


def endless(req: Any) -> None:
    req.send_response(200)
    req.send_header("Connection", "close")
    req.end_headers()
    try:
        while True:
            req.wfile.write(b"A" * 65536)
    except OSError:
        pass


def registry(man: bytes | Callable[[Any], None], blob: Callable[[Any], None] | None = None) -> Scripted:
    def handle(req: Any) -> None:
        if "/manifests/" in req.path:
            man(req) if callable(man) else send(req, 200, man)
        elif req.path.endswith(CONFIG_DIGEST):
            send(req, 200, CONFIG)
        elif "/blobs/" in req.path:
            (blob or (lambda r: send(r, 200, BLOB)))(req)
        else:
            send(req, 404)
    return Scripted(handle)


@pytest.fixture
def hostile() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def make(*args: Any) -> Scripted:
        servers.append(registry(*args))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def assert_clean_failure(store: ModelStore, server: Scripted, error: type[PowerError], match: str) -> None:
    with pytest.raises(error, match=match):
        list(make_registry(store, server.url).pull("reg.test/team/evil"))
    assert store.blobs.digests() == set()
    assert store.list() == []
    assert not list(store.root.glob("manifests/**/evil*"))


def test_digest_with_path_characters(hostile: Any, store: ModelStore) -> None:
    server = hostile(manifest(digest="sha256:../../../../etc/passwd"))
    assert_clean_failure(store, server, ManifestError, "invalid digest")


def test_unknown_media_types(hostile: Any, store: ModelStore) -> None:
    assert_clean_failure(store, hostile(manifest(media="application/x-shellscript")), ManifestError,
                         "unsupported layer media type")
    assert_clean_failure(store, hostile(manifest(config_media="text/html")), ManifestError,
                         "unsupported config media type")


def test_wrong_size(hostile: Any, store: ModelStore) -> None:
    assert_clean_failure(store, hostile(manifest(size=len(BLOB) + 10)), RegistryError, "size mismatch")
    # Nothing is kept of the blob that lied about its size. (The config layer, fetched in parallel,
    # may keep its resumable partial state when the pull stops: that is P3, not a leak.)
    bad = GOOD.replace(":", "-")
    assert not [p for p in store.blobs.root.iterdir() if p.name.startswith(bad) and "partial" in p.name]


def test_blob_whose_hash_does_not_match(hostile: Any, store: ModelStore) -> None:
    wrong = "sha256:" + "ab" * 32
    assert_clean_failure(store, hostile(manifest(digest=wrong)), DigestMismatch, "digest mismatch")
    # The config layer, fetched in parallel, may keep resumable partial state (P3); the lying blob may not.
    assert not [p for p in store.blobs.root.iterdir() if "partial" in p.name and "c71877c4" not in p.name]


def test_redirect_loop(hostile: Any, store: ModelStore) -> None:
    server = hostile(manifest(), lambda r: send(r, 307, headers={"Location": r.path}))
    assert_clean_failure(store, server, RegistryError, "too many redirects")


def test_endless_manifest(hostile: Any, store: ModelStore) -> None:
    assert_clean_failure(store, hostile(endless), RegistryError, "manifest .* is larger than")


def test_endless_blob(hostile: Any, store: ModelStore) -> None:
    assert_clean_failure(store, hostile(manifest(), endless), DigestMismatch, "digest mismatch")


def test_garbage_manifest(hostile: Any, store: ModelStore) -> None:
    assert_clean_failure(store, hostile(b"\x00not json{{"), ManifestError, "not valid JSON")


def test_unreachable_host_fails_in_seconds(store: ModelStore) -> None:
    start = time.monotonic()
    with pytest.raises(RegistryError, match="connection refused"):
        next(make_registry(store, f"http://127.0.0.1:{free_port()}").pull("reg.test/team/x"))
    assert time.monotonic() - start < 5


def test_plain_http_needs_insecure(store: ModelStore) -> None:
    with pytest.raises(RegistryError, match="insecure"):
        next(make_registry(store).pull("http://reg.example/team/x"))


def test_redirects_drop_credentials_and_refuse_file() -> None:
    """Credentials go to the first origin only; a redirect never leaves http(s). (Addresses: test_ssrf.py.)"""
    seen: list[tuple[str, str]] = []
    target = Scripted(lambda r: (seen.append((r.headers.get("Authorization", ""), r.headers.get("Cookie", ""))),
                                 send(r, 200, b"ok")))
    origin = Scripted(lambda r: send(r, 307, headers={"Location": f"http://localhost:{target.port}/blob"}))
    files = Scripted(lambda r: send(r, 302, headers={"Location": "file:///etc/passwd"}))
    try:
        transport = Transport(connect_timeout=2.0, destinations=LOCAL_PULLS)
        with transport.request("GET", origin.url + "/x", headers={"Cookie": "session=1"},
                               authorization="Bearer secret") as resp:
            assert resp.read() == b"ok"
        assert seen == [("", "")]
        with pytest.raises(RegistryError, match="only http and https"):
            transport.request("GET", files.url + "/x")
    finally:
        for s in (target, origin, files):
            s.close()
