"""Create a model: resolve the base, set layers, quantize, write config and manifest.

Mirrors Ollama's create: the same progress statuses (``parsing GGUF``,
``quantizing F16 model to Q4_K_M``, ``verifying conversion``, ``creating new
layer sha256:…``, ``using existing layer sha256:…``, ``writing manifest``,
``success``), identical layers reused by digest, and the manifest written last.
If any step fails (or the consumer stops iterating) the blobs this create wrote
are removed again, so the store is left as it was.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Iterator, Protocol

from power.errors import InvalidRequest, ModelNotFound, NativeError, NotFound
from power.names import parse_name
from power.store.blobs import BlobInfo, sha256_digest
from power.store.ggml_types import can_quantize, parse_quantize_type
from power.store.gguf import GGUFFile, is_gguf, read_gguf
from power.store.layout import Layout
from power.store.manifest import (
    CONFIG_MEDIA_TYPE,
    MEDIA_ADAPTER,
    MEDIA_DRAFT,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
    ModelConfig,
    go_json,
    load_json,
)
from power.store.record import format_parameter_size
from power.store.request import CREATE_LIMITS, CreateRequest
from power.store.vocab import vocab_mismatch

__all__ = ["StoreContext", "Quantizer", "TemplateDetector", "create_model", "collect_garbage"]

log = logging.getLogger(__name__)

Progress = dict[str, Any]


class Quantizer(Protocol):
    def __call__(self, src_path: str, dst_path: str, ftype: str, nthreads: int = 0) -> None: ...


# Given a GGUF chat template, return (name, Go template, extra parameters) or None.
TemplateDetector = Callable[[str], "tuple[str, str, dict[str, Any]] | None"]


def _native_quantize(src_path: str, dst_path: str, ftype: str, nthreads: int = 0) -> None:
    # Imported here so that importing the store (the API server does) never loads native code.
    try:
        from power import native
    except ImportError as exc:
        raise NativeError(f"quantization needs the native library, which failed to load: {exc}") from exc
    native.quantize(src_path, dst_path, ftype, nthreads)


@dataclass
class StoreContext:
    """The store a create runs against and what it shares with garbage collection."""

    layout: Layout
    lock: threading.RLock = field(default_factory=threading.RLock)
    inflight: dict[str, int] = field(default_factory=dict)  # digests GC must not touch
    noprune: bool = False
    quantizer: Quantizer = _native_quantize
    quantize_threads: int = 0
    template_detector: TemplateDetector | None = None


@dataclass
class _Item:
    layer: Layer
    gguf: GGUFFile | None = None


class _Session:
    """Blobs written by one create; removed again unless a manifest came to use them.

    The files a request names by digest were uploaded for it (``POST
    /api/blobs``) and are removed as well if the create fails and nothing
    else wants them: no manifest names them, no other create holds them, and
    nobody touched them (uploaded them again) since this create took them.
    """

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.held: list[str] = []
        self.created: list[str] = []
        self.existing: set[str] = set()
        self.uploads: set[str] = set()
        self.stamps: dict[str, float] = {}  # digest -> its mtime after this create last touched it
        self.wanted: set[str] = set()  # uploads someone else touched (uploaded again) meanwhile

    def hold(self, digest: str) -> None:
        with self.ctx.lock:
            self.ctx.inflight[digest] = self.ctx.inflight.get(digest, 0) + 1
            self.held.append(digest)
            path = self.ctx.layout.blobs.path(digest)
            if _mtime(path) > self.stamps.get(digest, math.inf):
                self.wanted.add(digest)  # touched by someone else since this create last did
            self.ctx.layout.blobs.touch(digest)
            self.stamps[digest] = _mtime(path)

    def record(self, info: BlobInfo) -> BlobInfo:
        self.hold(info.digest)
        if info.created:
            self.created.append(info.digest)
        else:
            self.existing.add(info.digest)
        return info

    def add_file(self, path: Path) -> BlobInfo:
        return self.record(self.ctx.layout.blobs.add_file(path))

    def add_bytes(self, data: bytes) -> BlobInfo:
        with self.ctx.lock:  # GC must not remove a pre-existing blob between check and hold
            return self.record(self.ctx.layout.blobs.add_bytes(data))

    def rollback(self) -> None:
        with self.ctx.lock:
            try:
                refs = self.ctx.layout.referenced_digests()
            except Exception:  # a corrupt manifest might name anything: keep everything
                log.warning("create rollback skipped: manifests unreadable")
                return
            blobs = self.ctx.layout.blobs
            unwanted = [d for d in self.created if d not in refs and self._only_ours(d)]
            unwanted += [d for d in self.uploads - set(self.created) - self.wanted if d not in refs
                         and self._only_ours(d) and _mtime(blobs.path(d)) <= self.stamps.get(d, 0.0)]
            for digest in unwanted:
                blobs.delete(digest)

    def _only_ours(self, digest: str) -> bool:
        return self.ctx.inflight.get(digest, 0) <= self.held.count(digest)

    def release(self) -> None:
        with self.ctx.lock:
            for digest in self.held:
                left = self.ctx.inflight.get(digest, 0) - 1
                if left > 0:
                    self.ctx.inflight[digest] = left
                else:
                    self.ctx.inflight.pop(digest, None)
            self.held.clear()


def create_model(ctx: StoreContext,
                 request: CreateRequest | Callable[[Callable[[Path], BlobInfo]], CreateRequest],
                 ) -> Iterator[Progress]:
    """Create a model; yield Ollama's progress dicts, ending with ``success``.

    ``request`` may instead be a function that builds the request given a way
    to add a file to the blob store inside this create (the Modelfile form),
    so that those copies are rolled back on failure too.
    """
    session = _Session(ctx)
    try:
        if not isinstance(request, CreateRequest):
            yield {"status": "gathering model components"}
            request = request(session.add_file)
        yield from _create(ctx, session, request)
    except BaseException:
        session.rollback()
        raise
    finally:
        session.release()


def _create(ctx: StoreContext, session: _Session, req: CreateRequest) -> Iterator[Progress]:
    layout = ctx.layout
    name = layout.canonical(parse_name(req.model))
    items: list[_Item] = []
    base_config = ModelConfig()
    if req.from_:
        base_config, items = _from_model(layout, session, req.from_)
    for files, adapters in ((req.files, False), (req.adapters, True)):
        for key, digest in files.items():
            yield {"status": "parsing GGUF"}
            item = _file_item(layout, session, key, digest, adapters)
            if item.layer.media_type == MEDIA_MODEL:
                items = [i for i in items if i.layer.media_type != MEDIA_MODEL]
            items.append(item)
    if not any(i.layer.media_type == MEDIA_MODEL for i in items):
        if any(i.layer.media_type == MEDIA_ADAPTER for i in items):
            raise InvalidRequest("no base model was specified for the adapter")
        if not items:
            raise InvalidRequest("neither 'from' or 'files' was specified")
    draft = _draft_item(layout, session, req)
    if draft is not None:
        yield {"status": "parsing GGUF"}
        items = [i for i in items if i.layer.media_type != MEDIA_DRAFT] + [draft]
    _check_draft(layout, items)
    if req.draft_quantize and not any(i.layer.media_type == MEDIA_DRAFT for i in items):
        raise InvalidRequest("draft_quantize requires a DRAFT model")
    if req.quantize:
        items = yield from _quantize(ctx, session, items, parse_quantize_type(req.quantize))
    if req.draft_quantize:
        items = yield from _quantize(ctx, session, items, parse_quantize_type(req.draft_quantize), MEDIA_DRAFT)
    config = _config(items, base_config, req)
    items = yield from _set_text_layers(ctx, session, items, req)

    layers = [i.layer for i in items]
    for layer in layers:
        verb = "using existing" if layer.digest not in session.created else "creating new"
        yield {"status": f"{verb} layer {layer.digest}"}
    config = replace(config, diff_ids=tuple(layer.digest for layer in layers))
    config_info = session.add_bytes(config.to_bytes())
    manifest = Manifest(Layer(CONFIG_MEDIA_TYPE, config_info.digest, config_info.size), tuple(layers))
    yield {"status": "writing manifest"}
    with ctx.lock:
        old = layout.resolve(name)
        old_digests = layout.read(old).manifest.digests() if old is not None else set()
        layout.write(name, manifest)
        if old_digests and not ctx.noprune:
            collect_garbage(ctx, old_digests - manifest.digests())
    yield {"status": "success"}


def _from_model(layout: Layout, session: _Session, from_: str) -> tuple[ModelConfig, list[_Item]]:
    base = parse_name(from_)
    try:
        stored = layout.read(base)
    except ModelNotFound:
        raise ModelNotFound(base.display(), f"model '{from_}' not found") from None
    display = stored.name.display()
    config = ModelConfig.from_bytes(layout.blobs.read_bytes(stored.manifest.config.digest))
    items = []
    for layer in stored.manifest.layers:
        session.hold(layer.digest)
        session.existing.add(layer.digest)
        gguf = None
        if layer.media_type in (MEDIA_MODEL, MEDIA_PROJECTOR, MEDIA_ADAPTER, MEDIA_DRAFT):
            gguf = read_gguf(layout.blobs.path(layer.digest), max_array_items=0)
        items.append(_Item(replace(layer, from_=display), gguf))
    return config, items


def _draft_item(layout: Layout, session: _Session, req: CreateRequest) -> _Item | None:
    """The request's draft model as a draft layer: its one GGUF file, or a stored model's model layer."""
    if req.draft:
        _, found = _from_model(layout, session, req.draft)
        model = next((i for i in found if i.layer.media_type == MEDIA_MODEL), None)
        if model is None:
            raise InvalidRequest(f"draft model '{req.draft}' has no model layer")
        return replace(model, layer=replace(model.layer, media_type=MEDIA_DRAFT))
    if not req.draft_files:
        return None
    if len(req.draft_files) > 1:
        raise InvalidRequest("a draft model must be a single GGUF file")
    key, digest = next(iter(req.draft_files.items()))
    item = _file_item(layout, session, key, digest, False)
    if item.layer.media_type != MEDIA_MODEL:
        raise InvalidRequest(f"draft {key} is not a language model")
    return replace(item, layer=replace(item.layer, media_type=MEDIA_DRAFT))


def _check_draft(layout: Layout, items: list[_Item]) -> None:
    """Refuse a draft whose vocabulary is not the model's (its tokens could not be verified)."""
    model = next((i for i in items if i.layer.media_type == MEDIA_MODEL), None)
    draft = next((i for i in items if i.layer.media_type == MEDIA_DRAFT), None)
    if model is None or draft is None:
        return
    if draft.gguf is not None and draft.gguf.kind != "model":
        raise InvalidRequest(f"the draft is not a language model (general.type is {draft.gguf.kind!r})")
    why = vocab_mismatch(read_gguf(layout.blobs.path(model.layer.digest)),
                         read_gguf(layout.blobs.path(draft.layer.digest)))
    if why is not None:
        raise InvalidRequest(f"draft model's vocabulary does not match the model's: {why}")


def _file_item(layout: Layout, session: _Session, key: str, digest: str, adapter: bool) -> _Item:
    path = layout.blobs.path(digest)
    if not layout.blobs.exists(digest):
        raise NotFound(f"blob {digest} for {key} not found; upload it first")
    session.hold(digest)
    if digest not in session.created:
        session.existing.add(digest)
        session.uploads.add(digest)
    if key.endswith(".safetensors") or key.endswith(".json"):
        raise InvalidRequest("safetensors import is not supported; convert the model to GGUF")
    if not is_gguf(path):
        raise InvalidRequest(f"{key} is not a GGUF file")
    gguf = read_gguf(path, max_array_items=0)
    if adapter or gguf.kind == "adapter":
        if gguf.kind != "adapter":
            raise InvalidRequest(f"{key} is not a LoRA adapter (general.type is {gguf.kind!r})")
        media = MEDIA_ADAPTER
    elif gguf.kind in ("projector", "mmproj") or gguf.architecture == "clip" or (
            not gguf.arch_value("block_count") and gguf.arch_value("vision.block_count")):
        media = MEDIA_PROJECTOR
    else:
        media = MEDIA_MODEL
    return _Item(Layer(media, digest, layout.blobs.size(digest)), gguf)


def _quantize(ctx: StoreContext, session: _Session, items: list[_Item], want: str,
              media: str = MEDIA_MODEL) -> Generator[Progress, None, list[_Item]]:
    """Quantize the layers of ``media`` (the model's, or the draft model's) to ``want``."""
    out: list[_Item] = []
    for item in items:
        g = item.gguf
        if item.layer.media_type != media or g is None or g.file_type_name == want:
            out.append(item)
            continue
        have = g.file_type_name
        if not can_quantize(have, want):
            raise InvalidRequest(f"quantization is only supported for F16, BF16 and F32 models, or to a smaller "
                                 f"type than a quantized model's ({have} to {want} is not)")
        src = ctx.layout.blobs.path(item.layer.digest)
        yield {"status": f"quantizing {have} model to {want}", "digest": "0000000000000000",
               "total": item.layer.size, "completed": 0}
        tmp = ctx.layout.blobs.temp_path(".gguf")
        try:
            ctx.quantizer(str(src), str(tmp), want, ctx.quantize_threads)
            info = ctx.layout.blobs.adopt(tmp)
        finally:
            tmp.unlink(missing_ok=True)
        session.record(info)
        yield {"status": f"quantizing {have} model to {want}", "digest": "0000000000000000",
               "total": item.layer.size, "completed": item.layer.size}
        yield {"status": "verifying conversion"}
        new = read_gguf(ctx.layout.blobs.path(info.digest), max_array_items=0)
        out.append(_Item(Layer(media, info.digest, info.size), new))
    return out


def _config(items: list[_Item], base: ModelConfig, req: CreateRequest) -> ModelConfig:
    ggufs = [i.gguf for i in items if i.gguf is not None and i.layer.media_type != MEDIA_DRAFT]
    families: list[str] = []
    for g in ggufs:
        if g.architecture and g.architecture not in families:
            families.append(g.architecture)
    first = next((i.gguf for i in items if i.layer.media_type == MEDIA_MODEL and i.gguf), None)
    first = first or (ggufs[0] if ggufs else None)
    config = base
    if first is not None:
        config = replace(base, model_format="gguf", model_family=first.architecture,
                         model_families=tuple(families),
                         model_type=format_parameter_size(first.parameter_count),
                         file_type=first.file_type_name)
    # Ollama's config names the draft layer's format and architecture.
    extra = {k: v for k, v in config.extra.items() if k != "draft"}
    draft = next((i.gguf for i in items if i.layer.media_type == MEDIA_DRAFT and i.gguf), None)
    if draft is not None:
        extra["draft"] = {"model_format": "gguf", "architecture": draft.architecture}
    return replace(config, renderer=req.renderer or base.renderer, parser=req.parser or base.parser,
                   requires=req.requires or base.requires, extra=extra)


def _set_text_layers(ctx: StoreContext, session: _Session, items: list[_Item],
                     req: CreateRequest) -> Generator[Progress, None, list[_Item]]:
    def text_layer(media: str, data: bytes) -> _Item:
        info = session.add_bytes(data)
        return _Item(Layer(media, info.digest, info.size))

    def without(*media: str) -> list[_Item]:
        return [i for i in items if i.layer.media_type not in media]

    params = dict(req.parameters or {})
    template = req.template
    model = next((i.gguf for i in items if i.layer.media_type == MEDIA_MODEL and i.gguf), None)
    has_template = any(i.layer.media_type in (MEDIA_TEMPLATE, MEDIA_PROMPT) for i in items)
    chat_template = model.get("tokenizer.chat_template") if model is not None else None
    if (template is None and not has_template and ctx.template_detector is not None
            and isinstance(chat_template, str)):
        found = ctx.template_detector(chat_template)
        if found is not None:
            yield {"status": f"using autodetected template {found[0]}"}
            template = found[1]
            params = {**found[2], **params}
    if template and template == chat_template:
        # The GGUF's own chat template (a Modelfile copied from ``show``): it renders from the GGUF as it is.
        items = without(MEDIA_TEMPLATE, MEDIA_PROMPT)
    elif template:
        items = without(MEDIA_TEMPLATE, MEDIA_PROMPT) + [text_layer(MEDIA_TEMPLATE, template.encode())]
    if req.system:
        items = without(MEDIA_SYSTEM) + [text_layer(MEDIA_SYSTEM, req.system.encode())]
    if req.license:
        items = _add_licenses(items, req.license, text_layer)
    if params:  # merged over the base's parameters, the request's values winning
        for old in (i for i in items if i.layer.media_type == MEDIA_PARAMS):
            base = load_json(ctx.layout.blobs.read_bytes(old.layer.digest), f"layer {old.layer.digest}")
            params = {**base, **params}
        items = without(MEDIA_PARAMS) + [text_layer(MEDIA_PARAMS, go_json(params, sort_keys=True, newline=True))]
    if req.messages is not None:
        data = go_json([dict(m) for m in req.messages], newline=True)
        items = without(MEDIA_MESSAGES) + [text_layer(MEDIA_MESSAGES, data)]
    return items


def _add_licenses(items: list[_Item], texts: Iterable[str],
                  text_layer: Callable[[str, bytes], _Item]) -> list[_Item]:
    """Append one license layer per distinct text not already there (one pass, one blob per text)."""
    have = {i.layer.digest for i in items if i.layer.media_type == MEDIA_LICENSE}
    new = [data for data in dict.fromkeys(text.encode() for text in texts) if sha256_digest(data) not in have]
    if len(have) + len(new) > CREATE_LIMITS.licenses:  # a chain of creates must not grow without bound
        raise InvalidRequest(f"license: the model would have {len(have) + len(new)} licenses; "
                             f"at most {CREATE_LIMITS.licenses} are allowed")
    return items + [text_layer(MEDIA_LICENSE, data) for data in new]


def collect_garbage(ctx: StoreContext, candidates: set[str] | None = None,
                    pinned: Iterable[str] = (), grace: float = 0.0) -> list[str]:
    """Delete blobs (all, or only ``candidates``) that no manifest names and nothing holds.

    ``grace`` spares blobs touched in the last so many seconds: another process
    may be creating a model that will name them.
    """
    pinned = set(pinned)
    cutoff = time.time() - grace
    with ctx.lock:
        try:
            refs = ctx.layout.referenced_digests()
        except Exception as exc:  # one unreadable manifest could name any blob
            log.warning("garbage collection skipped: %s", exc)
            return []
        pool = ctx.layout.blobs.digests() if candidates is None else candidates
        removed = []
        for digest in sorted(pool):
            if digest in refs or digest in ctx.inflight or digest in pinned:
                continue
            if grace > 0 and _mtime(ctx.layout.blobs.path(digest)) > cutoff:
                continue
            if ctx.layout.blobs.delete(digest):
                removed.append(digest)
        return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
