"""The app over a real store and the real Scheduler (runner processes, llama.cpp): for in-process HTTP tests.

``RealApp.client`` is falcon's TestClient; ``RealApp.openai()`` an ``openai``
client whose transport calls the WSGI app directly (no socket, no gunicorn).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon
from falcon import testing

from power.config import Settings, load_settings
from power.runner.resolve import store_resolver
from power.runner.scheduler import Scheduler
from power.server import create_app
from power.server.storeport import StorePort
from power.server.usage import UsageStore
from power.store import ModelStore

__all__ = ["RealApp", "real_app"]


@dataclass
class RealApp:
    app: falcon.App
    client: testing.TestClient
    scheduler: Scheduler
    library: ModelStore
    settings: Settings

    def openai(self) -> Any:
        import httpx
        import openai

        transport = httpx.WSGITransport(app=self.app)
        http = httpx.Client(transport=transport, base_url="http://127.0.0.1:11434",
                            headers={"Host": "127.0.0.1:11434"})
        return openai.OpenAI(base_url="http://127.0.0.1:11434/v1", api_key="unused", http_client=http)


def real_app(home: Path, models: dict[str, Path], context_length: int = 2048,
             adapters: dict[str, tuple[str, Path]] | None = None,
             projectors: dict[str, Path] | None = None, usage: UsageStore | None = None,
             load_pause: float = 0.0) -> Iterator[RealApp]:
    """Yield an app serving ``models`` (name -> GGUF) and ``adapters`` (name -> (base, LoRA GGUF)).

    ``load_pause``: the runners sleep that long at each load-progress report (a load slow enough to watch).

    ``projectors`` gives a model its vision projector (name -> mmproj GGUF), created as Ollama does:
    both files in one ``/api/create``.
    """
    settings = load_settings({"A3S_POWER_HOME": str(home), "OLLAMA_MODELS": str(home / "models"),
                              "OLLAMA_NUM_PARALLEL": "1", "OLLAMA_CONTEXT_LENGTH": str(context_length),
                              "OLLAMA_LOAD_TIMEOUT": "120"})
    library = ModelStore(settings.models, noprune=True)
    for name, gguf in models.items():
        files = {gguf.name: library.blobs.add_file(gguf).digest}
        if name in (projectors or {}):
            mmproj = (projectors or {})[name]
            files[mmproj.name] = library.blobs.add_file(mmproj).digest
        for _ in library.create({"model": name, "files": files}):
            pass
    for name, (base, lora) in (adapters or {}).items():
        info = library.blobs.add_file(lora)
        for _ in library.create({"model": name, "from": base, "adapters": {lora.name: info.digest}}):
            pass
    scheduler = Scheduler(settings, store_resolver(library), gpus=[], load_pause=load_pause)
    app = create_app(settings, StorePort(library), scheduler, usage=usage)
    try:
        yield RealApp(app, testing.TestClient(app, headers={"Host": "127.0.0.1:11434"}), scheduler, library,
                      settings)
    finally:
        scheduler.close(deadline=5.0)
