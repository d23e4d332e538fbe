"""What the HTTP server needs from its collaborators, as Protocols.

The app factory takes a store and a scheduler that satisfy these; the real ones
come from ``power.store`` and ``power.runner`` (wrapped by ``storeport`` where
their shapes differ), and unit tests pass small scripted fakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

__all__ = ["ModelView", "ModelStore", "Scheduler", "GenerationStream"]


@dataclass(frozen=True)
class ModelView:
    """One stored model, as inference and the OpenAI model list see it."""

    name: str  # display form, e.g. "llama3.2:latest"
    digest: str  # sha256:<hex> of the manifest
    modified_at: float  # Unix time
    capabilities: tuple[str, ...] = ("completion",)
    template: str | None = None  # Go TEMPLATE layer
    chat_template: str | None = None  # Jinja: a Jinja TEMPLATE layer, else GGUF tokenizer.chat_template
    metadata: Mapping[str, Any] = field(default_factory=dict)  # GGUF key/values (no big arrays)
    system: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Mapping[str, Any], ...] = ()
    namespace: str = "library"

    @property
    def context_length(self) -> int | None:
        arch = self.metadata.get("general.architecture")
        value = self.metadata.get(f"{arch}.context_length") if arch else None
        return int(value) if isinstance(value, int) else None


class ModelStore(Protocol):
    """The model library."""

    def model(self, name: str) -> ModelView: ...

    def list(self) -> list[dict[str, Any]]: ...  # /api/tags entries, newest first

    def tags_body(self) -> bytes: ...  # the /api/tags JSON, {"models": list()}, kept while nothing changes

    def show(self, name: str, *, verbose: bool = False, system: str | None = None,
             options: Mapping[str, Any] | None = None) -> dict[str, Any]: ...

    def create(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]: ...

    def copy(self, source: str, destination: str) -> None: ...

    def delete(self, name: str) -> None: ...

    def has_blob(self, digest: str) -> bool: ...

    def add_blob(self, digest: str, source: BinaryIO | Iterable[bytes]) -> bool: ...  # True: created

    def unreadable(self) -> str | None: ...  # why the library cannot be read now; None when it can


class GenerationStream(Protocol):
    """Chunks of one generation; the first ``next`` raises the request's typed error."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __next__(self) -> dict[str, Any]: ...


class Scheduler(Protocol):
    """Which runner serves which model; the only way the server reaches inference."""

    def generate(self, name: str, prompt: str, *, options: Mapping[str, Any], keep_alive: float | None,
                 grammar: str | None = None, logprobs: int = -1, add_special: bool = True,
                 truncate: bool = True, context: bool = False, images: Sequence[bytes] = (),
                 on_start: Callable[[Any], None] | None = None,
                 load_progress: bool = False) -> Iterator[dict[str, Any]]: ...

    def generate_choices(self, name: str, prompt: str, n: int, *, options: Mapping[str, Any],
                         keep_alive: float | None, grammar: str | None = None, logprobs: int = -1,
                         add_special: bool = True, truncate: bool = True, context: bool = False,
                         images: Sequence[bytes] = (), on_start: Callable[[Any], None] | None = None
                         ) -> Sequence[Iterator[dict[str, Any]]]: ...

    def embed(self, name: str, inputs: Sequence[str], *, options: Mapping[str, Any],
              keep_alive: float | None, truncate: bool, normalize: bool) -> Any: ...

    def rerank(self, name: str, query: str, documents: Sequence[str], *, options: Mapping[str, Any],
               keep_alive: float | None, truncate: bool = True) -> Any: ...

    def tokenize(self, name: str, text: str, *, add_special: bool = True, parse_special: bool = True,
                 pieces: bool = False) -> list[Any]: ...

    def detokenize(self, name: str, tokens: Sequence[int], *, special: bool = False) -> str: ...

    def load(self, name: str, options: Mapping[str, Any], keep_alive: float | None) -> Any: ...

    def load_progress(self, name: str, options: Mapping[str, Any],
                      keep_alive: float | None) -> Iterator[tuple[int, int]]: ...

    def unload(self, name: str) -> Any: ...

    # ps, queue_depth and closing never block: the worker's fast lane calls them from its event loop.
    def ps(self) -> list[dict[str, Any]]: ...

    def queue_depth(self) -> int: ...  # requests waiting for a slot or a load

    @property
    def closing(self) -> bool: ...  # shutting down: no new work is taken

    def close(self) -> None: ...
