"""``/health``, ``/metrics``, ``/v1/usage`` and ``/openapi.json``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import falcon

from power import __version__
from power.api import SCHEMAS
from power.server.errors import is_anthropic_path, is_openai_path
from power.server.inference import Services
from power.server.metrics import CONTENT_TYPE
from power.server.security import OPEN_ROUTES
from power.server.streaming import send_json
from power.server.usage import parse_date

__all__ = ["HealthResource", "health_body", "MetricsResource", "UsageResource", "OpenAPIResource", "Operation", "Paths",
           "openapi_document", "allow_list"]

_NDJSON = "application/x-ndjson"
_SSE = "text/event-stream"
_JSON = "application/json"

# What each status means, as the document says it.
_STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "CORS preflight answered", 400: "Malformed request: the message names the field",
    401: "API key missing or wrong (only when A3S_POWER_API_KEY is set)",
    403: "Foreign Host header on a loopback bind, or a CORS origin that is not allowed",
    404: "No such model, blob or route", 405: "Method not served here; Allow lists those that are",
    408: "Request headers or body not received in time", 413: "Request body too large",
    414: "Request line too long", 431: "Request header fields too large",
    502: "The registry failed or could not be reached", 503: "Queue full: retry after Retry-After seconds", 504: "The generation took longer than allowed",
    529: "Queue full (Anthropic's overloaded_error): retry after Retry-After seconds",
}
# Refusals the HTTP layer (gunicorn's parser, the front door) writes in the native shape on every path.
_HTTP_LAYER = frozenset({400, 408, 414, 431})
_HEADERS = {
    405: {"Allow": {"required": True, "schema": {"type": "string"}, "description": "the methods served"}},
    503: {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 0}}},
    529: {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 0}}},
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
}

# A digest as the store accepts it (power.store.parse_digest), so malformed ones are the document's 400s.
_PATH_PARAMS = {"{digest}": {"type": "string", "pattern": "^sha256[:-][0-9a-fA-F]{64}$"}}


@dataclass(frozen=True)
class Operation:
    """One method of one route as ``/openapi.json`` describes it; the app's route table holds one per method.

    ``request`` and ``response`` name schemas in ``power.api.schemas.SCHEMAS`` (the request one is the
    schema the handler validates with). ``stream`` names the schema of one NDJSON line (native routes) or
    one server-sent event's data (``/v1`` routes) when the route streams. ``errors`` are the statuses the
    handler itself can answer; those of the HTTP layer (401, 403, 405, 414, 431, and 400, 408, 413 when
    a body is read) are added for every operation.
    """

    summary: str
    request: str | None = None
    response: str | None = None
    stream: str | None = None
    ok: tuple[int, ...] = (200,)
    errors: tuple[int, ...] = ()
    raw_body: bool = False  # the body is bytes (a blob upload), not JSON
    text: str | None = None  # media type of a plain-text answer
    query: tuple[str, ...] = ()  # optional string query parameters


Paths = Mapping[str, Mapping[str, Operation]]  # path template -> lower-case method -> operation


def allow_list(methods: Iterable[str]) -> tuple[str, ...]:
    """The methods a path serves, upper-case, OPTIONS included (every route answers it)."""
    return tuple(sorted({m.upper() for m in methods} | {"OPTIONS"}))


def _ref(name: str) -> dict[str, str]:
    if name not in SCHEMAS:
        raise KeyError(f"no schema named {name!r} in power.api.schemas")
    return {"$ref": f"#/components/schemas/{name}"}


def _error_schema(path: str, status: int) -> dict[str, Any]:
    if not is_openai_path(path):
        return _ref("Error")
    shape = _ref("AnthropicError") if is_anthropic_path(path) else _ref("OpenAIError")
    if status in _HTTP_LAYER:
        return {"anyOf": [shape, _ref("Error")]}
    return shape


def _stream_content(path: str, name: str) -> dict[str, Any]:
    if is_anthropic_path(path):  # named events (an error too), no [DONE]
        data = {"contentMediaType": _JSON, "contentSchema": _ref(name)}
        return {_SSE: {"schema": {"type": "object", "properties": {"event": {"type": "string"}, "data": data},
                                  "required": ["event", "data"]}}}
    if is_openai_path(path):  # one event per chunk, then ``data: [DONE]``
        data = {"if": {"const": "[DONE]"}, "else": {
            "contentMediaType": _JSON, "contentSchema": {"anyOf": [_ref(name), _ref("OpenAIError")]}}}
        return {_SSE: {"schema": {"type": "object", "properties": {"data": data}, "required": ["data"]}}}
    return {_NDJSON: {"schema": {"anyOf": [_ref(name), _ref("Error")],
                                 "description": "one JSON object per line; a failure after the start is a last "
                                                "{\"error\": ...} line"}}}


def _success(path: str, op: Operation, status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"description": _STATUS_TEXT[status]}
    content: dict[str, Any] = {}
    if op.text is not None:
        content[op.text] = {"schema": {"type": "string"}}
    if op.response is not None and status == op.ok[0]:
        content[_JSON] = {"schema": _ref(op.response)}
    if op.stream is not None and status == op.ok[0]:
        content.update(_stream_content(path, op.stream))
    if content:
        out["content"] = content
    return out


def _statuses(path: str, op: Operation) -> list[int]:
    codes = set(op.errors) | {403, 405, 414, 431}
    if path not in OPEN_ROUTES:
        codes.add(401)
    if op.request is not None or op.raw_body:
        codes |= {400, 408, 413}
    if "{" in path:
        codes |= {400, 404}
    return sorted(codes)


def _operation(path: str, method: str, op: Operation) -> dict[str, Any]:
    head = method == "head"
    responses: dict[str, Any] = {}
    for status in op.ok:
        responses[str(status)] = {"description": _STATUS_TEXT[status]} if head else _success(path, op, status)
    for status in _statuses(path, op):
        answer: dict[str, Any] = {"description": _STATUS_TEXT[status]}
        if not head:
            answer["content"] = {_JSON: {"schema": _error_schema(path, status)}}
        if status in _HEADERS:
            answer["headers"] = _HEADERS[status]
        responses[str(status)] = answer
    out: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(path, method),
                           "responses": responses}
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": {_JSON: {"schema": _ref(op.request)}}}
    elif op.raw_body:
        out["requestBody"] = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}
    if op.query:
        out["parameters"] = [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                             for q in op.query]
    return out


def _operation_id(path: str, method: str) -> str:
    words = [w.strip("{}") for w in path.replace(".", "/").replace("-", "/").split("/") if w]
    return method + "".join(w[:1].upper() + w[1:] for w in words) if words else method + "Root"


def _options(path: str, methods: Iterable[str]) -> dict[str, Any]:
    allow = {"Allow": {"required": True, "schema": {"type": "string", "const": ", ".join(allow_list(methods))}}}
    responses: dict[str, Any] = {"200": {"description": "The methods served", "headers": allow},
                                 "204": {"description": _STATUS_TEXT[204]}}
    for status in sorted({403, 414, 431} | ({401} if path not in OPEN_ROUTES else set())):
        responses[str(status)] = {"description": _STATUS_TEXT[status],
                                  "content": {_JSON: {"schema": _error_schema(path, status)}}}
        if status in _HEADERS:
            responses[str(status)]["headers"] = _HEADERS[status]
    return {"summary": "Methods served; CORS preflight", "operationId": _operation_id(path, "options"),
            "responses": responses}


def openapi_document(paths: Paths) -> dict[str, Any]:
    """OpenAPI 3.1 for the app's route table, with the very schemas the handlers validate with."""
    out: dict[str, Any] = {}
    for path, ops in paths.items():
        item: dict[str, Any] = {method: _operation(path, method, op) for method, op in ops.items()}
        item["options"] = _options(path, ops)
        params = [p for p in path.split("/") if p.startswith("{")]
        for method, op in item.items():  # OPTIONS answers any value: its parameters are plain strings
            op.setdefault("parameters", [])[:0] = [
                {"name": p.strip("{}"), "in": "path", "required": True,
                 "schema": {"type": "string"} if method == "options" else _PATH_PARAMS.get(p, {"type": "string"})}
                for p in params]
            if not op["parameters"]:
                del op["parameters"]
        out[path] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "a3s-power", "version": __version__,
                 "description": "Ollama's native API, the OpenAI API and Anthropic's Messages API, "
                                "served by a3s-power."},
        "paths": out,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "only when A3S_POWER_API_KEY is set"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
    }


def health_body(services: Services) -> dict[str, Any]:
    """What ``/health`` answers; ``ready`` False means a 503 with ``reasons``.

    Built from what never blocks (``Scheduler.ps`` and ``queue_depth`` read the scheduler's last view, the
    store's check is a directory listing), so the worker's fast lane answers it from its event loop too.
    """
    scheduler = services.scheduler
    capacity = services.settings.max_queue
    reasons: list[str] = []
    try:
        rows = [m for m in scheduler.ps() if "status" not in m]  # loaded, not loading
        depth = scheduler.queue_depth()
        if scheduler.closing:
            reasons.append("the server is shutting down")
    except Exception as exc:  # health must answer even when the scheduler cannot
        rows, depth = [], 0
        reasons.append(f"the scheduler did not answer: {exc}")
    if depth >= capacity:
        reasons.append(f"the queue is full ({depth} waiting, OLLAMA_MAX_QUEUE={capacity})")
    if (why := services.store.unreadable()) is not None:
        reasons.append(why)
    body: dict[str, Any] = {
        "status": "unavailable" if reasons else "ok", "ready": not reasons, "version": __version__,
        "uptime": round(time.time() - services.started, 3),
        "models_loaded": [m.get("name") for m in rows],
        "running": sum(int(m.get("running") or 0) for m in rows), "waiting": depth,
        "queue_capacity": capacity}
    if reasons:
        body["reasons"] = reasons
    return body


class HealthResource:
    """Liveness and readiness in one: 200 while the server can take work, else 503 with the reasons.

    Ready means the model store can be read, the queue has room (a request now would not get 503) and
    the server is not shutting down, so a load balancer's or Kubernetes' probe sends work only where it
    is taken.
    """

    def __init__(self, services: Services) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = health_body(self.services)
        if not body["ready"]:
            resp.set_header("Retry-After", "1")
        send_json(resp, body, falcon.HTTP_200 if body["ready"] else falcon.HTTP_503)

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
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, self.document)
