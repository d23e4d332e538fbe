"""Store operations behind ``/api/tags``, ``/api/show``, ``/api/copy`` and ``/api/delete``."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from power.errors import ManifestError, ModelNotFound, NotFound
from power.names import ModelName, parse_name
from power.store.create import StoreContext, collect_garbage
from power.store.gguf import ArraySummary, GGUFFile, read_gguf
from power.store.layout import Layout
from power.store.manifest import ModelConfig
from power.store.modelfile import Command, format_modelfile
from power.store.params import format_parameters, go_value
from power.store.record import (
    ModelRecord,
    capabilities,
    details,
    format_parameter_size,
    load_record,
    shown_template,
)

__all__ = ["ModelSummary", "list_models", "show_model", "show_modelfile", "copy_model",
           "delete_model", "rfc3339"]

log = logging.getLogger(__name__)

# model_info arrays longer than this are shown as [] unless verbose.
SHOW_ARRAY_ITEMS = 5
_HIDDEN_KEYS = ("general.name", "tokenizer.chat_template")


def rfc3339(dt: datetime) -> str:
    """Format like Go's RFC3339Nano: fraction without trailing zeros, ``Z`` for UTC."""
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{dt.microsecond:06d}".rstrip("0")
    if frac:
        text += "." + frac
    offset = dt.utcoffset()
    if offset is None or offset == timedelta(0):
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclass(frozen=True)
class ModelSummary:
    """One entry of ``/api/tags``."""

    name: ModelName
    digest: str  # sha256:<hex> of the manifest
    size: int
    modified_at: datetime
    config: ModelConfig

    def to_json(self) -> dict[str, Any]:
        display = self.name.display()
        return {
            "name": display,
            "model": display,
            "modified_at": rfc3339(self.modified_at),
            "size": self.size,
            "digest": self.digest.removeprefix("sha256:"),
            "details": details(self.config),
        }


def list_models(layout: Layout) -> list[ModelSummary]:
    """Every readable model, newest first; unreadable ones are logged and skipped."""
    out = []
    for stored in layout.manifests():
        try:
            config = ModelConfig.from_bytes(layout.blobs.read_bytes(stored.manifest.config.digest))
        except (NotFound, ManifestError) as exc:
            log.warning("skipping model with unreadable config name=%s error=%s",
                        stored.name.display(), exc)
            continue
        out.append(ModelSummary(stored.name, stored.digest, stored.manifest.size,
                                stored.modified_at, config))
    out.sort(key=lambda m: m.modified_at, reverse=True)
    return out


def _json_safe(value: Any, verbose: bool) -> Any:
    if isinstance(value, ArraySummary):
        return []
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        if not verbose and len(value) > SHOW_ARRAY_ITEMS:
            return []
        return [_json_safe(v, verbose) for v in value]
    return value


def model_info(gguf: GGUFFile, verbose: bool) -> dict[str, Any]:
    """GGUF metadata as ``/api/show`` reports it (long arrays emptied unless verbose)."""
    info = {k: _json_safe(v, verbose) for k, v in gguf.metadata.items() if k not in _HIDDEN_KEYS}
    info.setdefault("general.parameter_count", gguf.parameter_count)
    return info


def _options(record: ModelRecord, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**record.parameters, **(overrides or {})}


def show_modelfile(record: ModelRecord, system: str | None = None,
                   options: Mapping[str, Any] | None = None, chat_template: Any = None) -> str:
    """The Modelfile ``show --modelfile`` prints for a stored model (``chat_template``: its GGUF's)."""
    cmds: list[Command] = []
    if record.model_path is not None:
        cmds.append(Command("from", str(record.model_path)))
    cmds += [Command("adapter", str(p)) for p in record.adapter_paths]
    if record.draft_path is not None:
        cmds.append(Command("draft", str(record.draft_path)))
    cmds += [Command("from", str(p)) for p in record.projector_paths]
    cmds.append(Command("template", shown_template(record, chat_template)))
    if system or record.system:
        cmds.append(Command("system", system or record.system))
    for key in ("renderer", "parser"):
        if getattr(record.config, key):
            cmds.append(Command(key, getattr(record.config, key)))
    for key, value in _options(record, options).items():
        for item in value if isinstance(value, list) else [value]:
            text = item if isinstance(item, str) else go_value(item)
            cmds.append(Command("parameter", text, key))
    cmds += [Command("license", text) for text in record.licenses]
    cmds += [Command("message", str(m.get("content", "")), str(m.get("role", "")))
             for m in record.messages]
    header = ('# Modelfile generated by "ollama show"\n'
              "# To build a new Modelfile based on this, replace FROM with:\n"
              f"# FROM {record.name.display()}\n\n")
    return header + format_modelfile(cmds)


def _details(record: ModelRecord) -> dict[str, Any]:
    """``details``, with the draft model's (ours: Ollama's show leaves it to the Modelfile) when there is one."""
    out = details(record.config, record.parent_model)
    if record.draft_path is not None:
        g = read_gguf(record.draft_path, max_array_items=0)
        out["draft"] = {"format": "gguf", "family": g.architecture,
                        "parameter_size": format_parameter_size(g.parameter_count),
                        "quantization_level": g.file_type_name}
    return out


def show_model(layout: Layout, name: str | ModelName, *, verbose: bool = False,
               system: str | None = None, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``/api/show`` response for ``name`` (empty fields left out, as Ollama's omitempty does)."""
    record = load_record(layout, layout.read(name))
    limit = None if verbose else SHOW_ARRAY_ITEMS
    gguf = read_gguf(record.model_path, max_array_items=limit) if record.model_path else None
    chat_template = gguf.metadata.get("tokenizer.chat_template") if gguf is not None else None
    out: dict[str, Any] = {
        "license": "\n".join(record.licenses),
        "modelfile": show_modelfile(record, system, options, chat_template),
        "parameters": format_parameters(_options(record, options)),
        "template": shown_template(record, chat_template),
        "system": system or record.system,
        "renderer": record.config.renderer,
        "parser": record.config.parser,
        "details": _details(record),
        "messages": [dict(m) for m in record.messages],
        "model_info": model_info(gguf, verbose) if gguf is not None else {},
    }
    if record.projector_paths:
        out["projector_info"] = model_info(read_gguf(record.projector_paths[0], max_array_items=limit),
                                           verbose)
    if gguf is not None:
        out["tensors"] = [{"name": t.name, "type": t.type_name, "shape": list(t.shape)}
                          for t in gguf.tensors]
    out["capabilities"] = capabilities(record, gguf)
    out["modified_at"] = rfc3339(record.modified_at)
    if record.config.requires:
        out["requires"] = record.config.requires
    keep = ("details", "model_info", "modified_at")
    return {k: v for k, v in out.items() if k in keep or v not in ("", [], None, {})}


def copy_model(ctx: StoreContext, source: str | ModelName, destination: str | ModelName) -> ModelName:
    """Copy a manifest byte for byte (so both names share one digest); return the new name."""
    layout = ctx.layout
    src = parse_name(source) if isinstance(source, str) else source
    dst = parse_name(destination) if isinstance(destination, str) else destination
    try:
        stored = layout.read(src)
    except ModelNotFound:
        raise ModelNotFound(src.display(), f'model "{source}" not found') from None
    with ctx.lock:
        target = layout.canonical(dst)
        old = layout.resolve(target)
        old_digests = layout.read(old).manifest.digests() if old is not None else set()
        layout.write(target, stored.raw)
        if old_digests and not ctx.noprune:
            collect_garbage(ctx, old_digests - stored.manifest.digests())
    return target


def delete_model(ctx: StoreContext, name: str | ModelName, pinned: Iterable[str] = ()) -> list[str]:
    """Delete a model's manifest, then the blobs no other manifest names; return those digests."""
    with ctx.lock:
        stored = ctx.layout.read(name)
        ctx.layout.remove(stored.name)
        return collect_garbage(ctx, stored.manifest.digests(), pinned)
