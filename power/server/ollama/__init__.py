"""Ollama's native API: generation, chat, embeddings, tokens and model management under ``/api``."""

from __future__ import annotations

from power.server.ollama.embed import EmbedResource, LegacyEmbeddingsResource
from power.server.ollama.generate import ChatResource, GenerateResource
from power.server.ollama.models import (
    BlobResource, CopyResource, CreateResource, DeleteResource, PsResource, RootResource,
    ShowResource, TagsResource, TransferResource, VersionResource, ps_body,
)
from power.server.ollama.tokens import DetokenizeResource, TokenizeResource

__all__ = [
    "BlobResource", "ChatResource", "CopyResource", "CreateResource", "DeleteResource", "DetokenizeResource",
    "EmbedResource", "GenerateResource", "LegacyEmbeddingsResource", "PsResource", "RootResource", "ShowResource",
    "TagsResource", "TokenizeResource", "TransferResource", "VersionResource", "ps_body",
]
