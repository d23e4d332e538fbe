"""Translate a Responses request into chat terms: input items, flat tools, ``tool_choice``, ``text.format``.

Input items become OpenAI chat messages, which ``native_messages`` then turns
into native ones exactly as ``/v1/chat/completions`` does, so the same
conversation renders the same prompt on every API. A ``reasoning`` item rides
on the assistant turn that follows it; a ``function_call`` joins the assistant
turn before it; a ``function_call_output`` must answer an earlier call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from power.api import jsonsafe
from power.errors import InvalidRequest

__all__ = ["input_items", "chat_messages", "chat_tools", "chat_tool_choice", "text_format"]

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_KINDS = "message, function_call, function_call_output or reasoning"


def input_items(value: Any) -> list[Any]:
    """The request's ``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return value
    raise InvalidRequest("input must be a string or an array of input items")


def _short(value: Any) -> str:
    return repr(str(value)[:40])


def _parts(content: Any, where: str, *, text_only: bool = False) -> list[dict[str, Any]]:
    """Responses content parts as chat content parts (text and image_url); a string is one text part."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"invalid {where}: expected a string or an array of content parts")
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        at = f"{where}[{j}]"
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"invalid {at}.text: expected a string")
            out.append({"type": "text", "text": text})
        elif kind == "refusal":
            out.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image" and not text_only:
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            if not isinstance(url, str):
                raise InvalidRequest(f"invalid {at}: only images given as base64 data URLs in image_url are "
                                     "supported (no file_id)")
            out.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "input_file":
            raise InvalidRequest(f"invalid {at}: file inputs are not supported")
        else:
            raise InvalidRequest(f"invalid {at}.type {_short(kind)}: use input_text, input_image or output_text")
    return out


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(p["text"] for p in parts if p["type"] == "text")


def _arguments(item: Mapping[str, Any], where: str) -> str:
    args = item.get("arguments")
    if args is None or args == "":
        return "{}"
    if isinstance(args, Mapping):  # OpenAI sends a JSON string; an object means the same
        return json.dumps(args, ensure_ascii=False)
    if not isinstance(args, str):
        raise InvalidRequest(f"invalid {where}.arguments: expected a JSON string")
    try:
        parsed = jsonsafe.loads(args)
    except InvalidRequest as exc:
        raise InvalidRequest(f"invalid {where}.arguments: not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"invalid {where}.arguments: expected a JSON object")
    return args


def chat_messages(items: Sequence[Any], instructions: Any = None) -> list[dict[str, Any]]:
    """OpenAI chat messages for ``instructions`` (a system message) and the conversation's items."""
    out: list[dict[str, Any]] = []
    if instructions:
        if not isinstance(instructions, str):
            raise InvalidRequest("instructions must be a string")
        out.append({"role": "system", "content": instructions})
    calls: dict[str, str] = {}  # call_id -> function name
    thinking = ""  # a reasoning item waiting for its assistant turn
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidRequest(f"invalid {where}: expected an object")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = _ROLES.get(str(item.get("role")))
            if role is None:
                raise InvalidRequest(f"invalid {where}.role {_short(item.get('role'))}: use user, assistant, "
                                     "system or developer")
            # no parts at all is an empty turn, which still carries its reasoning and calls
            msg: dict[str, Any] = {"role": role, "content": _parts(item.get("content"), f"{where}.content") or None}
            if role == "assistant" and thinking:
                msg["reasoning"], thinking = thinking, ""
            out.append(msg)
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
                raise InvalidRequest(f"invalid {where}: a function_call needs a call_id and a name")
            call = {"id": call_id, "type": "function", "function": {"name": name,
                                                                    "arguments": _arguments(item, where)}}
            calls[call_id] = name
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if thinking and not last.get("reasoning"):
                    last["reasoning"], thinking = thinking, ""
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call],
                            **({"reasoning": thinking} if thinking else {})})
                thinking = ""
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or call_id not in calls:
                raise InvalidRequest(f"invalid {where}: no function_call with call_id {_short(call_id)} "
                                     "comes before this function_call_output")
            output = item.get("output")
            out.append({"role": "tool", "tool_call_id": call_id, "name": calls[call_id],
                        "content": _parts(output, f"{where}.output") or None})
        elif kind == "reasoning":
            parts = _parts(item.get("content"), f"{where}.content", text_only=True) or \
                _parts(item.get("summary"), f"{where}.summary", text_only=True)
            thinking += _text(parts)
        else:
            raise InvalidRequest(f"invalid {where}.type {_short(kind)}: use {_KINDS}")
    # reasoning after the last assistant turn has no turn to ride on; it is dropped
    return out


def chat_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Responses' flat function tools (``{"type": "function", "name": ...}``) in chat's nested shape."""
    if not tools:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be an array")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            raise InvalidRequest(f"invalid tools[{i}].type {_short(kind)}: only function tools are supported")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"invalid tools[{i}]: a function tool needs a name")
        fn: dict[str, Any] = {"name": name}
        for key in ("description", "parameters"):
            if tool.get(key) is not None:
                fn[key] = tool[key]
        out.append({"type": "function", "function": fn})
    return out


def chat_tool_choice(choice: Any, tools: list[dict[str, Any]] | None) -> tuple[Any, list[dict[str, Any]] | None]:
    """Responses' ``tool_choice`` as chat's, with the tools it allows."""
    if choice is None or isinstance(choice, str):
        return choice, tools
    if not isinstance(choice, Mapping):
        raise InvalidRequest("invalid tool_choice: use none, auto, required or {\"type\": \"function\", "
                             "\"name\": ...}")
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}, tools
    if kind == "allowed_tools":
        allowed = choice.get("tools")
        if not isinstance(allowed, list):
            raise InvalidRequest("invalid tool_choice.tools: expected an array of tools")
        listed = [t.get("name") if isinstance(t, Mapping) else None for t in allowed]
        if not all(isinstance(n, str) for n in listed):
            raise InvalidRequest("invalid tool_choice.tools: each allowed tool needs a name")
        names = set(listed)
        kept = [t for t in tools or () if t["function"]["name"] in names]
        if len(kept) != len(names):
            raise InvalidRequest("invalid tool_choice.tools: every allowed tool must be one of the request's tools")
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise InvalidRequest(f"invalid tool_choice.mode {_short(mode)}: use auto or required")
        return mode, kept or None
    raise InvalidRequest(f"invalid tool_choice.type {_short(kind)}: use function or allowed_tools")


def text_format(text: Any) -> Any:
    """``text.format`` as a native ``format``: None (text), ``"json"`` (json_object) or a JSON schema."""
    if text is None:
        return None
    if not isinstance(text, Mapping):
        raise InvalidRequest("invalid text: expected an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, Mapping):
            raise InvalidRequest("invalid text.format.schema: a json_schema format needs a JSON schema object")
        return schema
    raise InvalidRequest(f"invalid text.format.type {_short(kind)}: use text, json_object or json_schema")
