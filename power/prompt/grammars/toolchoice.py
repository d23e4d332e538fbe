"""Tools in a request: checking their schemas, ``tool_choice``, and the grammar that forces a call.

``plan_tools(tools, tool_choice, tag)`` decides what the prompt shows and what
the sampler must produce: ``none`` hides the tools (and nothing is parsed as a
call), ``auto`` leaves the model free, ``required`` and a named function
constrain the output with a grammar in the model's own tool-call format
(Hermes/Qwen ``<tool_call>`` blocks, Mistral ``[TOOL_CALLS]``, each family's own
syntax (``Family.forced``, written by ``calls``: XML parameters, key/value tags,
channels, JSON between tags of its own), else a bare ``{"name": ..., "arguments": ...}``
object) built from the tools' parameter schemas, so what comes out always parses
as a call of a supplied tool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from power.errors import InvalidRequest
from power.prompt.families.family import Family
from power.prompt.grammars.calls import each_tool, family_call_grammar
from power.prompt.grammars.schema import GrammarBuilder, gbnf_literal, measure_schema

__all__ = ["ToolPlan", "check_tools", "plan_tools", "tool_call_grammar"]

MAX_TOOLS = 128


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for the prompt, the parser and the sampler."""

    tools: list[dict[str, Any]] | None  # shown to the template and parsed for; None when hidden
    grammar: str | None  # forces a call (required / named)
    forced: bool = False


def _function(tool: Any, i: int) -> Mapping[str, Any]:
    fn = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise InvalidRequest(f"invalid tools[{i}]: a function with a name is required")
    return fn


def check_tools(tools: Any) -> list[dict[str, Any]]:
    """Structural checks of every tool's ``parameters`` (bounded; no meta-schema, as clients vary).

    A tool whose parameters are not an object, whose ``properties`` is not an
    object of schemas, or whose ``required`` is not a list of names is a 400.
    """
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be an array")
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"too many tools: at most {MAX_TOOLS}")
    for i, tool in enumerate(tools):
        fn = _function(tool, i)
        params = fn.get("parameters")
        if params is None:
            continue
        where = f"tools[{i}].function.parameters"
        if not isinstance(params, Mapping):
            raise InvalidRequest(f"invalid {where}: expected a JSON schema object")
        props = params.get("properties")
        if props is not None and (not isinstance(props, Mapping)
                                  or not all(isinstance(v, (Mapping, bool)) for v in props.values())):
            raise InvalidRequest(f"invalid {where}.properties: expected an object of schemas")
        required = params.get("required")
        if required is not None and (not isinstance(required, list)
                                     or not all(isinstance(r, str) for r in required)):
            raise InvalidRequest(f"invalid {where}.required: expected an array of property names")
        measure_schema(params, where)
    return list(tools)


def _named(choice: Mapping[str, Any]) -> str:
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, Mapping) else choice.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("invalid tool_choice: expected {\"type\": \"function\", \"function\": {\"name\": ...}}")
    return name


def plan_tools(tools: Any, tool_choice: Any, tag: str | None, family: Family | None = None) -> ToolPlan:
    """Apply ``tool_choice`` (``none``, ``auto``, ``required`` or a named function) to ``tools``.

    A forced call is written in ``family``'s syntax, else in that of the family ``tag`` opens.
    """
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice requires tools")
        return ToolPlan(None, None)
    tools = check_tools(tools)
    if tool_choice in (None, "auto"):
        return ToolPlan(tools, None)
    if tool_choice == "none":
        return ToolPlan(None, None)
    if tool_choice == "required":
        return ToolPlan(tools, tool_call_grammar(tools, tag, family), forced=True)
    if isinstance(tool_choice, Mapping):
        name = _named(tool_choice)
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise InvalidRequest(f"invalid tool_choice: no tool named {name[:60]!r}")
        return ToolPlan(tools, tool_call_grammar(chosen, tag, family), forced=True)
    raise InvalidRequest(f"invalid tool_choice {str(tool_choice)[:40]!r}: use none, auto, required or "
                         "a named function")


def _family_of_tag(tag: str | None) -> Family | None:
    """The family whose calls ``tag`` opens; of several (``<tool_call>``), the most general (the last)."""
    from power.prompt.families import FAMILIES  # noqa: PLC0415 (the families import parsing)

    family = next((f for f in reversed(FAMILIES) if f.open == tag), None)
    return family if family is not None and family.forced else None


def tool_call_grammar(tools: Sequence[Mapping[str, Any]], tag: str | None, family: Family | None = None) -> str:
    """GBNF for exactly one call of one of ``tools`` in the format of ``family`` (else the one ``tag`` names)."""
    builder = GrammarBuilder(where="tool parameters")
    builder.primitive("space")
    for i, tool in enumerate(tools):
        _function(tool, i)
    family = family if family is not None and family.forced else _family_of_tag(tag)
    if family is not None:
        return family_call_grammar(family, tools, builder)
    calls: list[str] = []
    for name, params in each_tool(tools, builder):
        args = builder.visit(params, f"{name}-arguments")
        calls.append(builder.add(f"{name}-call", (
            '"{" space "\\"name\\"" space ":" space '
            f'{gbnf_literal(json.dumps(name, ensure_ascii=False))} space "," space '
            f'"\\"arguments\\"" space ":" space {args} "}}" space')))
    call = builder.add("call", " | ".join(calls))
    if tag == "<tool_call>":
        root = f'"<tool_call>\\n" {call} "\\n</tool_call>"'
    elif tag == "[TOOL_CALLS]":
        root = f'"[TOOL_CALLS]" "[" space {call} "]"'
    elif tag and tag != "{":
        root = f"{gbnf_literal(tag)} {call}"
    else:
        root = call
    return builder.text(root)
