"""The one seam between the HTTP handlers and ``power.prompt``: prompts in, parsed output out.

Handlers never touch templates directly: they ask this module for the prompt of
a chat or generate request, the stop words of a model's format, the parser of
its output, and the grammar of a ``format``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from power.errors import InvalidRequest
from power.prompt import (
    OutputParser,
    TemplateSource,
    build_chat,
    builtin_format,
    output_parser,
    render_generate,
    tool_call_tag,
)
from power.prompt.families import family_of
from power.prompt.grammars import (
    JSON_OBJECT_GRAMMAR,
    ToolPlan,
    after_thinking,
    check_gbnf,
    plan_tools,
    schema_to_grammar,
)
from power.server.images import decode_images
from power.server.ports import ModelView

__all__ = [
    "JSON_GRAMMAR",
    "chat_prompt",
    "check_images",
    "generate_prompt",
    "grammar_for",
    "parser_for",
    "request_grammar",
    "source_of",
    "speaks_in_channels",
    "stop_words",
    "thinking_first",
    "tool_plan",
]

log = logging.getLogger(__name__)

JSON_GRAMMAR = JSON_OBJECT_GRAMMAR  # any JSON object: format "json", response_format json_object
def source_of(view: ModelView) -> TemplateSource:
    return TemplateSource(go=view.template, jinja=view.chat_template, metadata=view.metadata, model=view.name)


def stop_words(view: ModelView, source: TemplateSource) -> list[str]:
    """Stop words of the model's built-in format, when that is what renders."""
    if source.kind != "builtin":
        return []
    return list(builtin_format(view.metadata).stop)


def chat_prompt(view: ModelView, source: TemplateSource, messages: Sequence[Any], *, tools: Any,
                think: bool | str | None, num_ctx: int, truncate: bool,
                count_tokens: Callable[[str], int]) -> tuple[str, list[Any]]:
    """Render a chat into prompt text and images, dropping old turns that do not fit ``num_ctx``."""
    built = build_chat(source, messages, tools=tools, think=think, system_default=view.system or None,
                       history=view.messages)
    # Tokens never outnumber bytes (+1 for BOS) with byte-level tokenizers: count only when it may not fit.
    if truncate and len(built.text.encode("utf-8")) + 1 > num_ctx:
        built = build_chat(source, messages, tools=tools, think=think, system_default=view.system or None,
                           history=view.messages, num_ctx=num_ctx, count_tokens=count_tokens, truncate=True)
        if built.truncated:
            log.info("chat truncated to fit num_ctx model=%s dropped_messages=%d num_ctx=%d",
                     view.name, built.truncated, num_ctx)
    return built.text, list(built.images)


def generate_prompt(view: ModelView, source: TemplateSource, body: Mapping[str, Any],
                    think: bool | str | None, context_text: str | None) -> str:
    return render_generate(
        source, body.get("prompt") or "", system=body.get("system") or None, template=body.get("template"),
        suffix=body.get("suffix") or None, raw=bool(body.get("raw")), images=body.get("images") or (),
        think=think, system_default=view.system or None, history=view.messages, context=context_text)


def parser_for(source: TemplateSource, prompt: str, tools: Any, think: bool | str | None) -> OutputParser:
    return output_parser(source, prompt=prompt, tools=tools, think=think)


def speaks_in_channels(source: TemplateSource) -> bool:
    """Whether the model writes its answers in channels (gpt-oss): its output is always parsed."""
    family = family_of(source.jinja) if source.kind == "jinja" else None
    return family is not None and family.channels is not None


def thinking_first(grammar: str | None, parser: OutputParser | None) -> str | None:
    """A thinking model thinks freely and the grammar constrains its answer, as in Ollama.

    Without a thinking parser (think false, or a model that does not think) the grammar
    applies from the first token.
    """
    thinking = parser.thinking if parser is not None else None
    if not grammar or thinking is None:
        return grammar
    return after_thinking(grammar, thinking.open_tag, thinking.close_tag,
                          in_thinking=thinking.start_in_thinking) or grammar


def grammar_for(fmt: Any) -> str | None:
    """GBNF for a request's ``format``: ``"json"``, a JSON schema (checked and bounded), or nothing."""
    if fmt is None or fmt == "" or fmt == {}:
        return None
    if isinstance(fmt, str):
        if fmt == "json":
            return JSON_GRAMMAR
        raise InvalidRequest(f"invalid format {fmt[:40]!r}: use \"json\" or a JSON schema")
    if not isinstance(fmt, Mapping):
        raise InvalidRequest("format must be \"json\" or a JSON schema object")
    return schema_to_grammar(fmt, "JSON schema in format")


def request_grammar(fmt: Any, options: Any) -> tuple[str | None, Any]:
    """The grammar a request asks for and its options without ``grammar``.

    ``options.grammar`` is a user-supplied GBNF grammar (an a3s-power extension;
    Ollama has none): bounded here, parsed by llama.cpp when generation starts (a
    parse failure is a 400). It cannot be combined with ``format``.
    """
    if not isinstance(options, Mapping) or "grammar" not in options:
        return grammar_for(fmt), options
    rest = {k: v for k, v in options.items() if k != "grammar"}
    if options["grammar"] in (None, ""):
        return grammar_for(fmt), rest
    if fmt not in (None, "", {}):
        raise InvalidRequest("use either format or options.grammar, not both")
    return check_gbnf(options["grammar"]), rest


def tool_plan(source: TemplateSource, tools: Any, tool_choice: Any) -> ToolPlan:
    """``tool_choice`` applied to the request's tools; forced calls use the model's own syntax."""
    go = source.go if source.kind == "go" else None
    jinja = source.jinja if source.kind == "jinja" else None
    if source.kind == "builtin" and tools:
        go = source.go_template().source
    return plan_tools(tools, tool_choice, tool_call_tag(go, jinja) if tools else None, family_of(jinja))


def check_images(view: ModelView, images: Iterable[Any]) -> list[bytes]:
    """Decode request images: 400 when the model has no vision, or an image is not base64, not an image
    of a format we take, or too large to decode."""
    images = list(images)
    if not images:
        return []
    if "vision" not in view.capabilities:
        raise InvalidRequest(f'"{view.name}" does not support vision')
    return decode_images(images)
