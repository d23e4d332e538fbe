"""The one seam between the HTTP handlers and ``power.prompt``: prompts in, parsed output out.

Handlers never touch templates directly: they ask this module for the prompt of
a chat or generate request, the stop words of a model's format, the parser of
its output, and the grammar of a ``format``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Mapping, Sequence

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from power.errors import InvalidRequest
from power.prompt import (
    OutputParser, TemplateSource, build_chat, builtin_format, output_parser, render_generate,
)
from power.server.ports import ModelView

__all__ = ["source_of", "chat_prompt", "generate_prompt", "stop_words", "parser_for", "grammar_for",
           "JSON_GRAMMAR"]

log = logging.getLogger(__name__)

# llama.cpp's grammars/json.gbnf: any JSON object.
JSON_GRAMMAR = r'''
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
'''.strip()


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


def _schema_converter() -> Callable[[Mapping[str, Any]], str] | None:
    """``power.prompt``'s JSON-schema-to-GBNF converter, once it exists."""
    for module, attr in (("power.prompt", "schema_to_grammar"), ("power.prompt.grammar", "schema_to_grammar")):
        try:
            return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return None


def grammar_for(fmt: Any) -> str | None:
    """GBNF for a request's ``format``: ``"json"``, a JSON schema, or nothing."""
    if fmt is None or fmt == "" or fmt == {}:
        return None
    if isinstance(fmt, str):
        if fmt == "json":
            return JSON_GRAMMAR
        raise InvalidRequest(f"invalid format {fmt[:40]!r}: use \"json\" or a JSON schema")
    if not isinstance(fmt, Mapping):
        raise InvalidRequest("format must be \"json\" or a JSON schema object")
    try:
        Draft202012Validator.check_schema(fmt)
    except SchemaError as exc:
        raise InvalidRequest(f"invalid JSON schema in format: {exc.message[:200]}") from None
    convert = _schema_converter()
    if convert is None:
        return JSON_GRAMMAR
    return convert(fmt)
