"""Prompting: messages in, prompt text out; model output in, content/thinking/tool calls out.

Pure Python, no I/O; every template renders in a sandbox with limits on steps,
time, nesting and output, and every failure is a ``TemplateError`` (400) or an
``InvalidRequest``.

Building prompts::

    source = TemplateSource(go=template_layer_text, jinja=gguf_chat_template,
                            metadata=gguf_metadata, model="qwen2.5:latest")
    prompt = render_chat(source, request["messages"], tools=request.get("tools"),
                         think=request.get("think"), system_default=modelfile_system,
                         history=modelfile_messages, num_ctx=4096, count_tokens=count)
    built = build_chat(source, ...)      # ChatPrompt(text, images, truncated)
    prompt = render_generate(source, "why is the sky blue?", system=None, template=None,
                             suffix=None, raw=False, images=(), context=detokenized)

``TemplateSource.kind`` says which template renders ("go", "jinja" or "builtin");
``builtin_format(metadata).stop`` gives stop words for a built-in format.

Reading output (streaming or whole)::

    parser = output_parser(source, prompt=prompt, tools=tools, think=think)
    for piece in generated_text:
        delta = parser.feed(piece)       # Delta(content, thinking, tool_calls)
    delta = parser.finish()
    delta.tool_calls[0].to_ollama()      # {"id": "call_ab12cd34", "function": {...}}
    delta.tool_calls[0].to_openai()      # arguments as a JSON string, with index

``ToolCallParser(tools, tag)`` and ``ThinkingParser(open, close)`` are the two
halves, usable alone (same ``feed``/``finish`` contract). ``capabilities_of(go,
jinja, metadata)`` gives the template-derived capabilities ("tools", "insert",
"thinking"); ``tool_call_tag`` and ``thinking_tags`` the tags a template declares.

Layout: this folder builds prompts (``chat``, ``messages``, ``jinja``, ``builtin``,
``capabilities``, ``limits``); ``go/`` is Ollama's Go template engine; ``grammars/``
the GBNF the sampler is constrained with (schemas, thinking, ``tool_choice``);
``parsing/`` reads model output; ``families/`` holds the tool-call and thinking
syntax of each model family, one module per family, named after it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. The package imports its modules on first use (PEP 562), so that
# importing one small module of it (``power.prompt.limits`` from the store, say) does not pull in
# Jinja, jsonschema and every family: the CLI starts without them.
_EXPORTS = {
    "power.prompt.builtin": ("BuiltinFormat", "builtin_format", "fim_template"),
    "power.prompt.capabilities": ("capabilities_of",),
    "power.prompt.chat": ("ChatPrompt", "TemplateSource", "build_chat", "model_templates", "render_chat",
                          "render_generate", "rendering_template", "think_values"),
    "power.prompt.go": ("GoTemplate", "parse_template"),
    "power.prompt.grammars": ("ToolPlan", "after_thinking", "plan_tools", "tool_call_grammar"),
    "power.prompt.jinja": ("JinjaTemplate", "is_jinja", "parse_jinja"),
    "power.prompt.limits": ("Limits",),
    "power.prompt.parsing": ("Delta", "OutputParser", "ThinkingParser", "ToolCall", "ToolCallParser",
                             "new_call_id", "output_parser", "parse_tool_calls", "starts_thinking",
                             "thinking_tags", "tool_call_tag"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:
    from power.prompt.builtin import BuiltinFormat, builtin_format, fim_template
    from power.prompt.capabilities import capabilities_of
    from power.prompt.chat import (
        ChatPrompt,
        TemplateSource,
        build_chat,
        model_templates,
        render_chat,
        render_generate,
        rendering_template,
        think_values,
    )
    from power.prompt.go import GoTemplate, parse_template
    from power.prompt.grammars import ToolPlan, after_thinking, plan_tools, tool_call_grammar
    from power.prompt.jinja import JinjaTemplate, is_jinja, parse_jinja
    from power.prompt.limits import Limits
    from power.prompt.parsing import (
        Delta,
        OutputParser,
        ThinkingParser,
        ToolCall,
        ToolCallParser,
        new_call_id,
        output_parser,
        parse_tool_calls,
        starts_thinking,
        thinking_tags,
        tool_call_tag,
    )


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


__all__ = [
    "BuiltinFormat",
    "ChatPrompt",
    "Delta",
    "GoTemplate",
    "JinjaTemplate",
    "Limits",
    "OutputParser",
    "TemplateSource",
    "ThinkingParser",
    "ToolCall",
    "ToolCallParser",
    "ToolPlan",
    "after_thinking",
    "build_chat",
    "builtin_format",
    "capabilities_of",
    "fim_template",
    "is_jinja",
    "model_templates",
    "new_call_id",
    "output_parser",
    "parse_jinja",
    "parse_template",
    "parse_tool_calls",
    "plan_tools",
    "render_chat",
    "render_generate",
    "rendering_template",
    "starts_thinking",
    "think_values",
    "thinking_tags",
    "tool_call_grammar",
    "tool_call_tag",
]
