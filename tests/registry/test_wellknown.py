"""The built-in table of well-known models: the fallback when the default registry has no match."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.errors import RemoteNotFound
from power.names import parse_name
from power.registry.sources import HF_HOSTS
from power.registry.wellknown import WELL_KNOWN, well_known_source
from power.store import ModelStore
from tests.registry.conftest import make_registry
from tests.registry.servers import Scripted, free_port
from tests.registry.test_api import hf  # noqa: F401  (the Hugging Face stand-in fixture)

TABLE = {"tiny:1b": "hf.co/someone/Tiny-GGUF", "gone:latest": "hf.co/nobody/none"}


@pytest.fixture
def empty_registry() -> Iterator[Scripted]:
    """A registry that knows no model at all."""
    def handle(req: Any) -> None:
        body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
        req.send_response(404)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(body)

    server = Scripted(handle)
    yield server
    server.close()


def test_table_entries_are_library_names_with_hf_sources() -> None:
    assert 10 <= len(WELL_KNOWN) <= 20
    for key in WELL_KNOWN:
        source = well_known_source(parse_name(key))
        assert source is not None and source.host in HF_HOSTS and source.tag != "latest", key
    assert well_known_source(parse_name("nomic-embed-text")) == parse_name(WELL_KNOWN["nomic-embed-text:latest"])
    assert well_known_source(parse_name("llama3.2")) == well_known_source(parse_name("llama3.2:3b"))
    # Only plain library names fall back: another namespace or host means what it says.
    assert well_known_source(parse_name("someone/llama3.2:3b")) is None
    assert well_known_source(parse_name("reg.test/library/llama3.2:3b")) is None
    assert well_known_source(parse_name("llama3.2:70b")) is None


def test_a_404_falls_back_to_the_table_and_stores_the_requested_name(
        empty_registry: Scripted, hf: Scripted, store: ModelStore, tiny_gguf: Path) -> None:  # noqa: F811
    registry = make_registry(store, empty_registry.url, hf_endpoint=hf.url, well_known=TABLE)
    events = list(registry.pull("tiny:1b"))
    assert "GET /v2/library/tiny/manifests/1b" in empty_registry.paths
    assert events[0] == {"status": "pulling tiny:1b from hf.co/someone/Tiny-GGUF (Tiny-Q4_K_M.gguf)"}
    assert events[1] == {"status": "pulling manifest"} and events[-1] == {"status": "success"}
    digest = "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert store.get("tiny:1b").model_path == store.blobs.path(digest)
    assert [m.name.display() for m in store.list()] == ["tiny:1b"]


def test_an_unreachable_registry_falls_back_too(hf: Scripted, store: ModelStore) -> None:  # noqa: F811
    closed = f"http://127.0.0.1:{free_port()}"
    events = list(make_registry(store, closed, hf_endpoint=hf.url, well_known=TABLE).pull("tiny:1b"))
    assert events[-1] == {"status": "success"}
    assert [m.name.display() for m in store.list()] == ["tiny:1b"]


def test_names_the_table_lacks_still_do_not_exist(empty_registry: Scripted, hf: Scripted,  # noqa: F811
                                                 store: ModelStore) -> None:
    registry = make_registry(store, empty_registry.url, hf_endpoint=hf.url, well_known=TABLE)
    for model in ("unknown:7b", "someone/tiny:1b", "gone"):
        with pytest.raises(RemoteNotFound, match=r"^pull model manifest: file does not exist$"):
            next(registry.pull(model))
    assert not any("/api/models/someone" in p for p in hf.paths)
    assert store.list() == [] and store.blobs.digests() == set()
