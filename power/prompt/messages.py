"""Chat messages: checking request messages, merging turns, and the shapes templates see.

Requests carry Ollama messages (``role``, ``content``, ``thinking``, ``images``,
``tool_calls``, ``tool_name``, ``tool_call_id``). ``normalize`` checks and
copies them into ``Message`` values; ``collate`` merges turns as Ollama does;
``go_message`` and ``hf_message`` give the views Go templates and Jinja chat
templates expect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from power.errors import InvalidRequest

__all__ = [
    "Message",
    "ToolCallIn",
    "collate",
    "default_image_marker",
    "go_message",
    "hf_message",
    "hf_messages",
    "hf_tools",
    "normalize",
    "normalize_tools",
    "with_image_markers",
]


@dataclass(frozen=True)
class ToolCallIn:
    """A tool call carried by an assistant message of the request."""
    name: str
    arguments: dict[str, Any]
    id: str = ""
    index: int = 0


@dataclass(frozen=True)
class Message:
    role: str
    content: str = ""
    thinking: str = ""
    images: tuple[Any, ...] = ()
    tool_calls: tuple[ToolCallIn, ...] = ()
    tool_name: str = ""
    tool_call_id: str = ""
    image_ids: tuple[int, ...] = field(default=(), compare=False)


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"invalid message: {what} must be a string")
    return value


def _tool_call(raw: Any, position: int) -> ToolCallIn:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise InvalidRequest("invalid message: tool_calls entries need a function object")
    func = raw["function"]
    name = _text(func.get("name"), "tool call name")
    args = func.get("arguments")
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError as exc:
            raise InvalidRequest(f"invalid tool call arguments for {name!r}: {exc}") from exc
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidRequest(f"invalid tool call arguments for {name!r}: not an object")
    index = func.get("index", raw.get("index", position))
    return ToolCallIn(name, args, _text(raw.get("id"), "tool call id"),
                      index if isinstance(index, int) and not isinstance(index, bool) else position)


def normalize(raw_messages: Iterable[Any]) -> list[Message]:
    """Check request messages and turn them into ``Message`` values (roles lower-cased)."""
    if isinstance(raw_messages, (str, bytes, dict)):
        raise InvalidRequest("messages must be a list")
    out: list[Message] = []
    for raw in raw_messages:
        if isinstance(raw, Message):
            out.append(raw)
            continue
        if not isinstance(raw, dict):
            raise InvalidRequest("invalid message: expected an object")
        role = _text(raw.get("role"), "role").lower()
        images = raw.get("images") or ()
        if not isinstance(images, (list, tuple)):
            raise InvalidRequest("invalid message: images must be a list")
        calls = raw.get("tool_calls") or ()
        if not isinstance(calls, (list, tuple)):
            raise InvalidRequest("invalid message: tool_calls must be a list")
        out.append(Message(
            role=role,
            content=_text(raw.get("content"), "content"),
            thinking=_text(raw.get("thinking", raw.get("reasoning")), "thinking"),
            images=tuple(images),
            tool_calls=tuple(_tool_call(c, i) for i, c in enumerate(calls)),
            tool_name=_text(raw.get("tool_name", raw.get("name")), "tool_name"),
            tool_call_id=_text(raw.get("tool_call_id"), "tool_call_id"),
        ))
    return out


def normalize_tools(tools: Any) -> list[dict[str, Any]]:
    """Check the request's tools: a list of ``{"type": "function", "function": {"name": ...}}``."""
    if tools is None:
        return []
    if not isinstance(tools, (list, tuple)):
        raise InvalidRequest("tools must be a list")
    for tool in tools:
        func = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(func, dict) or not isinstance(func.get("name"), str) or not func["name"]:
            raise InvalidRequest("invalid tool: each tool needs a function with a name")
        params = func.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest(f"invalid tool {func['name']!r}: parameters must be an object")
    return list(tools)


def _join(a: str, b: str) -> str:
    return f"{a}\n\n{b}" if a and b else a or b


def collate(msgs: Sequence[Message]) -> tuple[str, list[Message]]:
    """Join system messages (for ``.System``) and merge consecutive same-role turns (not tool)."""
    system = "\n\n".join(m.content for m in msgs if m.role == "system")
    merged: list[Message] = []
    for msg in msgs:
        prev = merged[-1] if merged else None
        if prev is not None and prev.role == msg.role and msg.role != "tool":
            merged[-1] = replace(
                prev,
                content=prev.content + "\n\n" + msg.content,
                thinking=_join(prev.thinking, msg.thinking),
                images=prev.images + msg.images,
                image_ids=prev.image_ids + msg.image_ids,
                tool_calls=prev.tool_calls + msg.tool_calls,
            )
        else:
            merged.append(msg)
    return system, merged


def default_image_marker(image_id: int) -> str:
    return f"[img-{image_id}]"


def with_image_markers(msgs: Sequence[Message], marker: Callable[[int], str]
                       ) -> tuple[list[Message], list[Any]]:
    """Number the images of ``msgs`` in order and mark each in its message's content.

    A ``[img]`` placeholder in the content is replaced; otherwise markers go in front.
    """
    images: list[Any] = []
    out: list[Message] = []
    for msg in msgs:
        if not msg.images:
            out.append(msg)
            continue
        content, prefix, ids = msg.content, "", []
        for image in msg.images:
            tag = marker(len(images))
            ids.append(len(images))
            images.append(image)
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag + " "
        out.append(replace(msg, content=prefix + content, image_ids=tuple(ids)))
    return out, images


def go_message(msg: Message) -> dict[str, Any]:
    """The ``.Messages`` element a Go template sees."""
    return {
        "Role": msg.role,
        "Content": msg.content,
        "Thinking": msg.thinking,
        "Images": list(msg.image_ids),
        "ToolCalls": [
            {"ID": c.id, "Function": {"Index": c.index, "Name": c.name, "Arguments": c.arguments}}
            for c in msg.tool_calls
        ],
        "ToolName": msg.tool_name,
        "ToolCallID": msg.tool_call_id,
    }


class _Arguments(dict):  # type: ignore[type-arg]
    """Tool call arguments: an object, and its JSON text where a template joins it to a string.

    Some templates ``tojson`` or iterate the arguments, others concatenate or print them
    (they were trained on OpenAI's string form); one value serves both, as llama.cpp's
    chat layer gives each template the form it wants.
    """

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)

    def __add__(self, other: Any) -> Any:
        return str(self) + other if isinstance(other, str) else NotImplemented

    def __radd__(self, other: Any) -> Any:
        return other + str(self) if isinstance(other, str) else NotImplemented


class _Tool(dict):  # type: ignore[type-arg]
    """A request tool whose function's fields also read at the top level (``tool.description``)."""

    def __missing__(self, key: str) -> Any:
        func = dict.get(self, "function")
        if isinstance(func, dict) and key in func:
            return func[key]
        raise KeyError(key)


def hf_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``tools`` a Jinja chat template sees."""
    return [_Tool(t) for t in tools]


def _call_id(turn: int, index: int) -> str:
    # Nine alphanumerics: what Mistral's templates demand; stable, so prompts cache.
    return hashlib.sha256(f"{turn}:{index}".encode()).hexdigest()[:9]


def hf_messages(msgs: Sequence[Message]) -> list[dict[str, Any]]:
    """The ``messages`` a Jinja template sees, with the ids templates expect filled in.

    A tool call without an id gets one; a tool result without ``tool_call_id`` takes
    the id of the call it answers (by name, else in order), as llama.cpp does.
    """
    out: list[dict[str, Any]] = []
    pending: list[ToolCallIn] = []
    for turn, msg in enumerate(msgs):
        if msg.tool_calls:
            msg = replace(msg, tool_calls=tuple(
                c if c.id else replace(c, id=_call_id(turn, i)) for i, c in enumerate(msg.tool_calls)))
            pending = list(msg.tool_calls)
        elif msg.role == "tool" and pending:
            match = next((c for c in pending if c.name == msg.tool_name), pending[0])
            pending.remove(match)
            msg = replace(msg, tool_call_id=msg.tool_call_id or match.id,
                          tool_name=msg.tool_name or match.name)
        elif msg.role != "tool":
            pending = []
        out.append(hf_message(msg))
    return out


def hf_message(msg: Message) -> dict[str, Any]:
    """The ``messages`` element a Jinja chat template sees (Hugging Face / OpenAI shape)."""
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": _Arguments(c.arguments)}}
            for c in msg.tool_calls
        ]
    if msg.tool_name:
        out["name"] = out["tool_name"] = msg.tool_name
    if msg.tool_call_id:
        out["tool_call_id"] = msg.tool_call_id
    if msg.thinking:
        out["reasoning_content"] = out["thinking"] = msg.thinking
    return out
