"""Helpers for the Responses tests: an openai client over a WSGI app, stream events checked as the SDK types them."""

from __future__ import annotations

import json
from typing import Any

import falcon

TOOL = {"type": "function", "name": "get_weather", "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def sdk(app: falcon.App, api_key: str = "unused") -> Any:
    """An ``openai.OpenAI`` whose transport calls ``app`` directly."""
    import httpx
    import openai

    http = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://127.0.0.1:11434",
                        headers={"Host": "127.0.0.1:11434"})
    return openai.OpenAI(base_url="http://127.0.0.1:11434/v1", api_key=api_key, http_client=http, max_retries=0)


def events_of(text: str) -> list[dict[str, Any]]:
    """The events of a Responses stream; each ``event:`` line names its data's ``type``."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert lines.get("event") == data["type"], block
        out.append(data)
    return out


def check_events(events: list[dict[str, Any]]) -> list[str]:
    """Every event parses strictly as the openai SDK's ``ResponseStreamEvent``; numbered from 0; the types."""
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    for event in events:
        adapter.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return [e["type"] for e in events]


def check_response(body: dict[str, Any]) -> Any:
    """The response object parses strictly as the SDK's ``Response``."""
    from openai.types.responses import Response

    parsed = Response.model_validate(body)
    assert parsed.object == "response" and parsed.id.startswith("resp_")
    return parsed
