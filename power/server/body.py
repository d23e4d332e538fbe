"""Read a request body within bounds and validate it against its schema.

The cap answers 413 before anything is buffered when Content-Length says too
much, and while reading when a chunked body grows past it. Reading has a
deadline, so a client trickling bytes cannot hold a thread (P6).
"""

from __future__ import annotations

import time
from typing import Any

import falcon

from power.api import decode_body, validate
from power.errors import InvalidRequest

__all__ = ["DEFAULT_MAX_BODY", "body_stream", "read_json", "read_raw", "BodyTooLarge"]

DEFAULT_MAX_BODY = 64 << 20
_CHUNK = 1 << 16


class BodyTooLarge(falcon.HTTPContentTooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(description=f"request body exceeds {limit} bytes")


def body_stream(req: falcon.Request) -> Any:
    """The request body as a stream, with or without a Content-Length.

    Without one (``Transfer-Encoding: chunked``) falcon's bounded stream reads nothing; the server's own
    input stream decodes the chunks and ends with the body. Callers apply their own cap and deadline.
    """
    return req.bounded_stream if req.content_length is not None else req.stream


def read_raw(req: falcon.Request, limit: int, deadline_s: float = 60.0) -> bytes:
    """Return the whole body, refusing more than ``limit`` bytes or taking longer than ``deadline_s``."""
    length = req.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(limit)
    stream = body_stream(req)
    parts: list[bytes] = []
    total = 0
    start = time.monotonic()
    while True:
        want = _CHUNK if length is None else min(_CHUNK, length - total)
        if want <= 0:
            break
        chunk = stream.read(want)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
        if time.monotonic() - start > deadline_s:
            raise falcon.HTTPRequestTimeout(description="request body not received in time")
    return b"".join(parts)


def read_json(req: falcon.Request, schema: str | None) -> dict[str, Any]:
    """Read, decode (totally) and validate a JSON object body."""
    limit = req.context.get("max_body", DEFAULT_MAX_BODY)
    body = decode_body(read_raw(req, limit))
    if schema is not None:
        validate(schema, body)
    return body


def model_field(body: dict[str, Any], *, required_message: str = "model is required") -> str:
    """The ``model`` field (or its deprecated alias ``name``); 400 when missing."""
    value = body.get("model") or body.get("name")
    if not isinstance(value, str) or not value:
        raise InvalidRequest(required_message)
    return value
