"""Write streamed answers: NDJSON for the native API, server-sent events for the OpenAI API.

Each helper wraps an iterator of dicts into the WSGI body. An error raised once
the stream has begun cannot change the status any more: it becomes a last
``{"error": ...}`` line (NDJSON) or an error event (SSE). When the client goes
away, the server closes the body and ``close`` stops the generation.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable, Iterator

import falcon

from power.errors import PowerError

__all__ = ["dumps", "send_json", "send_ndjson", "send_sse", "NDJSON", "JSON"]

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
JSON = "application/json; charset=utf-8"
SSE = "text/event-stream"


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def send_json(resp: falcon.Response, obj: Any, status: str = falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = JSON
    resp.text = dumps(obj)


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, PowerError):
        return str(exc)
    log.exception("stream failed")
    return f"internal error: {type(exc).__name__}"


def _body(items: Iterable[Any], encode: Callable[[Any], bytes], on_error: Callable[[str], bytes],
          tail: bytes | None, close: Callable[[], None] | None) -> Iterator[bytes]:
    try:
        for item in items:
            yield encode(item)
        if tail is not None:
            yield tail
    except GeneratorExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the status is sent; tell the client in-band
        yield on_error(_error_message(exc))
    finally:
        if close is not None:
            close()


def send_ndjson(resp: falcon.Response, items: Iterable[dict[str, Any]],
                close: Callable[[], None] | None = None) -> None:
    """Stream dicts as NDJSON lines, one write per line."""
    resp.status = falcon.HTTP_200
    resp.content_type = NDJSON
    resp.stream = _body(items, lambda o: (dumps(o) + "\n").encode(),
                        lambda m: (dumps({"error": m}) + "\n").encode(), None, close)


def send_sse(resp: falcon.Response, items: Iterable[dict[str, Any]],
             close: Callable[[], None] | None = None, done: bool = True, named: bool = False) -> None:
    """Stream dicts as ``data: {...}`` events, ending with ``data: [DONE]``.

    ``named``: each event also gets an ``event:`` line with the dict's ``type`` (Responses, Anthropic).
    """
    resp.status = falcon.HTTP_200
    resp.content_type = SSE
    resp.set_header("Cache-Control", "no-cache")

    def error(message: str) -> bytes:
        body = {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
        return f"data: {dumps(body)}\n\n".encode() + (b"data: [DONE]\n\n" if done else b"")

    def encode(o: dict[str, Any]) -> bytes:
        head = f"event: {o['type']}\n" if named else ""
        return f"{head}data: {dumps(o)}\n\n".encode()

    resp.stream = _body(items, encode, error, b"data: [DONE]\n\n" if done else None, close)
