"""The Falcon WSGI app: ``create_app`` wires resources to their collaborators; ``get_app`` builds the real ones.

``create_app`` takes everything it needs (settings, store, scheduler, optional
metrics and usage), so tests hand it tmp-dir stores and scripted schedulers.
``get_app`` is the only place that reads the environment, for gunicorn::

    gunicorn -c power/server/gunicorn_conf.py 'power.server.app:get_app()'
"""

from __future__ import annotations

import logging
import time
from typing import Any

import falcon

from power.config import Settings, load_settings
from power.server.body import DEFAULT_MAX_BODY
from power.server.disconnect import ClientSocket
from power.server.errors import install_error_handlers
from power.server.inference import Services
from power.server.metrics import Metrics
from power.server.observability import HealthResource, MetricsResource, OpenAPIResource, UsageResource
from power.server.ollama import (
    BlobResource, ChatResource, CopyResource, CreateResource, DeleteResource, EmbedResource, GenerateResource,
    LegacyEmbeddingsResource, PsResource, RootResource, ShowResource, TagsResource, TransferResource,
    VersionResource,
)
from power.server.openai import (
    ChatCompletionsResource, CompletionsResource, ModelResource, ModelsResource, OpenAIEmbeddingsResource,
)
from power.server.ports import ModelStore, Scheduler
from power.server.security import SecurityMiddleware
from power.server.usage import UsageStore

__all__ = ["create_app", "get_app"]

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


def create_app(settings: Settings, store: ModelStore, scheduler: Scheduler, *, metrics: Metrics | None = None,
               usage: UsageStore | None = None, max_body: int = DEFAULT_MAX_BODY) -> falcon.App:
    """Build the WSGI app over the given collaborators."""
    metrics = metrics or Metrics(scheduler)
    services = Services(settings, store, scheduler, metrics, usage)
    app = falcon.App(middleware=[
        SecurityMiddleware(bind_host=settings.host, origins=settings.origins, api_key=settings.api_key,
                           max_body=max_body),
        _HttpMetrics(metrics),
        ClientSocket(),
    ], cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.default_media_type = "application/json; charset=utf-8"
    install_error_handlers(app)

    app.add_route("/", RootResource())
    app.add_route("/api/version", VersionResource())
    app.add_route("/api/generate", GenerateResource(services))
    app.add_route("/api/chat", ChatResource(services))
    app.add_route("/api/embed", EmbedResource(services))
    app.add_route("/api/embeddings", LegacyEmbeddingsResource(services))
    app.add_route("/api/tags", TagsResource(services))
    app.add_route("/api/show", ShowResource(services))
    app.add_route("/api/ps", PsResource(services))
    app.add_route("/api/create", CreateResource(services))
    app.add_route("/api/copy", CopyResource(services))
    app.add_route("/api/delete", DeleteResource(services))
    app.add_route("/api/blobs/{digest}", BlobResource(services))
    app.add_route("/api/pull", TransferResource(services, "pull"))
    app.add_route("/api/push", TransferResource(services, "push"))
    app.add_route("/v1/chat/completions", ChatCompletionsResource(services))
    app.add_route("/v1/completions", CompletionsResource(services))
    app.add_route("/v1/embeddings", OpenAIEmbeddingsResource(services))
    app.add_route("/v1/models", ModelsResource(services))
    app.add_route("/v1/models/{model}", ModelResource(services))
    app.add_route("/v1/usage", UsageResource(services))
    app.add_route("/health", HealthResource(services))
    app.add_route("/metrics", MetricsResource(services))
    app.add_route("/openapi.json", OpenAPIResource())
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
        scheduler = RealScheduler(settings, resolver_for(library))
        held.append(scheduler)
        usage = UsageStore(settings.usage_db, settings.prices)
        _APP = create_app(settings, StorePort(library), scheduler, usage=usage)
        _SCHEDULER = scheduler
        log.info("a3s-power ready host=%s port=%d models=%s", settings.host, settings.port, settings.models)
    return _APP
