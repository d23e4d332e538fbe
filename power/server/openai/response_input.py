"""Translate a Responses request into chat terms: input items and ``text.format`` (tools: ``response_tools``).

Input items become OpenAI chat messages, which ``native_messages`` then turns
into native ones exactly as ``/v1/chat/completions`` does, so the same
conversation renders the same prompt on every API. A ``reasoning`` item rides
on the assistant turn that follows it; a call (``function_call``,
``custom_tool_call``, ``local_shell_call``) joins the assistant turn before it
under the name the model saw for its tool (``response_tools``); its output must
answer an earlier call. Calls of hosted tools are left out, as those tools are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from power.api import jsonsafe
from power.errors import InvalidRequest
from power.server.openai.response_tools import SHELL, custom_arguments, qualified, shell_arguments

__all__ = ["input_items", "chat_messages", "text_format"]

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_KINDS = ("message, function_call, function_call_output, custom_tool_call, custom_tool_call_output, "
          "local_shell_call, local_shell_call_output or reasoning")
_CALLS = frozenset({"function_call", "custom_tool_call", "local_shell_call"})
_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output", "local_shell_call_output"})
_HOSTED_CALLS = frozenset({"web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call",
                           "computer_call", "computer_call_output", "mcp_call", "mcp_list_tools",
                           "tool_search_call", "tool_search_output"})


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


def _call_of(kind: str, item: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    """A call item's call id, the name the model saw for its tool, and its arguments as a JSON string."""
    call_id = item.get("call_id")
    if call_id is None and kind == "local_shell_call":
        call_id = item.get("id")
    name = SHELL if kind == "local_shell_call" else item.get("name")
    namespace = item.get("namespace")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name or \
            not isinstance(namespace, (str, type(None))):
        raise InvalidRequest(f"invalid {where}: a {kind} needs a call_id and a name")
    if kind == "custom_tool_call":
        arguments = json.dumps(custom_arguments(item.get("input"), where), ensure_ascii=False)
    elif kind == "local_shell_call":
        arguments = json.dumps(shell_arguments(item.get("action"), where), ensure_ascii=False)
    else:
        arguments = _arguments(item, where)
    return call_id, qualified(name, namespace), arguments


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
        if not isinstance(kind, str):
            raise InvalidRequest(f"invalid {where}.type {_short(kind)}: use {_KINDS}")
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
        elif kind in _CALLS:
            call_id, name, arguments = _call_of(kind, item, where)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            calls[call_id] = name
            if kind == "local_shell_call" and isinstance(item.get("id"), str):
                calls[item["id"]] = name  # its output may name the call by the item's id
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if thinking and not last.get("reasoning"):
                    last["reasoning"], thinking = thinking, ""
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call],
                            **({"reasoning": thinking} if thinking else {})})
                thinking = ""
        elif kind in _OUTPUTS:
            call_id = item.get("call_id")
            if call_id is None and kind == "local_shell_call_output":
                call_id = item.get("id")
            if not isinstance(call_id, str) or call_id not in calls:
                raise InvalidRequest(f"invalid {where}: no call with call_id {_short(call_id)} "
                                     f"comes before this {kind}")
            output = item.get("output")
            out.append({"role": "tool", "tool_call_id": call_id, "name": calls[call_id],
                        "content": _parts(output, f"{where}.output") or None})
        elif kind in _HOSTED_CALLS:
            continue  # a hosted tool's call and result: nothing here ran it, the model never saw the tool
        elif kind == "reasoning":
            parts = _parts(item.get("content"), f"{where}.content", text_only=True) or \
                _parts(item.get("summary"), f"{where}.summary", text_only=True)
            thinking += _text(parts)
        else:
            raise InvalidRequest(f"invalid {where}.type {_short(kind)}: use {_KINDS}")
    # reasoning after the last assistant turn has no turn to ride on; it is dropped
    return out


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
