from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.registry import Destinations, Registry, TransferOptions
from power.store import ModelStore
from tests.registry.servers import Nginx, docker_registry, nginx
from tests.tinymodels import write_llama, write_mmproj

# The test servers (docker-registry, nginx, our own) listen on loopback, which pulls refuse by default:
# these tests turn on the setting a local registry or mirror needs (A3S_POWER_ALLOW_PRIVATE_PULLS).
LOCAL_PULLS = Destinations(allow_private=True)
# Small parts, short stalls and quick back-off keep every test to seconds.
FAST = TransferOptions(streams=3, min_part=64 << 10, max_part=256 << 10, stall_timeout=2.0, retries=2,
                       backoff=0.05, upload_chunk=1 << 20)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf", n_embd=128, n_ff=256)


@pytest.fixture(scope="session")
def tiny_mmproj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LLaVA-style projector (general.architecture = clip) for ``tiny_gguf``."""
    return write_mmproj(tmp_path_factory.mktemp("mmproj") / "mmproj.gguf", n_embd_text=128)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models", noprune=False)


@pytest.fixture
def make_store(tmp_path: Path) -> Any:
    def make(name: str) -> ModelStore:
        return ModelStore(tmp_path / name, noprune=False)
    return make


def create_tiny(store: ModelStore, name: str, gguf: Path, extra: str = "") -> None:
    events = list(store.create_from_modelfile(name, f"FROM {gguf}\nSYSTEM be brief\n{extra}", gguf.parent))
    assert events[-1] == {"status": "success"}


def make_registry(store: ModelStore, url: str = "", options: TransferOptions = FAST, **kwargs: Any) -> Registry:
    hosts = {"registry.ollama.ai": url, "reg.test": url} if url else {}
    kwargs.setdefault("destinations", LOCAL_PULLS)
    return Registry(store, hosts=hosts, options=options, connect_timeout=2.0, **kwargs)


@pytest.fixture
def registry_url(tmp_path: Path) -> Iterator[str]:
    yield from docker_registry(tmp_path / "registry")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Nginx]:
    (tmp_path / "nginx").mkdir()
    yield from nginx(tmp_path / "nginx")
