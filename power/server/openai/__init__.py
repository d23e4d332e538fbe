"""The OpenAI-compatible API under ``/v1``: chat and legacy completions, responses, embeddings, models."""

from __future__ import annotations

from power.server.openai.completions import ChatCompletionsResource, CompletionsResource
from power.server.openai.embeddings import OpenAIEmbeddingsResource
from power.server.openai.models import ModelResource, ModelsResource
from power.server.openai.responses import ResponseResource, ResponsesResource

__all__ = ["ChatCompletionsResource", "CompletionsResource", "ModelResource", "ModelsResource",
           "OpenAIEmbeddingsResource", "ResponseResource", "ResponsesResource"]
