"""Translate OpenAI chat requests into native terms: messages, reasoning effort, response format."""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from power.api import jsonsafe
from power.errors import InvalidRequest

__all__ = ["native_messages", "effort_of", "response_format"]

_DATA_URL = re.compile(r"data:image/(jpeg|jpg|png|webp);base64,(.*)", re.DOTALL)
_EFFORTS = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "max": "max",
            "xhigh": "max", "ultra": "max"}


def effort_of(body: Mapping[str, Any]) -> bool | str | None:
    """``reasoning_effort`` or ``reasoning.effort`` as a native ``think`` value."""
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if effort is None and isinstance(reasoning, Mapping):
        effort = reasoning.get("effort")
    if effort is None:
        return None
    if effort not in _EFFORTS:
        raise InvalidRequest(f"invalid reasoning effort {str(effort)[:20]!r}: use none, minimal, low, medium, "
                             "high, xhigh or max")
    return _EFFORTS[effort]


def response_format(body: Mapping[str, Any]) -> Any:
    """``response_format`` as a native ``format``: "json", a JSON schema, or None."""
    fmt = body.get("response_format")
    if not fmt:
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, Mapping):
            raise InvalidRequest("response_format.json_schema.schema must be an object")
        return schema
    if kind in (None, "text"):
        return None
    raise InvalidRequest(f"invalid response_format type {str(kind)[:20]!r}")


def _image(part: Mapping[str, Any]) -> str:
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, Mapping) else url
    if not isinstance(url, str):
        raise InvalidRequest("invalid image_url: expected a data URL")
    m = _DATA_URL.fullmatch(url)
    if m is None:
        raise InvalidRequest("invalid image input: only base64 data URLs of jpeg, png or webp are supported")
    return m.group(2)


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls or ()):
        fn = call.get("function") or {} if isinstance(call, Mapping) else {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = jsonsafe.loads(args) if args.strip() else {}
            except InvalidRequest as exc:
                raise InvalidRequest(f"invalid tool call arguments in message tool_calls[{i}] ({exc})") from None
        out.append({"id": call.get("id", ""), "function": {"index": i, "name": fn.get("name", ""),
                                                           "arguments": args or {}}})
    return out


def native_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages to native ones; each content part becomes its own message of the same role."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> tool name
    for msg in messages:
        role = str(msg.get("role", "")).lower()
        content = msg.get("content")
        base: dict[str, Any] = {"role": role}
        if msg.get("reasoning"):
            base["thinking"] = msg["reasoning"]
        if msg.get("tool_calls"):
            calls = _tool_calls(msg["tool_calls"])
            for call in calls:
                names[call["id"]] = call["function"]["name"]
            base["tool_calls"] = calls
        if role == "tool":
            call_id = msg.get("tool_call_id") or ""
            base["tool_call_id"] = call_id
            base["tool_name"] = names.get(call_id) or msg.get("name") or ""
        if content is None or isinstance(content, str):
            out.append({**base, "content": content or ""})
            continue
        for part in content:
            kind = part.get("type")
            if kind == "text":
                out.append({**base, "content": str(part.get("text", ""))})
            elif kind == "image_url":
                out.append({**base, "content": "", "images": [_image(part)]})
            elif kind == "input_audio":
                audio = part.get("input_audio") or {}
                out.append({**base, "content": "", "images": [str(audio.get("data", ""))]})
            else:
                raise InvalidRequest(f"invalid message content part type {str(kind)[:20]!r}")
            base = {"role": role}  # tool calls and thinking ride on the first part only
    return out
