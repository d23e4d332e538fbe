"""Where model-management commands act: the server's API, or the local store directly.

``list``, ``show``, ``cp``, ``rm`` and ``create`` go through a running server
when one answers (it may be remote, and it must unload a model it is serving
before deleting it); with no server on a loopback address they open the
models folder themselves, so managing the library never needs ``serve``.
Both backends return the JSON shapes of ``/api/tags`` and ``/api/show``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from power.client import Client, file_digest
from power.errors import PowerError
from power.store import BlobInfo, ModelStore, parse_modelfile
from power.store.request import CreateRequest, request_from_modelfile

__all__ = ["Models", "RemoteModels", "LocalModels", "create_body"]

Progress = Callable[[dict[str, Any]], None]


class Models(Protocol):
    def list(self) -> list[dict[str, Any]]: ...

    def show(self, model: str, *, verbose: bool = False) -> dict[str, Any]: ...

    def copy(self, source: str, destination: str) -> None: ...

    def delete(self, model: str) -> None: ...

    def create(self, model: str, modelfile: str, base_dir: Path, *, quantize: str,
               progress: Progress, draft_quantize: str = "") -> None: ...


def create_body(req: CreateRequest) -> dict[str, Any]:
    """The ``/api/create`` JSON for a request, leaving out what is unset."""
    body: dict[str, Any] = {"model": req.model}
    if req.from_:
        body["from"] = req.from_
    for key, value in (("files", req.files), ("adapters", req.adapters), ("draft_files", req.draft_files)):
        if value:
            body[key] = dict(value)
    for key in ("template", "system", "renderer", "parser", "requires", "draft"):
        value = getattr(req, key)
        if value:
            body[key] = value
    if req.license:
        body["license"] = list(req.license)
    if req.parameters:
        body["parameters"] = dict(req.parameters)
    if req.messages:
        body["messages"] = [dict(m) for m in req.messages]
    for key in ("quantize", "draft_quantize"):
        if getattr(req, key):
            body[key] = getattr(req, key)
    return body


class RemoteModels:
    """Model management through a server's native API."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self) -> list[dict[str, Any]]:
        return self.client.tags()

    def show(self, model: str, *, verbose: bool = False) -> dict[str, Any]:
        return self.client.show(model, verbose=verbose)

    def copy(self, source: str, destination: str) -> None:
        self.client.copy(source, destination)

    def delete(self, model: str) -> None:
        try:  # Ollama unloads first; a model that is not loaded is not an error
            for _ in self.client.generate({"model": model, "keep_alive": 0}):
                pass
        except PowerError:
            pass
        self.client.delete(model)

    def create(self, model: str, modelfile: str, base_dir: Path, *, quantize: str,
               progress: Progress, draft_quantize: str = "") -> None:
        progress({"status": "gathering model components"})

        def upload(path: Path) -> BlobInfo:
            digest = file_digest(path)
            size = path.stat().st_size
            progress({"status": f"copying file {digest}", "digest": digest, "total": size, "completed": 0})
            created = not self.client.blob_exists(digest)
            if created:
                self.client.upload_blob(digest, path)
            progress({"status": f"copying file {digest}", "digest": digest, "total": size,
                      "completed": size})
            return BlobInfo(digest, size, created)

        req = request_from_modelfile(parse_modelfile(modelfile), model, base_dir, upload, quantize=quantize,
                                     draft_quantize=draft_quantize)
        for status in self.client.create(create_body(req)):
            progress(status)


class LocalModels:
    """Model management on the models folder itself, for when no server is running."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def list(self) -> list[dict[str, Any]]:
        return [m.to_json() for m in self.store.list()]

    def show(self, model: str, *, verbose: bool = False) -> dict[str, Any]:
        return self.store.show(model, verbose=verbose)

    def copy(self, source: str, destination: str) -> None:
        self.store.copy(source, destination)

    def delete(self, model: str) -> None:
        self.store.delete(model)

    def create(self, model: str, modelfile: str, base_dir: Path, *, quantize: str,
               progress: Progress, draft_quantize: str = "") -> None:
        progress({"status": "gathering model components"})
        for status in self.store.create_from_modelfile(model, modelfile, base_dir, quantize=quantize,
                                                       draft_quantize=draft_quantize):
            progress(status)
