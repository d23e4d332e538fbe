"""Fixtures for the server tests: a real store on tmp dirs, a scripted scheduler, the app under test."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pytest
from falcon import testing

from power.config import Settings
from power.errors import PowerError
from power.server import create_app
from power.server.storeport import StorePort
from power.server.usage import UsageStore
from power.store import ModelStore
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_llama


class ScriptedStream:
    """The scheduler's Stream, replayed from a script: chunks, or an exception at a position."""

    ready = True  # every chunk is there already
    wake = None

    def __init__(self, chunks: list[Any]) -> None:
        self._items = list(chunks)
        self.closed = False

    def __iter__(self) -> "ScriptedStream":
        return self

    def __next__(self) -> dict[str, Any]:
        if not self._items:
            raise StopIteration
        item = self._items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return dict(item)

    def close(self) -> None:
        self.closed = True


def chunks_for(pieces: Sequence[str], *, done_reason: str = "stop", prompt_tokens: int = 7) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"text": p, "tokens": [100 + i], "done": False} for i, p in enumerate(pieces)]
    out.append({"text": "", "tokens": [], "done": True, "done_reason": done_reason,
                "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 1_000_000,
                "eval_count": len(pieces), "eval_duration": 2_000_000, "load_duration": 3_000_000,
                "prompt_tokens": [1, 2, 3]})
    return out


class FakeScheduler:
    """Implements the scheduler's methods; answers come from ``script`` (a list of chunk lists/errors)."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.calls: list[tuple[str, Any]] = []
        self.streams: list[ScriptedStream] = []
        self.loaded: dict[str, Any] = {}

    def generate(self, name: str, prompt: Any, *, options: Mapping[str, Any], keep_alive: Any,
                 grammar: str | None = None, logprobs: int = -1, add_special: bool = True,
                 truncate: bool = True, context: bool = False, images: Sequence[bytes] = (),
                 load_progress: bool = False) -> ScriptedStream:
        self.calls.append(("generate", {"name": name, "prompt": prompt, "options": dict(options),
                                        "keep_alive": keep_alive, "grammar": grammar, "logprobs": logprobs,
                                        "images": list(images), "load_progress": load_progress}))
        item = self.script.pop(0) if self.script else chunks_for(["Hello", " world"])
        if isinstance(item, PowerError):
            raise item
        stream = ScriptedStream(item)
        self.streams.append(stream)
        return stream

    def generate_choices(self, name: str, prompt: Any, n: int, **kwargs: Any) -> list[ScriptedStream]:
        return [self.generate(name, prompt, **kwargs) for _ in range(n)]

    def embed(self, name: str, inputs: Sequence[str], *, options: Mapping[str, Any], keep_alive: Any,
              truncate: bool, normalize: bool) -> dict[str, Any]:
        self.calls.append(("embed", {"name": name, "inputs": list(inputs), "normalize": normalize}))
        return {"embeddings": [[0.6, 0.8, 0.0] for _ in inputs], "prompt_eval_count": 3 * len(inputs),
                "load_duration": 5}

    def rerank(self, name: str, query: str, documents: Sequence[str], *, options: Mapping[str, Any],
               keep_alive: Any, truncate: bool = True) -> dict[str, Any]:
        self.calls.append(("rerank", {"name": name, "query": query, "documents": list(documents)}))
        return {"scores": [float(len(d)) for d in documents], "prompt_eval_count": 4 * len(documents),
                "load_duration": 5}

    def tokenize(self, name: str, text: str, *, add_special: bool = True, parse_special: bool = True,
                 pieces: bool = False) -> list[Any]:
        ids = list(range(len(text.encode())))
        return [{"id": i, "piece": "x"} for i in ids] if pieces else ids

    def detokenize(self, name: str, tokens: Sequence[int], *, special: bool = False) -> str:
        return "previous "

    def load(self, name: str, options: Mapping[str, Any] | None = None, keep_alive: Any = None) -> int:
        self.calls.append(("load", name))
        self.loaded[name] = keep_alive
        return 7

    def load_progress(self, name: str, options: Mapping[str, Any] | None = None,
                      keep_alive: Any = None) -> Iterator[tuple[int, int]]:
        self.calls.append(("load", name))
        self.loaded[name] = keep_alive
        yield from [(0, 10), (10, 10)]

    def unload(self, name: str) -> bool:
        self.calls.append(("unload", name))
        return self.loaded.pop(name, None) is not None

    def ps(self) -> list[dict[str, Any]]:
        from datetime import datetime, timedelta, timezone

        return [{"name": n, "model": n, "size": 10, "size_vram": 0, "digest": "sha256:" + "a" * 64,
                 "details": {}, "expires_at": datetime.now(timezone.utc) + timedelta(minutes=5),
                 "context_length": 4096, "processor": "100% CPU", "pid": 1} for n in self.loaded]

    closing = False
    depth = 0  # what queue_depth() says: tests fill the queue by setting it

    def queue_depth(self) -> int:
        return self.depth

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf", chat_template=CHATML_TOOLS_TEMPLATE)


@pytest.fixture(scope="session")
def tiny_embed_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("gguf") / "embed.gguf", pooling=1, name="tiny-embed")


def add_model(library: ModelStore, name: str, gguf: Path, **extra: Any) -> None:
    info = library.blobs.add_file(gguf)
    for _ in library.create({"model": name, "files": {gguf.name: info.digest}, **extra}):
        pass


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, models=tmp_path / "models")


@pytest.fixture
def library(settings: Settings, tiny_gguf: Path, tiny_embed_gguf: Path) -> ModelStore:
    lib = ModelStore(settings.models, noprune=True)
    add_model(lib, "tiny", tiny_gguf)
    add_model(lib, "embedder", tiny_embed_gguf)
    return lib


@pytest.fixture
def scheduler() -> FakeScheduler:
    return FakeScheduler()


@pytest.fixture
def usage(settings: Settings) -> Iterator[UsageStore]:
    store = UsageStore(settings.usage_db, {"tiny:latest": {"input": 1.0, "output": 2.0}})
    yield store
    store.close()


@pytest.fixture
def make_client(settings: Settings, library: ModelStore, scheduler: FakeScheduler, usage: UsageStore) -> Any:
    def make(max_body: int = 1 << 20, **changes: Any) -> testing.TestClient:
        app = create_app(settings.with_(**changes), StorePort(library), scheduler, usage=usage,
                         max_body=max_body)
        return testing.TestClient(app, headers={"Host": "127.0.0.1:11434"})

    return make


@pytest.fixture
def client(make_client: Any) -> testing.TestClient:
    return make_client()
