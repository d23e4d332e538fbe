"""Adapt ``power.store.ModelStore`` to the server's ``ModelStore`` port.

Inference needs a model's template, system prompt, parameters and GGUF
metadata on every request; the metadata is read from the GGUF header once per
model file and kept in a small LRU (the file is content-addressed, so a path
never changes meaning).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

from power.errors import ManifestError
from power.prompt import model_templates
from power.runner.loaded import ModelSpec
from power.store import ModelStore as Library
from power.store import parse_digest, read_gguf
from power.store.record import ModelRecord, capabilities, details
from power.server.ports import ModelView
from power.server.streaming import dumps

__all__ = ["StorePort", "resolver_for"]

_CACHE = 8


class StorePort:
    """The real store behind the server's port."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self._meta: OrderedDict[Path, tuple[Mapping[str, Any], Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._tags: tuple[object, bytes] = (None, b"")

    def _gguf(self, path: Path) -> Any:
        with self._lock:
            hit = self._meta.get(path)
            if hit is not None:
                self._meta.move_to_end(path)
                return hit
        gguf = read_gguf(path)
        with self._lock:
            self._meta[path] = gguf
            while len(self._meta) > _CACHE:
                self._meta.popitem(last=False)
        return gguf

    def model(self, name: str) -> ModelView:
        record: ModelRecord = self.library.get(name)
        gguf = self._gguf(record.model_path) if record.model_path else None
        metadata: Mapping[str, Any] = gguf.metadata if gguf is not None else {}
        gguf_template = metadata.get("tokenizer.chat_template")
        template, chat_template = model_templates(record.template,
                                                  gguf_template if isinstance(gguf_template, str) else None)
        return ModelView(
            name=record.name.display(),
            digest=record.digest,
            modified_at=record.modified_at.timestamp(),
            capabilities=tuple(capabilities(record, gguf)),
            template=template,
            chat_template=chat_template if isinstance(chat_template, str) else None,
            metadata=metadata,
            system=record.system,
            parameters=dict(record.parameters),
            messages=tuple(record.messages),
            namespace=record.name.namespace,
        )

    def list(self) -> list[dict[str, Any]]:
        return [m.to_json() for m in self.library.listing()]

    def tags_body(self) -> bytes:
        listing = self.library.listing()
        seen, body = self._tags
        if seen is not listing:  # the library hands back the same tuple while nothing changed
            body = dumps({"models": [m.to_json() for m in listing]}).encode("utf-8")
            self._tags = (listing, body)
        return body

    def show(self, name: str, *, verbose: bool = False, system: str | None = None,
             options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.library.show(name, verbose=verbose, system=system, options=options)

    def create(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self.library.create(body)

    def copy(self, source: str, destination: str) -> None:
        self.library.copy(source, destination)

    def delete(self, name: str) -> None:
        self.library.delete(name)

    def has_blob(self, digest: str) -> bool:
        return self.library.blobs.exists(parse_digest(digest))

    def add_blob(self, digest: str, source: BinaryIO | Iterable[bytes]) -> bool:
        return self.library.blobs.add_stream(source, expected=parse_digest(digest)).created

    def unreadable(self) -> str | None:
        return self.library.unreadable()


def resolver_for(library: Library) -> Callable[[str], ModelSpec]:
    """What the scheduler needs to start a runner for a stored model."""

    def resolve(name: str) -> ModelSpec:
        record = library.get(name)
        if record.model_path is None:
            raise ManifestError(f"model '{name}' has no model layer")
        return ModelSpec(
            name=record.name.display(), model_path=str(record.model_path),
            adapters=tuple((str(p), 1.0) for p in record.adapter_paths),
            projector=str(record.projector_paths[0]) if record.projector_paths else None,
            draft=str(record.draft_path) if record.draft_path else None,
            options=dict(record.parameters), digest=record.digest,
            details=details(record.config, record.parent_model), size=record.size)

    return resolve
