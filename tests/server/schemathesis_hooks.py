"""Schemathesis hooks for the run on real gunicorn (``SCHEMATHESIS_HOOKS=tests.server.schemathesis_hooks``).

``stream_items_conform`` checks what schemathesis leaves unread: each NDJSON line and each SSE event of a stream,
against the schema ``/openapi.json`` documents for it (``tests/server/openapi_check.py``).
"""

from __future__ import annotations

from typing import Any

import schemathesis

from tests.server.openapi_check import conformance_problems


@schemathesis.check
def stream_items_conform(ctx: Any, response: Any, case: Any) -> bool | None:
    media = ";".join(response.headers.get("content-type") or [""]).split(";", 1)[0].strip()
    if media not in ("application/x-ndjson", "text/event-stream"):
        return None
    headers = {name: values[0] for name, values in response.headers.items() if values}
    problems = conformance_problems(case.operation.schema.raw_schema, case.operation.path, case.method,
                                    response.status_code, headers, response.content)
    if problems:
        raise AssertionError("; ".join(problems)[:2000])
    return None
