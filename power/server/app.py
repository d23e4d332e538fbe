"""The Falcon WSGI app: ``create_app`` wires resources to their collaborators; ``get_app`` builds the real ones.

``create_app`` takes everything it needs (settings, store, scheduler, optional
metrics and usage), so tests hand it tmp-dir stores and scripted schedulers.
``get_app`` is the only place that reads the environment, for gunicorn::

    gunicorn -c power/server/gunicorn_conf.py 'power.server.app:get_app()'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import falcon

from power.config import Settings, load_settings
from power.server.anthropic import CountTokensResource, MessagesResource
from power.server.body import DEFAULT_MAX_BODY
from power.server.disconnect import ClientSocket
from power.server.errors import MethodsAllowed, install_error_handlers
from power.server.inference import Services
from power.server.metrics import Metrics
from power.server.observability import (
    HealthResource, MetricsResource, OpenAPIResource, Operation, Paths, UsageResource, allow_list, health_body,
    openapi_document,
)
from power.server.ollama import (
    BlobResource, ChatResource, CopyResource, CreateResource, DeleteResource, DetokenizeResource, EmbedResource,
    GenerateResource, LegacyEmbeddingsResource, PsResource, RootResource, ShowResource, TagsResource,
    TokenizeResource, TransferResource, VersionResource, ps_body,
)
from power.server.openai import (
    ChatCompletionsResource, CompletionsResource, ModelResource, ModelsResource, OpenAIEmbeddingsResource,
    ResponseResource, ResponsesResource,
)
from power.server.ports import ModelStore, Scheduler
from power.server.fastlane import FastLane
from power.server.rerank import RerankResource
from power.server.security import SecurityMiddleware
from power.server.usage import UsageStore

__all__ = ["create_app", "get_app", "Route", "ROUTES", "PATHS"]

log = logging.getLogger(__name__)


class _HttpMetrics:
    """Count every request by route template, method and status."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        start = req.context.get("start") or time.monotonic()
        route = req.uri_template or "unmatched"
        self.metrics.http(route, req.method, str(resp.status).split(" ", 1)[0], time.monotonic() - start)


class PowerApp(falcon.App):
    """Falcon's app, carrying the fast lane that the worker answers hot polls with (power/server/worker.py)."""

    fast_lane: FastLane | None = None


@dataclass(frozen=True)
class Route:
    """One path: how to build its resource, and each method's operation (request and response schemas)."""

    path: str
    resource: Callable[[Services], object]
    operations: Mapping[str, Operation]


def _read(op: Operation) -> dict[str, Operation]:
    return {"get": op, "head": op}


def _stream(summary: str, request: str, response: str, chunk: str, errors: tuple[int, ...]) -> dict[str, Operation]:
    return {"post": Operation(summary, request, response, stream=chunk, errors=errors)}


_MODEL = (404,)
_TRANSFER = (404, 502)  # no such model or remote file; the registry failed or could not be reached
_INFER = (404, 503, 504)  # no such model; queue full (Retry-After); out of time
_ANTHROPIC = (404, 529, 504)  # the same, a full queue as Anthropic's 529
_DELETE = Operation("Delete a model", "DeleteRequest", errors=_MODEL)

# The one table of routes: create_app serves it and /openapi.json describes it, so a route cannot be served
# without its schemas (tests/server/test_openapi.py compares it with Falcon's own router).
ROUTES: tuple[Route, ...] = (
    Route("/", lambda s: RootResource(), _read(Operation("Heartbeat: 'Ollama is running'", text="text/plain"))),
    Route("/api/version", lambda s: VersionResource(), _read(Operation("Server version", response="VersionResponse"))),
    Route("/api/generate", GenerateResource, _stream(
        "Generate a completion (NDJSON stream unless stream is false)", "GenerateRequest", "GenerateResponse",
        "GenerateResponse", _INFER)),
    Route("/api/chat", ChatResource, _stream(
        "Chat (NDJSON stream unless stream is false)", "ChatRequest", "ChatResponse", "ChatResponse", _INFER)),
    Route("/api/embed", EmbedResource, {"post": Operation(
        "Embeddings (L2-normalised)", "EmbedRequest", "EmbedResponse", errors=_INFER)}),
    Route("/api/embeddings", LegacyEmbeddingsResource, {"post": Operation(
        "Legacy single embedding", "EmbeddingsRequest", "EmbeddingsResponse", errors=_INFER)}),
    *(Route(path, lambda s, path=path: RerankResource(s, path), {"post": Operation(
        "Rerank documents by relevance to a query (Jina/Cohere shape)", "RerankRequest", "RerankResponse",
        errors=_INFER)}) for path in ("/api/rerank", "/v1/rerank", "/v2/rerank", "/v1/reranking")),
    Route("/rerank", lambda s: RerankResource(s, "/rerank"), {"post": Operation(
        "Rerank documents by relevance to a query (Jina/Cohere shape, or text-embeddings-inference's texts)",
        "RerankOrTeiRequest", "RerankOrTeiResponse", errors=_INFER)}),
    *(Route(path, TokenizeResource, {"post": Operation(
        "Tokenize text with a model's vocabulary (no weights loaded, no waiting for generations)",
        "TokenizeRequest", "TokenizeResponse", errors=_MODEL)}) for path in ("/api/tokenize", "/tokenize")),
    *(Route(path, DetokenizeResource, {"post": Operation(
        "Turn token ids back into text with a model's vocabulary", "DetokenizeRequest", "DetokenizeResponse",
        errors=_MODEL)}) for path in ("/api/detokenize", "/detokenize")),
    Route("/api/tags", TagsResource, _read(Operation("List local models", response="TagsResponse"))),
    Route("/api/show", ShowResource, {"post": Operation("Show a model", "ShowRequest", "ShowResponse",
                                                        errors=_MODEL)}),
    Route("/api/ps", PsResource, {"get": Operation("Loaded models", response="PsResponse")}),
    Route("/api/create", CreateResource, _stream(
        "Create a model (status stream unless stream is false)", "CreateRequest", "StatusResponse",
        "StatusResponse", _MODEL)),
    Route("/api/copy", CopyResource, {"post": Operation("Copy a model", "CopyRequest", errors=_MODEL)}),
    Route("/api/delete", DeleteResource, {"delete": _DELETE, "post": _DELETE}),  # some clients POST it
    Route("/api/blobs/{digest}", BlobResource, {
        "head": Operation("Whether a blob is stored"),
        "get": Operation("Whether a blob is stored", response="BlobResponse"),
        "post": Operation("Upload a blob (raw body, checked against its digest)", ok=(200, 201), raw_body=True)}),
    Route("/api/pull", lambda s: TransferResource(s, "pull"), _stream(
        "Pull a model from a registry (status stream unless stream is false)", "PullRequest", "StatusResponse",
        "StatusResponse", _TRANSFER)),
    Route("/api/push", lambda s: TransferResource(s, "push"), _stream(
        "Push a model to a registry (status stream unless stream is false)", "PushRequest", "StatusResponse",
        "StatusResponse", _TRANSFER)),
    Route("/v1/chat/completions", ChatCompletionsResource, _stream(
        "OpenAI chat completions (server-sent events with stream)", "ChatCompletionRequest", "ChatCompletion",
        "ChatCompletionChunk", _INFER)),
    Route("/v1/completions", CompletionsResource, _stream(
        "OpenAI completions (server-sent events with stream)", "CompletionRequest", "Completion", "Completion",
        _INFER)),
    Route("/v1/embeddings", OpenAIEmbeddingsResource, {"post": Operation(
        "OpenAI embeddings", "EmbeddingRequest", "EmbeddingList", errors=_INFER)}),
    Route("/v1/models", ModelsResource, {"get": Operation("OpenAI model list", response="ModelList")}),
    Route("/v1/models/{model}", ModelResource, {"get": Operation("OpenAI model", response="Model")}),
    Route("/v1/responses", ResponsesResource, _stream(
        "OpenAI responses (typed server-sent events with stream; kept for previous_response_id unless store is "
        "false)", "ResponseRequest", "Response", "ResponseStreamEvent", _INFER)),
    Route("/v1/responses/{response_id}", ResponseResource, {
        "get": Operation("A stored response", response="Response", errors=(404,)),
        "delete": Operation("Delete a stored response", response="ResponseDeleted", errors=(404,))}),
    Route("/v1/messages", MessagesResource, _stream(
        "Anthropic messages (named server-sent events with stream; thinking budget_tokens enforced)",
        "MessagesRequest", "Message", "MessageStreamEvent", _ANTHROPIC)),
    Route("/v1/messages/count_tokens", CountTokensResource, {"post": Operation(
        "Anthropic token count: the prompt's tokens as /v1/messages evaluates them", "CountTokensRequest",
        "CountTokensResponse", errors=_ANTHROPIC)}),
    Route("/v1/usage", UsageResource, {"get": Operation(
        "Usage totals per model (start and end: YYYY-MM-DD, ISO 8601 or Unix seconds)", response="UsageResponse",
        errors=(400, 404), query=("start", "end", "model"))}),
    Route("/health", HealthResource, _read(Operation(
        "Health and readiness: 200 while work is taken (store readable, queue not full), else 503 with reasons",
        response="HealthResponse", errors=(503,)))),
    Route("/metrics", MetricsResource, {"get": Operation("Prometheus metrics", text="text/plain")}),
    Route("/openapi.json", lambda s: OpenAPIResource(openapi_document(PATHS)),
          {"get": Operation("This document", response="OpenAPIDocument")}),
)
PATHS: Paths = {route.path: route.operations for route in ROUTES}


def create_app(settings: Settings, store: ModelStore, scheduler: Scheduler, *, metrics: Metrics | None = None,
               usage: UsageStore | None = None, max_body: int = DEFAULT_MAX_BODY) -> falcon.App:
    """Build the WSGI app over the given collaborators."""
    metrics = metrics or Metrics(scheduler)
    services = Services(settings, store, scheduler, metrics, usage)
    security = SecurityMiddleware(bind_host=settings.host, origins=settings.origins, api_key=settings.api_key,
                                  max_body=max_body)
    app = PowerApp(middleware=[
        security,
        _HttpMetrics(metrics),
        MethodsAllowed({path: allow_list(ops) for path, ops in PATHS.items()}),
        ClientSocket(),  # lets a queued generation notice its client leaving (power/server/disconnect.py)
    ], cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.default_media_type = "application/json; charset=utf-8"
    install_error_handlers(app)
    for route in ROUTES:
        app.add_route(route.path, route.resource(services))
    app.fast_lane = FastLane(security, metrics.http, tags_body=store.tags_body,  # see power/server/worker.py
                             ps_body=lambda: ps_body(scheduler), health_body=lambda: health_body(services),
                             metrics_body=metrics.render,
                             metrics_wait=getattr(scheduler, "scrape_waits", lambda: True))
    return app


_APP: falcon.App | None = None
_SCHEDULER: Scheduler | None = None  # closed by gunicorn's worker_exit


def get_app() -> falcon.App:
    """The app over the real store and scheduler, configured from the environment (for gunicorn)."""
    global _APP, _SCHEDULER
    if _APP is None:
        from power.runner import Scheduler as RealScheduler
        from power.server.storeport import StorePort, resolver_for
        from power.store import ModelStore as Library

        settings = load_settings()
        held: list[RealScheduler] = []  # GC spares the blobs runners hold open (P5)
        library = Library.from_settings(settings, in_use=lambda: held[0].blobs_in_use() if held else set())
        library.startup()
        library.watch_listing()  # /api/tags: one read of the kernel's change events per poll (power/store/watch.py)
        scheduler = RealScheduler(settings, resolver_for(library))
        held.append(scheduler)
        usage = UsageStore(settings.usage_db, settings.prices)
        _APP = create_app(settings, StorePort(library), scheduler, usage=usage)
        _SCHEDULER = scheduler
        log.info("a3s-power ready host=%s port=%d models=%s", settings.host, settings.port, settings.models)
    return _APP
