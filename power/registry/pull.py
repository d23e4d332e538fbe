"""Pull a model by name from an Ollama-style registry into the store.

Order (P1, P2): fetch the manifest and check it; download every layer not yet
present (each verified and renamed by the store as it completes); write the
manifest verbatim last; then drop blobs the previous version of the name used
and nothing else does. The blobs a pull has or is fetching are held in the
store's in-flight set, so a concurrent garbage collection leaves them alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from power.errors import (
    Canceled,
    ManifestError,
    ModelNotFound,
    RegistryError,
    RemoteNotFound,
)
from power.names import ModelName
from power.registry.client import RegistryClient
from power.registry.download import Download, TransferOptions
from power.registry.progress import Event, LayerProgress, run_reporting, status
from power.registry.transport import Response
from power.store.create import StoreContext, collect_garbage
from power.store.manifest import (
    CONFIG_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    MEDIA_PREFIX,
    Layer,
    Manifest,
)

__all__ = ["RegistryBlob", "check_manifest", "held", "pull_from_registry", "write_and_collect"]

log = logging.getLogger(__name__)

_MANIFEST_TYPES = {MANIFEST_MEDIA_TYPE, "application/vnd.oci.image.manifest.v1+json"}
_CONFIG_TYPES = {CONFIG_MEDIA_TYPE, "application/vnd.oci.image.config.v1+json"}


@dataclass(frozen=True)
class RegistryBlob:
    """A blob on a registry as a download source (redirects to blob hosts are followed)."""

    client: RegistryClient
    digest: str

    def get(self, first: int | None, last: int | None, read_timeout: float) -> Response:
        headers = {"Range": f"bytes={first}-{last}"} if first is not None else {}
        return self.client.send("GET", self.client.blob_url(self.digest), headers=headers,
                                read_timeout=read_timeout)


def check_manifest(raw: bytes) -> Manifest:
    """Parse a registry manifest and refuse media types we would not know how to use."""
    manifest = Manifest.from_bytes(raw)
    if manifest.media_type not in _MANIFEST_TYPES:
        raise ManifestError(f"unsupported manifest media type {manifest.media_type!r}")
    if manifest.config.media_type not in _CONFIG_TYPES:
        raise ManifestError(f"unsupported config media type {manifest.config.media_type!r}")
    for layer in manifest.layers:
        if not layer.media_type.startswith(MEDIA_PREFIX):
            raise ManifestError(f"unsupported layer media type {layer.media_type!r}")
    return manifest


@contextmanager
def held(ctx: StoreContext, digests: set[str]) -> Iterator[None]:
    """Keep garbage collection away from ``digests`` for the duration."""
    with ctx.lock:
        for digest in digests:
            ctx.inflight[digest] = ctx.inflight.get(digest, 0) + 1
    try:
        yield
    finally:
        with ctx.lock:
            for digest in digests:
                left = ctx.inflight.get(digest, 0) - 1
                if left > 0:
                    ctx.inflight[digest] = left
                else:
                    ctx.inflight.pop(digest, None)


def write_and_collect(ctx: StoreContext, name: ModelName, raw: bytes) -> Iterator[Event]:
    """Write the manifest (last), then remove blobs only the replaced version used."""
    layout = ctx.layout
    name = layout.canonical(name)
    try:
        old = layout.read(name).manifest.digests()
    except (ModelNotFound, ManifestError):
        old = set()
    yield status("writing manifest")
    with ctx.lock:
        layout.write(name, raw)
    stale = old - Manifest.from_bytes(raw).digests()
    if stale and not ctx.noprune:
        yield status("removing unused layers")
        removed = collect_garbage(ctx, stale)
        log.info("pull removed unused layers model=%s count=%d", name.display(), len(removed))


def pull_from_registry(ctx: StoreContext, client: RegistryClient, name: ModelName,
                       options: TransferOptions) -> Iterator[Event]:
    """Yield Ollama's pull statuses; the manifest is fetched before the first one."""
    try:
        raw = client.manifest(name.tag)
    except RemoteNotFound:
        raise RemoteNotFound("pull model manifest: file does not exist") from None
    except RegistryError as exc:  # keeps the type, so a caller can tell an unreachable host apart
        raise type(exc)(f"pull model manifest: {exc}") from exc
    manifest = check_manifest(raw)
    yield status("pulling manifest")
    layers: list[Layer] = [*manifest.layers, manifest.config]
    progress = LayerProgress("pulling")
    cancel = threading.Event()
    tasks = []
    created: list[str] = []
    seen: set[str] = set()
    for layer in layers:
        if layer.digest in seen:
            continue
        seen.add(layer.digest)
        if ctx.layout.blobs.exists(layer.digest):
            ctx.layout.blobs.touch(layer.digest)
            progress.add(layer.digest, layer.size, layer.size)
            continue
        progress.add(layer.digest, layer.size)
        tasks.append(_task(ctx, client, layer, options, progress, cancel, created))
    try:
        with held(ctx, seen):
            yield from run_reporting(tasks, progress, cancel, options.streams)
            yield status("verifying sha256 digest")
            missing = [d for d in seen if not ctx.layout.blobs.exists(d)]
            if missing:
                raise RegistryError(f"blob {missing[0]} is missing after download")
            yield from write_and_collect(ctx, name, raw)
    except Exception as exc:
        if not isinstance(exc, Canceled):  # a failed pull leaves no orphan blobs behind
            collect_garbage(ctx, set(created))
        raise
    log.info("pulled model=%s layers=%d downloaded=%d", name.display(), len(seen), len(tasks))
    yield status("success")


def _task(ctx: StoreContext, client: RegistryClient, layer: Layer, options: TransferOptions,
          progress: LayerProgress, cancel: threading.Event, created: list[str]) -> Callable[[], None]:
    def run() -> None:
        info = Download(ctx.layout.blobs, RegistryBlob(client, layer.digest), layer.size, digest=layer.digest,
                        options=options, on_progress=progress.setter(layer.digest), cancel=cancel).run()
        if info.created:
            created.append(info.digest)
        progress.complete(layer.digest)
    return run
