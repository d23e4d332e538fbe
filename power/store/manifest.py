"""Docker v2 manifests and the Ollama config blob, byte-compatible with Ollama.

Ollama writes the manifest with Go's ``json.Encoder`` (compact, struct field
order, trailing newline) and the config with ``json.Marshal``; we write the
same shapes so a model created here reads the same in Ollama. Reading is
lenient about extra fields and older forms (``rootfs``, missing ``from``) and
strict about types, digests and sizes: a malformed file raises ManifestError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from power.errors import InvalidDigest, ManifestError
from power.store.blobs import parse_digest

__all__ = [
    "MANIFEST_MEDIA_TYPE", "CONFIG_MEDIA_TYPE", "MEDIA_PREFIX",
    "MEDIA_MODEL", "MEDIA_ADAPTER", "MEDIA_PROJECTOR", "MEDIA_TEMPLATE", "MEDIA_PROMPT",
    "MEDIA_SYSTEM", "MEDIA_PARAMS", "MEDIA_LICENSE", "MEDIA_MESSAGES", "MEDIA_EMBED",
    "MEDIA_DRAFT", "Layer", "Manifest", "ModelConfig", "go_json", "load_json",
]

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MEDIA_PREFIX = "application/vnd.ollama.image."
MEDIA_MODEL = MEDIA_PREFIX + "model"
MEDIA_ADAPTER = MEDIA_PREFIX + "adapter"
MEDIA_PROJECTOR = MEDIA_PREFIX + "projector"
MEDIA_TEMPLATE = MEDIA_PREFIX + "template"
MEDIA_PROMPT = MEDIA_PREFIX + "prompt"  # legacy name of template
MEDIA_SYSTEM = MEDIA_PREFIX + "system"
MEDIA_PARAMS = MEDIA_PREFIX + "params"
MEDIA_LICENSE = MEDIA_PREFIX + "license"
MEDIA_MESSAGES = MEDIA_PREFIX + "messages"
MEDIA_EMBED = MEDIA_PREFIX + "embed"  # legacy, ignored
MEDIA_DRAFT = MEDIA_PREFIX + "draft"

_MAX_LAYERS = 4096


def go_json(value: Any, *, sort_keys: bool = False, newline: bool = False) -> bytes:
    """Encode JSON the way Go's encoding/json does (compact, HTML-safe escapes)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys,
                      allow_nan=False)
    for raw, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                     ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, esc)
    return (text + "\n" if newline else text).encode()


def load_json(data: bytes, what: str, want: type = dict) -> Any:
    """Decode a JSON document of the given top-level type, or raise ManifestError naming ``what``."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, want):
        raise ManifestError(f"{what} is not a JSON {'object' if want is dict else want.__name__}")
    return value


@dataclass(frozen=True)
class Layer:
    """One layer (or the config) of a manifest."""

    media_type: str
    digest: str
    size: int
    from_: str = ""
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            out["from"] = self.from_
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Layer:
        if not isinstance(obj, dict):
            raise ManifestError("manifest layer is not an object")
        media, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError("manifest layer has a bad mediaType or size")
        try:
            digest = parse_digest(digest)
        except InvalidDigest:
            raise ManifestError("manifest layer has an invalid digest") from None
        from_, name = obj.get("from", ""), obj.get("name", "")
        if not isinstance(from_, str) or not isinstance(name, str):
            raise ManifestError("manifest layer has a bad from or name")
        return cls(media, digest, size, from_, name)


@dataclass(frozen=True)
class Manifest:
    """A Docker v2 manifest naming a config blob and the model's layers."""

    config: Layer
    layers: tuple[Layer, ...]
    schema_version: int = 2
    media_type: str = MANIFEST_MEDIA_TYPE

    @property
    def size(self) -> int:
        """Total bytes of the layers and config, as ``/api/tags`` reports."""
        return self.config.size + sum(layer.size for layer in self.layers)

    def digests(self) -> set[str]:
        return {self.config.digest, *(layer.digest for layer in self.layers)}

    def layers_of(self, *media_types: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type in media_types]

    def to_bytes(self) -> bytes:
        return go_json({
            "schemaVersion": self.schema_version,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }, newline=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        obj = load_json(data, "manifest")
        version = obj.get("schemaVersion", 2)
        layers = obj.get("layers")
        layers = [] if layers is None else layers
        if not isinstance(version, int) or not isinstance(layers, list) or len(layers) > _MAX_LAYERS:
            raise ManifestError("manifest has a bad schemaVersion or layers")
        media = obj.get("mediaType", MANIFEST_MEDIA_TYPE)
        if not isinstance(media, str):
            raise ManifestError("manifest has a bad mediaType")
        return cls(Layer.from_json(obj.get("config")), tuple(Layer.from_json(x) for x in layers),
                   version, media)


@dataclass(frozen=True)
class ModelConfig:
    """The config blob: format, family, parameter size and quantization of a model."""

    model_format: str = ""
    model_family: str = ""
    model_families: tuple[str, ...] | None = None
    model_type: str = ""
    file_type: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    context_length: int = 0
    embedding_length: int = 0
    capabilities: tuple[str, ...] = ()
    architecture: str = "amd64"
    os: str = "linux"
    diff_ids: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)

    def to_bytes(self) -> bytes:
        out: dict[str, Any] = {
            "model_format": self.model_format,
            "model_family": self.model_family,
            "model_families": list(self.model_families) if self.model_families is not None else None,
            "model_type": self.model_type,
            "file_type": self.file_type,
        }
        for key in ("renderer", "parser", "requires"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.capabilities:
            out["capabilities"] = list(self.capabilities)
        if self.context_length:
            out["context_length"] = self.context_length
        if self.embedding_length:
            out["embedding_length"] = self.embedding_length
        out.update({k: v for k, v in self.extra.items() if k not in out})
        out["architecture"] = self.architecture
        out["os"] = self.os
        out["rootfs"] = {"type": "layers", "diff_ids": list(self.diff_ids)}
        return go_json(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelConfig:
        obj = load_json(data, "config blob")

        def text(key: str) -> str:
            v = obj.get(key)
            return v if isinstance(v, str) else ""

        def number(key: str) -> int:
            v = obj.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else 0

        def strings(v: Any) -> tuple[str, ...]:
            return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()

        families = obj.get("model_families")
        rootfs = obj.get("rootfs")
        known = {"model_format", "model_family", "model_families", "model_type", "file_type",
                 "renderer", "parser", "requires", "context_length", "embedding_length",
                 "capabilities", "architecture", "os", "rootfs"}
        return cls(
            model_format=text("model_format"), model_family=text("model_family"),
            model_families=strings(families) if isinstance(families, list) else None,
            model_type=text("model_type"), file_type=text("file_type"),
            renderer=text("renderer"), parser=text("parser"), requires=text("requires"),
            context_length=number("context_length"), embedding_length=number("embedding_length"),
            capabilities=strings(obj.get("capabilities")),
            architecture=text("architecture") or "amd64", os=text("os") or "linux",
            diff_ids=strings(rootfs.get("diff_ids")) if isinstance(rootfs, dict) else (),
            extra={k: v for k, v in obj.items() if k not in known},
        )
