"""Anthropic Messages requests in native terms: messages, tools, ``tool_choice``, thinking and sampling.

Pure functions over the validated body; every malformed block is a 400 naming
its place (``messages.2.content.1``), never a 500. Each Anthropic message
becomes one native message, its tool results native ``tool`` messages in front
of it (as Ollama does): they answer the previous assistant turn. Documents in
plain text and search results become text; the calls of server tools (web
search, code execution, remote MCP) in an earlier assistant turn become calls,
their results ``tool`` messages after that turn. Blocks of Anthropic's that no
model here can use (redacted thinking, PDF documents) are left out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from power.errors import InvalidRequest

__all__ = ["native_messages", "native_tools", "native_tool_choice", "thinking_of", "sampling_options",
           "output_schema"]

log = logging.getLogger(__name__)

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Blocks of Anthropic's that a model here cannot use but clients send or echo back (redacted thinking, uploads to
# a code container, tool search references): accepted and left out of the prompt, as Ollama leaves them out.
_IGNORED = frozenset({"redacted_thinking", "container_upload", "tool_reference"})
# Calls of server tools (web search, code execution, remote MCP) in earlier assistant turns, and their results
_SERVER_CALLS = frozenset({"server_tool_use", "mcp_tool_use"})
_SERVER_RESULTS = frozenset({"web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
                             "bash_code_execution_tool_result", "text_editor_code_execution_tool_result",
                             "tool_search_tool_result", "mcp_tool_result"})
_RESULT_CHARS = 8000  # of a server tool's result shown to the model
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


def _document(block: Mapping[str, Any], where: str) -> str | None:
    """A document's text (a plain-text or content source), titled; None for one that cannot be read here (a PDF
    or a URL: left out, as Ollama leaves it out)."""
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise InvalidRequest(f"{where}.source: a document needs a source object")
    kind = source.get("type")
    if kind == "text":
        text = _text(source.get("data"), f"{where}.source.data")
    elif kind == "content":
        content = source.get("content")
        text = content if isinstance(content, str) else _texts(content, f"{where}.source.content")
    else:
        log.info("anthropic document left out: source type %s cannot be read here", str(kind)[:20])
        return None
    title = block.get("title")
    return f"{title}\n\n{text}" if isinstance(title, str) and title else text


def _texts(blocks: Any, where: str) -> str:
    """The texts of a list of text blocks, joined by blank lines."""
    if not isinstance(blocks, list):
        raise InvalidRequest(f"{where}: expected a list of text blocks")
    return "\n\n".join(_text(b.get("text") if isinstance(b, Mapping) else None, f"{where}.{k}.text")
                        for k, b in enumerate(blocks))


def _search_result(block: Mapping[str, Any], where: str) -> str:
    """A search result as text: its title and source, then its content."""
    head = " - ".join(str(block[k]) for k in ("title", "source") if isinstance(block.get(k), str) and block[k])
    body = _texts(block.get("content"), f"{where}.content")
    return f"{head}\n{body}" if head else body


def _server_result(block: Mapping[str, Any]) -> str:
    """A server tool's result as text: a search's titles and URLs, an error's code, else its content as JSON."""
    content = block.get("content")
    if isinstance(content, str):
        return content[:_RESULT_CHARS]
    if isinstance(content, Mapping) and str(content.get("type", "")).endswith("error"):
        return f"error: {content.get('error_code') or 'unknown'}"
    if isinstance(content, list) and all(isinstance(c, Mapping) for c in content):
        if all("url" in c for c in content):
            return "\n".join(f"- {c.get('title') or ''}: {c['url']}" for c in content)
        if all(c.get("type") == "text" for c in content):
            return "\n\n".join(str(c.get("text") or "") for c in content)[:_RESULT_CHARS]
    return json.dumps(content, ensure_ascii=False)[:_RESULT_CHARS]


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
        elif kind == "document":
            if (text := _document(block, at)) is not None:
                texts.append(text)
        elif kind == "search_result":
            texts.append(_search_result(block, at))
        elif kind not in _IGNORED:
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
        results: list[dict[str, Any]] = []  # tool results of a user turn: before it
        answers: list[dict[str, Any]] = []  # server tools' results in an assistant turn: after it
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            kind = block.get("type")
            if kind == "text":
                texts.append(_text(block.get("text"), f"{where}.text"))
            elif kind == "image":
                images.append(_image(block, where))
            elif kind == "document":
                if (text := _document(block, where)) is not None:
                    texts.append(text)
            elif kind == "search_result":
                texts.append(_search_result(block, where))
            elif kind == "thinking":
                thinking.append(_text(block.get("thinking", ""), f"{where}.thinking"))
            elif kind == "tool_use" or kind in _SERVER_CALLS:
                if role != "assistant":
                    raise InvalidRequest(f"{where}: {kind} blocks belong in assistant messages")
                ident = _text(block.get("id"), f"{where}.id")
                name = _text(block.get("name"), f"{where}.name")
                args = block.get("input", {})
                if not ident or not name or not isinstance(args, Mapping):
                    raise InvalidRequest(f"{where}: a tool_use needs an id, a name and an input object")
                names[ident] = name
                calls.append({"id": ident, "function": {"index": len(calls), "name": name, "arguments": dict(args)}})
            elif kind in _SERVER_RESULTS:  # in the assistant turn that called it: its result follows that turn
                ident = _text(block.get("tool_use_id"), f"{where}.tool_use_id")
                answers.append({"role": "tool", "content": _server_result(block), "tool_name": names.get(ident, ""),
                                "tool_call_id": ident})
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
        out += answers
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
