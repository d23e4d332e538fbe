"""``Registry``: pull and push for the server and the CLI, over one store.

``pull(model)`` picks the source by the name's form: an ``http(s)://.../x.gguf``
URL, an ``hf.co/``/``huggingface.co/`` name (the Hugging Face API, unless the
host table maps that host to a registry), or a registry name. A library name
the default registry does not have (404, or no connection) is pulled from the
Hugging Face GGUF that ``wellknown`` lists for it, under the name asked for;
a status line says so. Each returns an
iterator of Ollama's status dicts whose first ``next()`` already did the
lookup, so a missing model or a bad name fails before a stream starts.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from power.config import Settings
from power.errors import Canceled, RegistryError, RemoteNotFound
from power.names import ModelName, parse_name
from power.registry.auth import TokenSource
from power.registry.client import RegistryClient, base_url_for
from power.registry.download import DEFAULT_OPTIONS, Download, TransferOptions
from power.registry.progress import Event, LayerProgress, run_reporting, status
from power.registry.pull import held, pull_from_registry
from power.registry.push import push_to_registry
from power.registry.sources import (
    HF_HOSTS,
    HfFile,
    UrlSource,
    find_hf_model,
    is_url,
    name_for_url,
    probe_url,
)
from power.registry.transport import Destinations, Transport, Unreachable, is_loopback_host, split_url
from power.registry.wellknown import WELL_KNOWN, well_known_source
from power.store import ModelStore
from power.store.create import collect_garbage

__all__ = ["Registry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _File:
    """One file a URL or Hugging Face pull downloads; ``filename`` is its key in the create request."""

    filename: str
    size: int
    digest: str | None
    key: str | None
    source: UrlSource
    etag: str = ""


class Registry:
    """Registry transfers into and out of ``store``."""

    def __init__(self, store: ModelStore, *, hosts: Mapping[str, str] | None = None,
                 hf_endpoint: str = "https://huggingface.co", options: TransferOptions = DEFAULT_OPTIONS,
                 key_path: Path | None = None, connect_timeout: float = 10.0,
                 well_known: Mapping[str, str] = WELL_KNOWN, destinations: Destinations = Destinations()) -> None:
        self.store = store
        self.hosts = {k.lower(): v for k, v in (hosts or {}).items()}
        self.hf_endpoint = hf_endpoint.rstrip("/")
        self.options = options
        self.transport = Transport(connect_timeout=connect_timeout, read_timeout=options.stall_timeout,
                                   destinations=destinations)
        self.key_path = key_path
        self.well_known = well_known

    @classmethod
    def from_settings(cls, settings: Settings, store: ModelStore, **kwargs: Any) -> Registry:
        options = TransferOptions(streams=settings.max_transfer_streams)
        return cls(store, hosts=settings.registry_hosts, hf_endpoint=settings.hf_endpoint, options=options,
                   key_path=Path.home() / ".ollama" / "id_ed25519",
                   destinations=Destinations(allow_private=settings.allow_private_pulls), **kwargs)

    # -- entry points -------------------------------------------------------------
    def pull(self, model: str, insecure: bool = False) -> Iterator[Event]:
        """Pull a model; iterate for progress (the manifest lookup happens on the first item)."""
        if is_url(model):
            return self._pull_url(model, insecure)
        name = parse_name(model)
        if name.host.lower() in HF_HOSTS and name.host.lower() not in self.hosts:
            return self._pull_hf(name)
        events = pull_from_registry(self.store.ctx, self._client(name, insecure), name, self.options)
        fallback = well_known_source(name, self.well_known)
        return events if fallback is None else self._pull_or_fall_back(name, events, fallback)

    def push(self, model: str, insecure: bool = False) -> Iterator[Event]:
        """Push a stored model to its registry; iterate for progress."""
        name = self.store.layout.require(parse_name(model))
        if name.host.lower() in HF_HOSTS and name.host.lower() not in self.hosts:
            raise RegistryError("pushing to Hugging Face is not supported")
        return push_to_registry(self.store.ctx, self._client(name, insecure, push=True), name, self.options)

    # -- sources --------------------------------------------------------------------
    def _client(self, name: ModelName, insecure: bool, push: bool = False) -> RegistryClient:
        base = base_url_for(name, self.hosts, insecure)
        return RegistryClient(base, name.repository(), self.transport, TokenSource(self.transport, self.key_path),
                              push=push)

    def _pull_url(self, url: str, insecure: bool) -> Iterator[Event]:
        target = split_url(url)
        if target.scheme == "http" and not insecure and not is_loopback_host(target.host):
            raise RegistryError("insecure protocol http: pass insecure to download over plain http")
        name = name_for_url(url)
        size, etag = probe_url(self.transport, url)
        yield status("pulling manifest")
        filename = PurePosixPath(split_url(url).target.split("?", 1)[0]).name
        key = "url-" + hashlib.sha256(url.encode()).hexdigest()[:40]
        source = UrlSource(self.transport, url)
        yield from self._fetch_and_create(name, [_File(filename, size, None, key, source, etag)])

    def _pull_or_fall_back(self, name: ModelName, events: Iterator[Event], source: ModelName) -> Iterator[Event]:
        try:
            first = next(events)
        except (RemoteNotFound, Unreachable) as exc:
            log.info("registry has no model=%s (%s); pulling source=%s", name.display(), exc, source.display())
            yield from self._pull_hf(source, store_as=name)
            return
        yield first
        yield from events

    def _pull_hf(self, name: ModelName, *, store_as: ModelName | None = None) -> Iterator[Event]:
        found = find_hf_model(self.transport, self.hf_endpoint, name)
        if store_as is not None:
            yield status(f"pulling {store_as.display()} from hf.co/{found.model.repo} ({found.model.filename})")
        yield status("pulling manifest")
        files = [self._hf_download(found.model)]
        if found.projector is not None:  # a vision model: the projector becomes the model's projector layer
            files.append(self._hf_download(found.projector))
        yield from self._fetch_and_create(store_as or name, files)

    def _hf_download(self, found: HfFile) -> _File:
        key = None if found.digest else "url-" + hashlib.sha256(found.url.encode()).hexdigest()[:40]
        return _File(PurePosixPath(found.filename).name, found.size, found.digest, key,
                     UrlSource(self.transport, found.url))

    def _fetch_and_create(self, name: ModelName, files: list[_File]) -> Iterator[Event]:
        """Download ``files`` side by side, then create ``name`` from all of them in one store create."""
        progress = LayerProgress("pulling")
        blobs = self.store.blobs
        digests: dict[str, str] = {}
        created: list[str] = []
        cancel = threading.Event()
        tasks: list[Callable[[], None]] = []
        for file in files:
            if file.digest and blobs.exists(file.digest):
                progress.add(file.digest, file.size, file.size)
                digests[file.filename] = file.digest
            else:
                progress.add(file.digest or file.filename, file.size, label="" if file.digest else file.filename)
                tasks.append(self._fetch(file, progress, cancel, digests, created))
        try:
            yield from run_reporting(tasks, progress, cancel, len(tasks))
            yield status("verifying sha256 digest")
            by_name = {f.filename: digests[f.filename] for f in files}  # the listing's order, not arrival's
            with held(self.store.ctx, set(by_name.values())):
                yield from self.store.create({"model": name.full(), "files": by_name})
        except Exception as exc:
            if not isinstance(exc, Canceled):  # a failed pull leaves no orphan blobs behind
                collect_garbage(self.store.ctx, set(created))
            raise
        log.info("pulled files model=%s files=%s size=%d", name.display(),
                 ",".join(f.filename for f in files), sum(f.size for f in files))

    def _fetch(self, file: _File, progress: LayerProgress, cancel: threading.Event, digests: dict[str, str],
               created: list[str]) -> Callable[[], None]:
        track = file.digest or file.filename

        def run() -> None:
            info = Download(self.store.blobs, file.source, file.size, digest=file.digest, key=file.key,
                            options=self.options, on_progress=progress.setter(track), cancel=cancel,
                            validator=file.etag).run()
            if info.created:
                created.append(info.digest)
            digests[file.filename] = info.digest
            progress.complete(track)
        return run
