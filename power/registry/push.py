"""Push a stored model to an Ollama-style registry.

For each blob: ``HEAD`` (present: done); else open an upload (``POST
.../blobs/uploads/``, with ``?mount=<digest>&from=<repo>`` when the layer says
which model it came from on the same registry: 201 means mounted); then one
monolithic ``PUT ?digest=`` for blobs up to ``upload_chunk`` bytes, or ``PATCH``
chunks followed by an empty ``PUT ?digest=``. The manifest goes last, verbatim.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from power.errors import Canceled, InvalidName
from power.names import ModelName, parse_name
from power.registry.client import RegistryClient
from power.registry.download import TransferOptions
from power.registry.progress import Event, LayerProgress, run_reporting, status
from power.store.blobs import BlobStore
from power.store.create import StoreContext
from power.store.manifest import Layer

__all__ = ["push_to_registry"]

log = logging.getLogger(__name__)


class _Counting:
    """A file read by http.client that reports how far it got."""

    def __init__(self, f: BinaryIO, report: Callable[[int], None], start: int = 0) -> None:
        self.f = f
        self.report = report
        self.done = start

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.done += len(data)
        self.report(self.done)
        return data


def push_to_registry(ctx: StoreContext, client: RegistryClient, name: ModelName,
                     options: TransferOptions) -> Iterator[Event]:
    """Yield Ollama's push statuses, ending with ``success``."""
    stored = ctx.layout.read(name)
    yield status("retrieving manifest")
    manifest = stored.manifest
    progress = LayerProgress("pushing")
    cancel = threading.Event()
    tasks = []
    seen: set[str] = set()
    for layer in [*manifest.layers, manifest.config]:
        if layer.digest in seen:
            continue
        seen.add(layer.digest)
        progress.add(layer.digest, layer.size)
        tasks.append(_task(ctx.layout.blobs, client, name, layer, options, progress, cancel))
    yield from run_reporting(tasks, progress, cancel, options.streams)
    yield status("pushing manifest")
    client.put_manifest(name.tag, stored.raw, manifest.media_type)
    log.info("pushed model=%s layers=%d", name.display(), len(seen))
    yield status("success")


def _mount_source(layer: Layer, name: ModelName) -> str:
    if not layer.from_:
        return ""
    try:
        parent = parse_name(layer.from_)
    except InvalidName:
        return ""
    return parent.repository() if parent.host.lower() == name.host.lower() else ""


def _task(blobs: BlobStore, client: RegistryClient, name: ModelName, layer: Layer, options: TransferOptions,
          progress: LayerProgress, cancel: threading.Event) -> Callable[[], None]:
    report = progress.setter(layer.digest)

    def run() -> None:
        if cancel.is_set():
            raise Canceled()
        if client.has_blob(layer.digest):
            progress.complete(layer.digest)
            return
        location = client.start_upload(layer.digest, _mount_source(layer, name))
        if location is None:
            log.info("blob mounted digest=%s from=%s", layer.digest, layer.from_)
            progress.complete(layer.digest)
            return
        with blobs.open(layer.digest) as f:
            if layer.size <= options.upload_chunk:
                client.finish_upload(location, layer.digest, _Counting(f, report), layer.size)  # type: ignore[arg-type]
            else:
                offset = 0
                while offset < layer.size:
                    if cancel.is_set():
                        raise Canceled()
                    data = f.read(options.upload_chunk)
                    location = client.upload_chunk(location, data, offset)
                    offset += len(data)
                    report(offset)
                client.finish_upload(location, layer.digest, None, 0)
        progress.complete(layer.digest)

    return run
