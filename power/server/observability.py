"""``/health``, ``/metrics``, ``/v1/usage`` and ``/openapi.json``."""

from __future__ import annotations

import time
from typing import Any

import falcon

from power import __version__
from power.api import SCHEMAS
from power.server.inference import Services
from power.server.metrics import CONTENT_TYPE
from power.server.streaming import send_json
from power.server.usage import parse_date

__all__ = ["HealthResource", "MetricsResource", "UsageResource", "OpenAPIResource", "openapi_document", "ROUTES"]

# (path, method, request schema or None, summary)
ROUTES: tuple[tuple[str, str, str | None, str], ...] = (
    ("/", "get", None, "Heartbeat: 'Ollama is running'"),
    ("/api/version", "get", None, "Server version"),
    ("/api/generate", "post", "GenerateRequest", "Generate a completion (NDJSON stream by default)"),
    ("/api/chat", "post", "ChatRequest", "Chat completion (NDJSON stream by default)"),
    ("/api/embed", "post", "EmbedRequest", "Embeddings (L2-normalised)"),
    ("/api/embeddings", "post", "EmbeddingsRequest", "Legacy single embedding"),
    ("/api/tags", "get", None, "List local models"),
    ("/api/show", "post", "ShowRequest", "Show a model"),
    ("/api/ps", "get", None, "Loaded models"),
    ("/api/create", "post", "CreateRequest", "Create a model (status stream)"),
    ("/api/copy", "post", "CopyRequest", "Copy a model"),
    ("/api/delete", "delete", "DeleteRequest", "Delete a model"),
    ("/api/pull", "post", "PullRequest", "Pull a model from a registry"),
    ("/api/push", "post", "PushRequest", "Push a model to a registry"),
    ("/api/blobs/{digest}", "head", None, "Check a blob"),
    ("/api/blobs/{digest}", "post", None, "Upload a blob (raw body)"),
    ("/v1/chat/completions", "post", "ChatCompletionRequest", "OpenAI chat completions"),
    ("/v1/completions", "post", "CompletionRequest", "OpenAI completions"),
    ("/v1/embeddings", "post", "EmbeddingRequest", "OpenAI embeddings"),
    ("/v1/models", "get", None, "OpenAI model list"),
    ("/v1/models/{model}", "get", None, "OpenAI model"),
    ("/v1/usage", "get", None, "Usage totals per model (start, end, model query parameters)"),
    ("/health", "get", None, "Health, version, uptime, loaded models"),
    ("/metrics", "get", None, "Prometheus metrics"),
)


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 built from the very schemas the handlers validate with."""
    paths: dict[str, Any] = {}
    for path, method, schema, summary in ROUTES:
        op: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK"}}}
        if schema is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{schema}"}}}}
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                for p in params]
        paths.setdefault(path, {})[method] = op
    return {"openapi": "3.1.0", "info": {"title": "a3s-power", "version": __version__},
            "paths": paths, "components": {"schemas": SCHEMAS}}


class HealthResource:
    def __init__(self, services: Services) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            rows = self.services.scheduler.ps()
        except Exception:  # health must answer even when the scheduler cannot
            rows = []
        send_json(resp, {"status": "ok", "version": __version__,
                         "uptime": round(time.time() - self.services.started, 3),
                         "models_loaded": [m.get("name") for m in rows],
                         "running": sum(int(m.get("running") or 0) for m in rows),
                         "waiting": sum(int(m.get("waiting") or 0) for m in rows)})

    on_head = on_get


class MetricsResource:
    def __init__(self, services: Services) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE
        resp.data = self.services.metrics.render()


class UsageResource:
    def __init__(self, services: Services) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        usage = self.services.usage
        if usage is None:
            raise falcon.HTTPNotFound(description="usage accounting is disabled")
        send_json(resp, usage.query(start=parse_date(req.get_param("start")),
                                    end=parse_date(req.get_param("end"), end=True),
                                    model=req.get_param("model")))


class OpenAPIResource:
    def __init__(self) -> None:
        self.document = openapi_document()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, self.document)
