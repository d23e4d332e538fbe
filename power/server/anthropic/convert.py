"""Anthropic Messages requests in native terms: messages, tools, ``tool_choice``, thinking and sampling.

Pure functions over the validated body; every malformed block is a 400 naming
its place (``messages.2.content.1``), never a 500. Each Anthropic message
becomes one native message, its tool results native ``tool`` messages in front
of it (as Ollama does): they answer the previous assistant turn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from power.errors import InvalidRequest

__all__ = ["native_messages", "native_tools", "native_tool_choice", "thinking_of", "sampling_options",
           "output_schema"]

log = logging.getLogger(__name__)

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Blocks a model cannot use but clients echo back (redacted thinking): accepted and left out of the prompt.
_IGNORED = frozenset({"redacted_thinking"})
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "max", "max": "max"}


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected a string")
    return value


def system_text(system: Any) -> str:
    """``system`` as one string: a string, or the texts of its text blocks joined by blank lines."""
    if system is None or isinstance(system, str):
        return system or ""
    parts = []
    for i, block in enumerate(system):
        if block.get("type") != "text":
            raise InvalidRequest(f"system.{i}: only text blocks are allowed in system, "
                                 f"not {str(block.get('type'))[:40]!r}")
        parts.append(_text(block.get("text"), f"system.{i}.text"))
    return "\n\n".join(p for p in parts if p)


def _image(block: Mapping[str, Any], where: str) -> str:
    """The base64 data of an image block (decoded and checked later, with the model's vision)."""
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise InvalidRequest(f"{where}.source: an image needs a source object")
    if source.get("type") != "base64":
        raise InvalidRequest(f"{where}.source: only base64 image sources are supported, "
                             f"not {str(source.get('type'))[:20]!r}")
    media = source.get("media_type")
    if media not in IMAGE_TYPES:
        raise InvalidRequest(f"{where}.source.media_type: expected one of {', '.join(sorted(IMAGE_TYPES))}")
    return _text(source.get("data"), f"{where}.source.data")


def _result_content(content: Any, where: str) -> tuple[str, list[str]]:
    """A tool_result's content: a string, or text and image blocks."""
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: expected a string or a list of blocks")
    texts: list[str] = []
    images: list[str] = []
    for k, block in enumerate(content):
        at = f"{where}.{k}"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            texts.append(_text(block.get("text"), f"{at}.text"))
        elif kind == "image":
            images.append(_image(block, at))
        else:
            raise InvalidRequest(f"{at}: unknown block type {str(kind)[:40]!r} in tool_result content")
    return "\n\n".join(texts), images


def native_messages(system: Any, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic ``system`` and ``messages`` as native chat messages."""
    out: list[dict[str, Any]] = []
    if text := system_text(system):
        out.append({"role": "system", "content": text})
    names: dict[str, str] = {}  # tool_use id -> tool name, for the tool_results that answer them
    for i, msg in enumerate(messages):
        role = msg["role"]
        content = msg["content"]
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        texts: list[str] = []
        thinking: list[str] = []
        images: list[str] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            kind = block.get("type")
            if kind == "text":
                texts.append(_text(block.get("text"), f"{where}.text"))
            elif kind == "image":
                images.append(_image(block, where))
            elif kind == "thinking":
                thinking.append(_text(block.get("thinking", ""), f"{where}.thinking"))
            elif kind == "tool_use":
                if role != "assistant":
                    raise InvalidRequest(f"{where}: tool_use blocks belong in assistant messages")
                ident = _text(block.get("id"), f"{where}.id")
                name = _text(block.get("name"), f"{where}.name")
                args = block.get("input", {})
                if not ident or not name or not isinstance(args, Mapping):
                    raise InvalidRequest(f"{where}: a tool_use needs an id, a name and an input object")
                names[ident] = name
                calls.append({"id": ident, "function": {"index": len(calls), "name": name, "arguments": dict(args)}})
            elif kind == "tool_result":
                if role != "user":
                    raise InvalidRequest(f"{where}: tool_result blocks belong in user messages")
                ident = _text(block.get("tool_use_id"), f"{where}.tool_use_id")
                if ident not in names:
                    raise InvalidRequest(f"{where}: tool_result for {ident[:64]!r} names no earlier tool_use")
                result, result_images = _result_content(block.get("content"), f"{where}.content")
                if block.get("is_error") and not result.lower().startswith("error"):
                    result = f"Error: {result}"
                tool: dict[str, Any] = {"role": "tool", "content": result, "tool_name": names[ident],
                                        "tool_call_id": ident}
                if result_images:
                    tool["images"] = result_images
                results.append(tool)
            elif kind in _IGNORED:
                continue
            else:
                raise InvalidRequest(f"{where}: unknown content block type {str(kind)[:40]!r}")
        out += results
        if texts or images or calls or thinking or not results:
            native: dict[str, Any] = {"role": role, "content": "\n\n".join(texts)}
            if thinking:
                native["thinking"] = "\n\n".join(t for t in thinking if t)
            if images:
                native["images"] = images
            if calls:
                native["tool_calls"] = calls
            out.append(native)
    return out


def native_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Client tools as native function tools; server tools (web search, ...) are left out: none runs here."""
    out = []
    for tool in tools or ():
        kind = tool.get("type")
        if kind not in (None, "custom"):
            log.info("anthropic tool left out: type=%s name=%s (no server tools here)", str(kind)[:40],
                     str(tool.get("name"))[:60])
            continue
        out.append({"type": "function", "function": {
            "name": tool["name"], "description": tool.get("description") or "",
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}})
    return out or None


def native_tool_choice(choice: Mapping[str, Any] | None) -> Any:
    """``auto``, ``any`` (a call is forced), ``tool`` (that one is forced) or ``none``, in OpenAI's terms."""
    if choice is None:
        return None
    kind = choice["type"]
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tool_choice.name: a tool choice of type \"tool\" names the tool")
        return {"type": "function", "function": {"name": name}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


def thinking_of(body: Mapping[str, Any]) -> tuple[bool | str | None, int | None]:
    """The native ``think`` value and the thinking budget in tokens (None: unbounded).

    Without ``thinking`` a thinking model thinks (as in Ollama) unless told otherwise;
    ``output_config.effort`` picks the level.
    """
    effort = (body.get("output_config") or {}).get("effort")
    level: str | None = None
    if effort is not None:
        if effort not in _EFFORTS:
            raise InvalidRequest(f"output_config.effort: expected one of low, medium, high, xhigh or max, "
                                 f"not {str(effort)[:20]!r}")
        level = _EFFORTS[effort]
    config = body.get("thinking")
    if config is None:
        return level, None
    if config["type"] == "disabled":
        return False, None
    budget = config.get("budget_tokens") if config["type"] == "enabled" else None
    return level or True, budget


def output_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON schema of structured output (``output_config.format``, or the beta's ``output_format``)."""
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), Mapping):
        raise InvalidRequest("output_config.format: expected {\"type\": \"json_schema\", \"schema\": {...}}")
    return fmt["schema"]


def sampling_options(body: Mapping[str, Any]) -> dict[str, Any]:
    """Native options: ``max_tokens`` as ``num_predict``; sampling only where the request sets it."""
    options: dict[str, Any] = {}
    if body.get("max_tokens") is not None:
        options["num_predict"] = body["max_tokens"]
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            options[key] = body[key]
    return options
