"""Hold an HTTP answer to what ``/openapi.json`` documents for its route, method and status.

Used by the property test (falcon's TestClient) and by the schemathesis run on real gunicorn, where it
checks what schemathesis cannot read: every NDJSON line, and every SSE event of a stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["conformance_problems", "sse_events"]

_VALIDATORS: dict[int, dict[str, Draft202012Validator]] = {}


def _validator(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> Draft202012Validator:
    """A validator for ``schema`` whose ``#/components/...`` references resolve inside ``doc``."""
    cache = _VALIDATORS.setdefault(id(doc), {})
    key = json.dumps(schema, sort_keys=True)
    if key not in cache:
        cache[key] = Draft202012Validator({**schema, "components": doc["components"]})
    return cache[key]


def sse_events(body: bytes) -> list[dict[str, str]]:
    """The events of a ``text/event-stream`` body: ``{"event": ..., "data": ...}`` per blank-line block."""
    events = []
    for block in body.decode("utf-8").replace("\r\n", "\n").split("\n\n"):
        event: dict[str, str] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            if field in ("event", "data"):
                value = value.removeprefix(" ")
                event[field] = event[field] + "\n" + value if field in event else value
        if event:
            events.append(event)
    return events


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def conformance_problems(doc: Mapping[str, Any], path: str, method: str, status: int,
                         headers: Mapping[str, str], body: bytes) -> list[str]:
    """What in this answer disagrees with the document (an empty list when it conforms)."""
    op = doc["paths"][path][method.lower()]
    answer = op["responses"].get(str(status))
    if answer is None:
        return [f"{method} {path}: status {status} not documented (documented: {sorted(op['responses'])})"]
    lower = {k.lower(): v for k, v in headers.items()}
    problems = [f"{method} {path} {status}: header {name} missing"
                for name, spec in (answer.get("headers") or {}).items()
                if spec.get("required") and name.lower() not in lower]
    content = answer.get("content")
    if method.upper() == "HEAD" or not content:
        return problems
    media = _media(lower.get("content-type"))
    if media not in content:
        return problems + [f"{method} {path} {status}: content type {media!r} not documented ({sorted(content)})"]
    schema = content[media].get("schema")
    if media == "application/json":
        items: list[Any] = [json.loads(body)]
    elif media == "application/x-ndjson":
        items = [json.loads(line) for line in body.splitlines() if line.strip()]
    elif media == "text/event-stream":
        data = schema["properties"]["data"]  # contentSchema, or if [DONE] then nothing else contentSchema
        end = data["if"]["const"] if "if" in data else None
        schema = (data["else"] if "if" in data else data)["contentSchema"]
        items = [json.loads(e["data"]) for e in sse_events(body) if e.get("data") != end]
    else:
        return problems
    validator = _validator(doc, schema)
    for i, item in enumerate(items):
        error = next(iter(validator.iter_errors(item)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{method} {path} {status} {media} item {i} at /{where}: {error.message[:300]}")
    return problems
