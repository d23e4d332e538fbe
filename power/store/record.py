"""A stored model read back whole: its layers resolved, plus details and capabilities.

This is what the engine loads (model, adapter and projector paths, template,
system prompt, parameters, messages) and what ``show`` and ``tags`` describe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from power.names import ModelName
from power.prompt.capabilities import capabilities_of
from power.store.gguf import GGUFFile
from power.store.layout import Layout, StoredManifest
from power.store.manifest import (
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
    Manifest,
    ModelConfig,
    load_json,
)

__all__ = ["ModelRecord", "load_record", "details", "capabilities", "template_capabilities",
           "format_parameter_size", "shown_template", "DEFAULT_TEMPLATE"]

# What Ollama uses when a model has no template layer.
DEFAULT_TEMPLATE = "{{ .Prompt }}"
RANK_POOLING = 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK, as GGUF's <arch>.pooling_type writes it
_TEXT_LIMIT = 4 << 20


@dataclass(frozen=True)
class ModelRecord:
    """Everything a stored model's manifest names, read and decoded."""

    name: ModelName
    digest: str
    manifest: Manifest
    config: ModelConfig
    modified_at: datetime
    model_path: Path | None
    parent_model: str
    adapter_paths: tuple[Path, ...]
    projector_paths: tuple[Path, ...]
    draft_path: Path | None  # the draft model of speculative decoding
    template: str | None
    system: str
    parameters: Mapping[str, Any]
    licenses: tuple[str, ...]
    messages: tuple[Mapping[str, Any], ...]

    @property
    def size(self) -> int:
        return self.manifest.size


def _json_blob(layout: Layout, digest: str, want: type) -> Any:
    return load_json(layout.blobs.read_bytes(digest, _TEXT_LIMIT), f"layer {digest}", want)


def _text_blob(layout: Layout, digest: str) -> str:
    return layout.blobs.read_bytes(digest, _TEXT_LIMIT).decode("utf-8", "replace")


def load_record(layout: Layout, stored: StoredManifest) -> ModelRecord:
    """Resolve every layer of a manifest read from ``layout``."""
    m = stored.manifest
    config = ModelConfig.from_bytes(layout.blobs.read_bytes(m.config.digest))
    model_layers = m.layers_of(MEDIA_MODEL)
    template_layers = m.layers_of(MEDIA_TEMPLATE, MEDIA_PROMPT)
    system_layers = m.layers_of(MEDIA_SYSTEM)
    params_layers = m.layers_of(MEDIA_PARAMS)
    messages_layers = m.layers_of(MEDIA_MESSAGES)
    drafts = m.layers_of(MEDIA_DRAFT)
    messages: tuple[Mapping[str, Any], ...] = ()
    if messages_layers:
        raw = _json_blob(layout, messages_layers[-1].digest, list)
        messages = tuple(x for x in raw if isinstance(x, dict))
    return ModelRecord(
        name=stored.name,
        digest=stored.digest,
        manifest=m,
        config=config,
        modified_at=stored.modified_at,
        model_path=layout.blobs.path(model_layers[0].digest) if model_layers else None,
        parent_model=model_layers[0].from_ if model_layers else "",
        adapter_paths=tuple(layout.blobs.path(x.digest) for x in m.layers_of(MEDIA_ADAPTER)),
        projector_paths=tuple(layout.blobs.path(x.digest) for x in m.layers_of(MEDIA_PROJECTOR)),
        draft_path=layout.blobs.path(drafts[-1].digest) if drafts else None,
        template=_text_blob(layout, template_layers[-1].digest) if template_layers else None,
        system=_text_blob(layout, system_layers[-1].digest) if system_layers else "",
        parameters=_json_blob(layout, params_layers[-1].digest, dict) if params_layers else {},
        licenses=tuple(_text_blob(layout, x.digest) for x in m.layers_of(MEDIA_LICENSE)),
        messages=messages,
    )


def format_parameter_size(count: int) -> str:
    """Ollama's human parameter count: 8B, 3.2B, 137.5M, 33K."""
    for unit, scale, decimals in (("B", 1e9, 1), ("M", 1e6, 2)):
        if count >= scale:
            value = count / scale
            if value == int(value):
                return f"{int(value)}{unit}"
            return f"{value:.{decimals}f}{unit}"
    if count >= 1000:
        return f"{count / 1000:.0f}K"
    return str(count)


def details(config: ModelConfig, parent_model: str = "") -> dict[str, Any]:
    """The ``details`` object of ``/api/tags`` and ``/api/show``."""
    out: dict[str, Any] = {
        "parent_model": parent_model,
        "format": config.model_format,
        "family": config.model_family,
        "families": list(config.model_families) if config.model_families is not None else None,
        "parameter_size": config.model_type,
        "quantization_level": config.file_type,
    }
    if config.context_length:
        out["context_length"] = config.context_length
    if config.embedding_length:
        out["embedding_length"] = config.embedding_length
    return out


_ACTION = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)
_THINK_TAGS = re.compile(r"(<[^<>{}\s]+>)\s*\{\{-?\s*\.Thinking\s*-?\}\}\s*(</[^<>{}\s]+>)")


def template_capabilities(template: str | None, chat_template: str | None = None) -> set[str]:
    """Capabilities a prompt template implies: tools (.Tools), insert (.Suffix), thinking.

    Go templates are inspected through their actions; with no Go template, the
    GGUF Jinja chat template is used (tools, reasoning markers). A Jinja TEMPLATE
    (copied from ``show``) stands in for the GGUF's, as it does when rendering.
    """
    from power.prompt.jinja import is_jinja  # Jinja is loaded only when a template is judged

    found: set[str] = set()
    if template and is_jinja(template):
        template, chat_template = None, template
    if template:
        actions = " ".join(_ACTION.findall(template))
        if re.search(r"\.Tools\b", actions):
            found.add("tools")
        if re.search(r"\.Suffix\b", actions):
            found.add("insert")
        if _THINK_TAGS.search(template):
            found.add("thinking")
    elif chat_template:  # tools and thinking by every family's own tags, as the prompt code reads them
        found |= capabilities_of(None, chat_template) & {"tools", "thinking"}
    return found


def _rendering(record: ModelRecord, chat_template: Any) -> tuple[str | None, str | None]:
    from power.prompt.chat import rendering_template  # Jinja is loaded only when a template is judged

    return rendering_template(record.template, chat_template if isinstance(chat_template, str) else None)


def shown_template(record: ModelRecord, chat_template: Any) -> str:
    """The template ``show`` reports: the one that renders, the TEMPLATE layer or the GGUF's Jinja chat
    template (so that a Modelfile copied from ``show`` formats prompts the same), else Ollama's default."""
    go, jinja = _rendering(record, chat_template)
    if go is not None:
        return go
    return jinja or DEFAULT_TEMPLATE


def capabilities(record: ModelRecord, gguf: GGUFFile | None) -> list[str]:
    """The ``capabilities`` list of ``/api/show``, in Ollama's order."""
    found: set[str] = set()
    if gguf is not None:
        arch = gguf.architecture
        meta = gguf.metadata
        pooling = meta.get(f"{arch}.pooling_type")
        # Rank pooling (4) puts a classifier head on the output: a reranker scores, it does not embed.
        found.add("completion" if pooling is None else "rerank" if pooling == RANK_POOLING else "embedding")
        if f"{arch}.vision.block_count" in meta:
            found.add("vision")
        if f"{arch}.audio.block_count" in meta:
            found.add("audio")
        if "completion" in found:  # judged on the template that renders (the one show reports); an embedder's
            # or reranker's template says nothing it can do
            found |= template_capabilities(*_rendering(record, meta.get("tokenizer.chat_template")))
    elif record.config.capabilities:
        found |= set(record.config.capabilities)
    if record.projector_paths:
        found.add("vision")
    if record.config.model_family in ("gptoss", "gpt-oss"):
        found.add("thinking")
    order = ("completion", "embedding", "rerank", "tools", "insert", "vision", "thinking", "audio", "image")
    return [c for c in order if c in found]
