"""Turn exceptions into HTTP answers, once, for the whole app.

Native routes answer ``{"error": "..."}``; ``/v1`` routes answer OpenAI's error
object, and ``/v1/messages`` Anthropic's (``{"type": "error", "error": {"type",
"message"}}``, a full queue as its 529 ``overloaded_error``). ``PowerError``
carries its own status; Falcon's own errors (unknown route, wrong method) keep
theirs; anything else is logged and becomes a 500 without leaking internals.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import falcon

from power.errors import Busy, PowerError, ShuttingDown

__all__ = ["install_error_handlers", "error_body", "openai_error_type", "is_openai_path", "is_anthropic_path",
           "anthropic_error", "anthropic_status"]

log = logging.getLogger(__name__)


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith("/v1/usage")


def is_anthropic_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error object; other 4xx are ``invalid_request_error``, other 5xx ``api_error``."""
    kind = _ANTHROPIC_TYPES.get(status) or ("invalid_request_error" if 400 <= status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_status(exc: BaseException) -> int:
    """The status Anthropic's API gives ``exc``: a full queue is its 529 (overloaded), not 503."""
    return 529 if isinstance(exc, Busy) else int(getattr(exc, "status", 500))


def openai_error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if 400 <= status < 500:
        return "invalid_request_error"
    return "api_error"


def error_body(path: str, status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The error object of the API that ``path`` belongs to."""
    if is_anthropic_path(path):
        return anthropic_error(status, message)
    if is_openai_path(path):
        return {"error": {"message": message, "type": openai_error_type(status), "param": None, "code": code}}
    return {"error": message}


def _write(req: falcon.Request, resp: falcon.Response, status: int, message: str,
           code: str | None = None) -> None:
    resp.status = falcon.code_to_http_status(status) if status in _KNOWN else _OTHER.get(status, f"{status} Error")
    resp.content_type = "application/json; charset=utf-8"
    # A message may quote the request (a lone surrogate from a JSON escape): shown escaped, it always encodes.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    resp.text = json.dumps(error_body(req.path, status, message, code), ensure_ascii=False)
    resp.stream = None


_KNOWN = {400, 401, 403, 404, 405, 408, 409, 411, 413, 414, 415, 429, 431, 500, 501, 502, 503, 504}
_OTHER = {499: "499 Client Closed Request", 529: "529 Overloaded"}


def _power_error(req: falcon.Request, resp: falcon.Response, ex: PowerError, params: Any) -> None:
    status = anthropic_status(ex) if is_anthropic_path(req.path) else int(getattr(ex, "status", 500))
    if status >= 500:
        log.warning("request failed rid=%s status=%d error=%s", req.context.get("rid"), status, ex)
    if isinstance(ex, (Busy, ShuttingDown)):
        resp.set_header("Retry-After", "1")
    _write(req, resp, status, str(ex))


def _http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: Any) -> None:
    status = int(ex.status_code)
    message = ex.description or (ex.title or "error").lower()
    if status == 404 and not ex.description:
        message = "404 page not found"
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)
    _write(req, resp, status, message)
    resp.status = ex.status


def _unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    if isinstance(ex, falcon.HTTPError):
        return _http_error(req, resp, ex, params)
    if isinstance(ex, falcon.HTTPStatus):
        raise ex
    log.exception("unhandled error rid=%s path=%s", req.context.get("rid"), req.path)
    _write(req, resp, 500, f"internal error: {type(ex).__name__}")


def install_error_handlers(app: falcon.App) -> None:
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(PowerError, _power_error)


class MethodsAllowed:
    """Middleware: ``Allow`` on 405 and OPTIONS answers lists the route's methods, OPTIONS included.

    Falcon leaves OPTIONS out of its own OPTIONS answer but puts it in its 405s;
    both take ``allowed`` (route template -> methods) here instead, and a 405
    names the methods in the route's error shape.
    """

    def __init__(self, allowed: Mapping[str, Sequence[str]]) -> None:
        self.allowed = {path: ", ".join(methods) for path, methods in allowed.items()}

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        allow = self.allowed.get(req.uri_template or "")
        if allow is None:
            return
        status = falcon.http_status_to_code(resp.status)
        if status == 405:
            _write(req, resp, 405, f"method {req.method} not allowed for {req.uri_template}; allowed: {allow}")
            resp.set_header("Allow", allow)
        elif req.method == "OPTIONS" and status in (200, 204):
            resp.set_header("Allow", allow)
