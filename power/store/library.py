"""ModelStore: the one object the server, the CLI and the engine use to reach the store."""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from power.config import Settings
from power.names import ModelName, parse_name
from power.store.atomic import TMP_PREFIX, remove_dead_temps
from power.store.blobs import BlobStore
from power.store.create import (
    Quantizer,
    StoreContext,
    TemplateDetector,
    _native_quantize,
    collect_garbage,
    create_model,
)
from power.store.layout import Layout, TreeState
from power.store.modelfile import parse_modelfile
from power.store.ops import (
    ModelSummary,
    copy_model,
    delete_model,
    list_models,
    show_model,
)
from power.store.record import ModelRecord, load_record
from power.store.request import CreateRequest, request_from_modelfile
from power.store.watch import RECHECK_S, TreeWatch

__all__ = ["PRUNE_GRACE", "ModelStore"]

log = logging.getLogger(__name__)

# Prune spares blobs touched this recently: a client may have uploaded them for
# a create it is about to send, or another process may be creating or pulling a
# model that is about to name them.
PRUNE_GRACE = 600.0


class ModelStore:
    """A models folder (Ollama's layout) with every operation on it.

    One instance per process: creates and garbage collection in this process
    are serialised through its lock, and blobs a create is using are never
    collected. ``in_use`` (optional) returns digests that runners hold open;
    they are never collected either (P5).
    """

    def __init__(
        self,
        root: Path,
        *,
        noprune: bool = False,
        in_use: Callable[[], Iterable[str]] | None = None,
        quantizer: Quantizer | None = None,
        template_detector: TemplateDetector | None = None,
        max_blob_size: int | None = None,
        prune_grace: float = PRUNE_GRACE,
    ) -> None:
        self.layout = Layout(Path(root), BlobStore(Path(root) / "blobs", max_size=max_blob_size))
        self._listing: tuple[TreeState | None, tuple[ModelSummary, ...], int] = (None, (), 0)
        self._watch: TreeWatch | None = None  # see ``watch_listing``
        self._changes = 0  # changes the watch has reported
        self._compared = 0.0  # when the listing's tree was last compared by stats
        self.ctx = StoreContext(self.layout, threading.RLock(), {}, noprune,
                                quantizer or _native_quantize, 0, template_detector)
        self._in_use = in_use
        self.prune_grace = prune_grace
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ModelStore:
        return cls(settings.models, noprune=settings.noprune, **kwargs)

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def blobs(self) -> BlobStore:
        return self.layout.blobs

    def unreadable(self) -> str | None:
        """Why the models folder cannot be read now (for readiness probes), or None when it can.

        A folder that does not exist yet is an empty library, not a fault: the first pull creates it.
        """
        for folder in (self.layout.root, self.layout.manifests_dir, self.blobs.root):
            try:
                with os.scandir(folder):
                    pass
            except FileNotFoundError:
                continue
            except OSError as exc:
                return f"model store {folder} is not readable: {exc.strerror or exc}"
        return None

    def _pinned(self) -> set[str]:
        return set(self._in_use()) if self._in_use is not None else set()

    # -- lifecycle --------------------------------------------------------------
    def startup(self, sweep_every: float | None = None) -> list[str]:
        """Prune unreferenced blobs unless OLLAMA_NOPRUNE, then keep doing so; return what was removed now.

        A blob uploaded for a create that never came (the client or the server
        died, or the create failed while another client was still using the
        blob) is young at startup and spared; the sweep every ``sweep_every``
        seconds (default: the grace period) collects it once the grace is over.
        """
        if self.ctx.noprune:
            log.info("prune skipped: OLLAMA_NOPRUNE is set")
            return []
        removed = self.prune()
        if self._sweeper is None:
            interval = self.prune_grace if sweep_every is None else sweep_every
            self._sweeper = threading.Thread(target=self._sweep, args=(max(interval, 0.05),),
                                             name="store-sweep", daemon=True)
            self._sweeper.start()
        return removed

    def close(self) -> None:
        """Stop the sweep that ``startup`` started (and the listing's watch)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sweeper is not None:
            self._sweeper.join(5)
            self._sweeper = None

    def _sweep(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.prune()
            except Exception:  # a sweep that fails (a disk gone) must not end the sweeping
                log.warning("periodic prune failed", exc_info=True)

    def prune(self, grace: float | None = None) -> list[str]:
        """Remove blobs no manifest names, stale temporary files and empty manifest folders."""
        grace = self.prune_grace if grace is None else grace
        self.blobs.remove_stale_temps()
        manifests = self.root / "manifests"
        for folder in {p.parent for p in manifests.rglob(f"{TMP_PREFIX}*")} if manifests.is_dir() else ():
            remove_dead_temps(folder)  # a manifest write that died before its rename
        removed = collect_garbage(self.ctx, None, self._pinned(), grace)
        if removed:
            log.info("pruned unused blobs count=%d", len(removed))
        return removed

    # -- reading ----------------------------------------------------------------
    def resolve(self, name: str | ModelName) -> ModelName | None:
        """The stored name matching ``name`` case-insensitively, or None."""
        return self.layout.resolve(name)

    def get(self, name: str | ModelName) -> ModelRecord:
        """Everything the engine needs to load a model (raises ModelNotFound)."""
        return load_record(self.layout, self.layout.read(name))

    def list(self) -> list[ModelSummary]:
        return builtins.list(self.listing())

    def listing(self) -> tuple[ModelSummary, ...]:
        """Every readable model, newest first: the same tuple until something in the manifests folder changes.

        Clients poll ``/api/tags``; an unchanged library costs a stat per folder and manifest, not a read,
        or with ``watch_listing`` one read of the kernel's change events (and the stats once a ``RECHECK_S``).
        """
        state, listing, seen = self._listing
        watch = self._watch
        if state is not None:
            if watch is None or not watch.watching(str(self.layout.manifests_dir)):  # none yet: stats see it made
                if self.layout.unchanged(state):
                    return listing
            else:
                if watch.changed():
                    self._changes += 1  # every caller from now on relists until one listing started after this
                now = time.monotonic()
                if seen == self._changes:
                    if now - self._compared < RECHECK_S:
                        return listing
                    if self.layout.unchanged(state):  # what inotify cannot see: another host's writes (NFS)
                        self._compared = now
                        return listing
        seen = self._changes
        if watch is not None:
            watch.changed()  # a change from here on is seen next time
            watch.forget()
            while watch.watch(self.layout.folders()):  # until no new folder appeared while watching
                pass
        state = self.layout.tree_state()  # taken first: a change made while listing shows next time
        listing = tuple(list_models(self.layout))
        self._listing = (state, listing, seen)
        self._compared = time.monotonic()
        return listing

    def watch_listing(self) -> bool:
        """Have the kernel tell ``listing`` of changes (inotify, ``power.store.watch``); False where it cannot."""
        if self._watch is None:
            self._watch = TreeWatch.open()
            self._listing = (None, (), 0)
        return self._watch is not None

    def show(self, name: str | ModelName, *, verbose: bool = False, system: str | None = None,
             options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return show_model(self.layout, name, verbose=verbose, system=system, options=options)

    def modelfile(self, name: str | ModelName) -> str:
        return self.show(name)["modelfile"]

    # -- writing ----------------------------------------------------------------
    def copy(self, source: str | ModelName, destination: str | ModelName) -> ModelName:
        return copy_model(self.ctx, source, destination)

    def delete(self, name: str | ModelName) -> builtins.list[str]:
        """Delete a model and the blobs nothing else uses; return the removed digests."""
        return delete_model(self.ctx, name, self._pinned())

    def create(self, request: CreateRequest | Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Create from an ``/api/create`` request; yields progress dicts ending in success."""
        if not isinstance(request, CreateRequest):
            request = CreateRequest.from_json(request)
        return create_model(self.ctx, request)

    def create_from_modelfile(self, model: str, modelfile: str | bytes, base_dir: Path, *,
                              quantize: str = "", draft_quantize: str = "") -> Iterator[dict[str, Any]]:
        """Create from Modelfile text whose relative paths start at ``base_dir`` (the CLI form)."""
        parsed = parse_modelfile(modelfile)
        parse_name(model)
        return create_model(self.ctx, lambda add: request_from_modelfile(
            parsed, model, Path(base_dir), add, quantize=quantize, draft_quantize=draft_quantize))
