"""Wire types for the Ollama and OpenAI APIs, shared by the server and the client.

``schemas`` holds every request's JSON schema (validation and ``/openapi.json``),
``jsonsafe`` decodes untrusted bodies totally, ``wire`` formats timestamps,
durations and ``keep_alive``.
"""

from __future__ import annotations

from power.api.jsonsafe import decode_body, loads
from power.api.schemas import SCHEMAS, validate
from power.api.wire import format_time, local_time, now_utc, ns, unix_time

__all__ = [
    "SCHEMAS", "validate", "decode_body", "loads", "format_time", "local_time", "now_utc", "ns", "unix_time",
]
