"""The Responses API's tools in chat terms, and the model's calls back in the Responses API's items.

A Responses request declares more kinds of tool than the chat API knows:

- ``function``: flat (``{"type": "function", "name": ...}``); chat nests it under ``function``.
- ``namespace``: a group of function and custom tools (Codex puts each MCP server's tools in one); the model
  sees each member as ``<namespace>.<name>`` (as Ollama names them), and its call comes back as a
  ``function_call`` (or ``custom_tool_call``) with ``name`` and ``namespace`` apart, as OpenAI sends it.
- ``custom``: a tool whose input is free text, optionally in a grammar (Codex's ``apply_patch``); the model
  sees a function with one string parameter ``input`` and the grammar in its description, and its call comes
  back as a ``custom_tool_call`` item carrying that text.
- ``local_shell``: the model sees a function ``local_shell`` with an argv ``command``, and its call comes back
  as a ``local_shell_call`` item with an ``exec`` action.
- Hosted tools (web and file search, code interpreter, image generation, computer use, remote MCP, tool
  search ...): nothing here runs them, so the model does not see them; the request is still answered (a model
  that does not search), as Ollama answers it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from power.errors import InvalidRequest

__all__ = ["SHELL", "ToolSpec", "ResponseTools", "response_tools", "chat_tool_choice", "custom_arguments",
           "shell_arguments", "shell_action", "qualified"]

log = logging.getLogger(__name__)

SHELL = "local_shell"
_GRAMMAR_CHARS = 8000  # of a custom tool's grammar shown to the model
_SHELL_PARAMETERS = {
    "type": "object",
    "properties": {
        "command": {"type": "array", "items": {"type": "string"},
                    "description": "the command and its arguments, e.g. [\"bash\", \"-lc\", \"ls -la\"]"},
        "workdir": {"type": "string", "description": "the folder to run it in"},
        "timeout_ms": {"type": "integer", "description": "how long it may run, in milliseconds"},
    },
    "required": ["command"],
}
_CUSTOM_PARAMETERS = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}


def _short(value: Any) -> str:
    return repr(str(value)[:40])


def qualified(name: str, namespace: str | None) -> str:
    """The name the model sees for ``name`` in ``namespace``."""
    if not namespace or name.startswith(namespace + "."):
        return name
    return f"{namespace}.{name}"


@dataclass(frozen=True)
class ToolSpec:
    """What a name the model may call stands for: its kind, its own name and its namespace."""

    kind: str  # "function", "custom" or "local_shell"
    name: str
    namespace: str | None = None


@dataclass
class ResponseTools:
    """The chat tools the model sees, and what each of their names stands for in the Responses API."""

    functions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by the name the model sees
    specs: dict[str, ToolSpec] = field(default_factory=dict)

    @property
    def chat(self) -> list[dict[str, Any]]:
        """The chat tools, in the order declared (a name declared twice: its last declaration)."""
        return [{"type": "function", "function": fn} for fn in self.functions.values()]

    def spec(self, called: str) -> ToolSpec:
        """The tool a call names; a name the request did not declare is a plain function."""
        return self.specs.get(called) or ToolSpec("function", called)

    def add(self, where: str, tool: Mapping[str, Any], namespace: str | None = None) -> None:
        kind = tool.get("type")
        if kind == SHELL and namespace is None:
            self._put(SHELL, ToolSpec(SHELL, SHELL), "Runs a shell command on the user's machine and returns its "
                      "output.", _SHELL_PARAMETERS)
            return
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"invalid {where}: a {kind} tool needs a name")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise InvalidRequest(f"invalid {where}.description: expected a string")
        called = qualified(name, namespace)
        spec = ToolSpec(kind, called[len(namespace) + 1:] if namespace else name, namespace)
        if kind == "function":
            self._put(called, spec, description, tool.get("parameters"))
        else:
            self._put(called, spec, _custom_description(description, tool.get("format"), where), _CUSTOM_PARAMETERS)

    def _put(self, called: str, spec: ToolSpec, description: str | None, parameters: Any) -> None:
        fn: dict[str, Any] = {"name": called}
        if description:
            fn["description"] = description
        if parameters is not None:
            fn["parameters"] = parameters
        self.functions.pop(called, None)  # the last declaration wins, in its place
        self.functions[called] = fn
        self.specs[called] = spec


def _custom_description(description: str | None, fmt: Any, where: str) -> str:
    """A custom tool's description for the model: what it does, and the syntax its free-text input follows."""
    text = description or ""
    if fmt is None:
        return text
    if not isinstance(fmt, Mapping):
        raise InvalidRequest(f"invalid {where}.format: expected an object")
    if fmt.get("type") == "grammar":
        definition = fmt.get("definition")
        if not isinstance(definition, str):
            raise InvalidRequest(f"invalid {where}.format.definition: a grammar format needs its definition")
        syntax = fmt.get("syntax") or "lark"
        text += f"\n\nThe input must follow this {syntax} grammar:\n{definition[:_GRAMMAR_CHARS]}"
    elif fmt.get("type") not in ("text", None):
        raise InvalidRequest(f"invalid {where}.format.type {_short(fmt.get('type'))}: use text or grammar")
    return text.strip()


def response_tools(tools: Any) -> ResponseTools:
    """The request's ``tools`` as the chat tools the model sees (see the module's text for each kind)."""
    out = ResponseTools()
    if not tools:
        return out
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be an array")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping) or not isinstance(tool.get("type"), str):
            raise InvalidRequest(f"invalid {where}: a tool is an object with a type")
        kind = tool["type"]
        if kind == "namespace":
            namespace, members = tool.get("name"), tool.get("tools")
            if not isinstance(namespace, str) or not namespace or not isinstance(members, list):
                raise InvalidRequest(f"invalid {where}: a namespace tool needs a name and an array of tools")
            for j, member in enumerate(members):
                at = f"{where}.tools[{j}]"
                if not isinstance(member, Mapping) or member.get("type") not in ("function", "custom"):
                    kind_of = member.get("type") if isinstance(member, Mapping) else None
                    raise InvalidRequest(f"invalid {at}.type {_short(kind_of)}: a namespace holds function and "
                                         "custom tools")
                out.add(at, member, namespace)
        elif kind in ("function", "custom", SHELL):
            out.add(where, tool)
        else:
            log.info("responses tool left out: type=%s (hosted tools do not run here)", kind[:40])
    return out


def chat_tool_choice(choice: Any, tools: ResponseTools) -> tuple[Any, list[dict[str, Any]] | None]:
    """Responses' ``tool_choice`` as chat's, with the chat tools it allows."""
    chat = tools.chat or None
    if choice is None or isinstance(choice, str):
        return choice, chat
    if not isinstance(choice, Mapping):
        raise InvalidRequest("invalid tool_choice: use none, auto, required or {\"type\": \"function\", "
                             "\"name\": ...}")
    kind = choice.get("type")
    if kind in ("function", "custom", SHELL):
        return {"type": "function", "function": {"name": _chosen(choice, "tool_choice")}}, chat
    if kind == "allowed_tools":
        allowed = choice.get("tools")
        if not isinstance(allowed, list):
            raise InvalidRequest("invalid tool_choice.tools: expected an array of tools")
        names = {_chosen(t, f"tool_choice.tools[{i}]") for i, t in enumerate(allowed)
                 if not isinstance(t, Mapping) or t.get("type") in ("function", "custom", SHELL, None)}
        kept = [t for t in chat or () if t["function"]["name"] in names]
        if len(kept) != len(names):
            raise InvalidRequest("invalid tool_choice.tools: every allowed tool must be one of the request's tools")
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise InvalidRequest(f"invalid tool_choice.mode {_short(mode)}: use auto or required")
        return mode, kept or None
    if kind in ("mcp", "file_search", "web_search", "web_search_preview", "web_search_preview_2025_03_11",
                "code_interpreter", "image_generation", "computer_use_preview", "computer_use", "shell",
                "apply_patch", "tool_search"):
        return "auto", chat  # a hosted tool: it was left out, so the model answers as it would
    raise InvalidRequest(f"invalid tool_choice.type {_short(kind)}: use function, custom or allowed_tools")


def _chosen(choice: Any, where: str) -> str:
    """The name the model sees for the tool a choice names."""
    if not isinstance(choice, Mapping):
        raise InvalidRequest(f"invalid {where}: expected a tool object")
    if choice.get("type") == SHELL:
        return SHELL
    name, namespace = choice.get("name"), choice.get("namespace")
    if not isinstance(name, str) or not name or not isinstance(namespace, (str, type(None))):
        raise InvalidRequest(f"invalid {where}: each chosen tool needs a name")
    return qualified(name, namespace)


def custom_arguments(text: Any, where: str) -> dict[str, Any]:
    """A ``custom_tool_call``'s free-text input as the arguments of the function the model saw."""
    if not isinstance(text, str):
        raise InvalidRequest(f"invalid {where}.input: expected a string")
    return {"input": text}


def shell_arguments(action: Any, where: str) -> dict[str, Any]:
    """A ``local_shell_call``'s ``exec`` action as the arguments of the ``local_shell`` function."""
    if not isinstance(action, Mapping) or not isinstance(action.get("command"), list):
        raise InvalidRequest(f"invalid {where}.action: a local_shell_call needs an exec action with a command")
    args: dict[str, Any] = {"command": [str(c) for c in action["command"]]}
    if isinstance(action.get("working_directory"), str):
        args["workdir"] = action["working_directory"]
    if isinstance(action.get("timeout_ms"), int):
        args["timeout_ms"] = action["timeout_ms"]
    return args


def shell_action(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The ``exec`` action of a ``local_shell_call`` from the model's ``local_shell`` arguments (a command given
    as one string runs in ``bash -lc``)."""
    command = arguments.get("command")
    if isinstance(command, str):
        command = ["bash", "-lc", command]
    elif not isinstance(command, list):
        command = [json.dumps(command)] if command is not None else []
    timeout = arguments.get("timeout_ms")
    workdir = arguments.get("workdir") or arguments.get("working_directory")
    return {"type": "exec", "command": [str(c) for c in command], "env": {},
            "timeout_ms": timeout if isinstance(timeout, int) else None,
            "working_directory": workdir if isinstance(workdir, str) else None, "user": None}
