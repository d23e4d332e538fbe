"""Ollama's native API: generation, chat, embeddings and model management under ``/api``."""

from __future__ import annotations

from power.server.ollama.embed import EmbedResource, LegacyEmbeddingsResource
from power.server.ollama.generate import ChatResource, GenerateResource
from power.server.ollama.models import (
    BlobResource, CopyResource, CreateResource, DeleteResource, PsResource, RootResource,
    ShowResource, TagsResource, TransferResource, VersionResource,
)

__all__ = [
    "BlobResource", "ChatResource", "CopyResource", "CreateResource", "DeleteResource", "EmbedResource",
    "GenerateResource", "LegacyEmbeddingsResource", "PsResource", "RootResource", "ShowResource",
    "TagsResource", "TransferResource", "VersionResource",
]
