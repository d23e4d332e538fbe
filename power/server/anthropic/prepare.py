"""From an Anthropic request to the prompt the model sees: shared by ``/v1/messages`` and its ``count_tokens``.

Both routes render the prompt with the same function, so the count that
``count_tokens`` reports is the very prompt a message request then evaluates:
text prompts are counted by the model's tokenizer; a prompt with images by
evaluating it (the projector decides how many tokens an image takes), which
also leaves it in the KV cache for the request that follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from power.prompt import TemplateSource
from power.server.anthropic.convert import (
    native_messages,
    native_tool_choice,
    native_tools,
    output_schema,
    sampling_options,
    thinking_of,
)
from power.server.inference import (
    Generation,
    Job,
    Services,
    lookup,
    merged_options,
    require_capability,
    resolve_think,
)
from power.server.ports import ModelView
from power.server.prompting import chat_prompt, check_images, grammar_for, source_of, stop_words, tool_plan

__all__ = ["Prepared", "prepare", "count_tokens"]


@dataclass(frozen=True)
class Prepared:
    """A request's model, rendered prompt, images, tools and thinking, ready to generate."""

    view: ModelView
    source: TemplateSource
    prompt: str
    images: list[bytes]
    tools: list[dict[str, Any]] | None  # what the prompt shows and the parser looks for (tool_choice applied)
    grammar: str | None  # what the answer must follow: a forced tool call, or output_config.format's schema
    think: bool | str | None
    budget: int | None  # thinking tokens allowed; None: unbounded
    options: dict[str, Any]


def prepare(services: Services, body: Mapping[str, Any]) -> Prepared:
    """Check and translate a validated body; 404 for an unknown model, 400 for anything malformed."""
    view = lookup(services, body["model"])
    require_capability(view, "completion", "chat")
    tools = native_tools(body.get("tools"))
    if tools:
        require_capability(view, "tools")
    messages = native_messages(body.get("system"), body["messages"])
    check_images(view, [image for m in messages for image in m.get("images") or ()])
    think, budget = thinking_of(body)
    if "thinking" in view.capabilities:
        think = resolve_think(view, think)
    else:  # agents ask every model to think (Ollama relaxes this too): one that cannot just answers
        think, budget = None, None
    source = source_of(view)
    plan = tool_plan(source, tools, native_tool_choice(body.get("tool_choice")))
    options = merged_options(view, sampling_options(body), stop_words(view, source))
    num_ctx = int(options.get("num_ctx") or services.settings.context_length)
    prompt, images = chat_prompt(view, source, messages, tools=plan.tools, think=think, num_ctx=num_ctx,
                                 truncate=True,
                                 count_tokens=lambda text: len(services.scheduler.tokenize(view.name, text)))
    grammar = plan.grammar or grammar_for(output_schema(body))
    return Prepared(view, source, prompt, check_images(view, images), plan.tools, grammar, think,
                    budget if think else None, options)


def count_tokens(services: Services, prep: Prepared, rid: str = "") -> int:
    """The prompt's tokens, as the engine will count them (``prompt_eval_count``)."""
    if not prep.images:
        return len(services.scheduler.tokenize(prep.view.name, prep.prompt))
    job = Job("/v1/messages/count_tokens", prep.view, prep.prompt, {**prep.options, "num_predict": 1}, None, None,
              rid=rid, images=prep.images)
    gen = Generation(replace(services, usage=None), job)  # a count is not a use
    try:
        final: dict[str, Any] = {}
        for piece in gen:
            final = piece.final or final
    finally:
        gen.close()
    return int(final.get("prompt_eval_count") or 0)
