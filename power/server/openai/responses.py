"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

A thin adapter over the native chat generation: the request's items, flat
tools, ``tool_choice`` and ``text.format`` become native messages, tools and a
format (``response_input``); the generation's pieces become output items and
stream events (``response_output``). Beyond Ollama, which is stateless,
responses are stored by default (``store``) and ``previous_response_id``
continues a stored conversation: the new prompt starts with the old one, so the
runner reuses its KV prefix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import falcon

from power.errors import InvalidRequest, NotFound, PowerError
from power.server.body import read_json
from power.server.inference import (
    Generation,
    Job,
    Services,
    lookup,
    merged_options,
    require_capability,
    resolve_think,
)
from power.server.openai.messages import effort_of, native_messages
from power.server.openai.response_input import chat_messages, input_items, text_format
from power.server.openai.response_output import ResponseBuilder, new_id
from power.server.openai.response_store import ResponseStore
from power.server.openai.response_tools import chat_tool_choice, response_tools
from power.server.prompting import (
    chat_prompt,
    check_images,
    grammar_for,
    parser_for,
    source_of,
    stop_words,
    thinking_first,
    tool_plan,
)
from power.server.streaming import send_json, send_sse

__all__ = ["ResponsesResource", "ResponseResource"]

log = logging.getLogger(__name__)


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """Sampling options: OpenAI's defaults (temperature and top_p 1.0) over the Modelfile's, as chat does."""
    opts: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("max_output_tokens", "num_predict")):
        if body.get(src) is not None:
            opts[dst] = body[src]
    return opts


def _head(body: dict[str, Any], model: str, previous: str | None, store: bool) -> dict[str, Any]:
    """The response object's fields that echo the request."""
    reasoning = body.get("reasoning") or {}
    text = body.get("text") or {}
    return {
        "id": new_id("resp"), "object": "response", "created_at": int(time.time()), "status": "in_progress",
        "background": False, "completed_at": None, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {}, "model": model, "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False, "previous_response_id": previous,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default", "store": store, "temperature": body.get("temperature", 1.0),
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto", "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation") or "disabled", "usage": None,
        "user": body.get("user"),
    }


def _error_message(exc: Exception) -> str:
    if isinstance(exc, PowerError):
        return str(exc)
    log.exception("response stream failed")
    return f"internal error: {type(exc).__name__}"


class ResponsesResource:
    """``POST /v1/responses``."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = ResponseStore.for_settings(services.settings)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "ResponseRequest")
        req.context.model = body["model"]
        for unsupported in ("background", "conversation", "prompt"):
            if body.get(unsupported):
                raise InvalidRequest(f"{unsupported} is not supported")
        view = lookup(self.services, body["model"])
        require_capability(view, "completion", "chat")
        previous = body.get("previous_response_id") or None
        history: list[Any] = []
        if previous is not None:
            stored = self.store.get(previous)
            if stored is None:
                raise NotFound(f"Previous response with id '{previous}' not found.")
            history = stored.conversation
        conversation = history + input_items(body.get("input"))
        if not conversation:
            raise InvalidRequest("input is required")
        messages = native_messages(chat_messages(conversation, body.get("instructions")))
        declared = response_tools(body.get("tools"))
        if declared.chat:
            require_capability(view, "tools")
        choice, tools = chat_tool_choice(body.get("tool_choice"), declared)
        check_images(view, [image for m in messages for image in m.get("images") or ()])
        think = resolve_think(view, effort_of(body))
        source = source_of(view)
        plan = tool_plan(source, tools, choice)
        grammar = plan.grammar or grammar_for(text_format(body.get("text")))
        options = merged_options(view, _options(body), stop_words(view, source))
        num_ctx = int(options.get("num_ctx") or self.services.settings.context_length)
        truncate = body.get("truncation") == "auto"  # OpenAI's default, "disabled", refuses a prompt too long
        prompt, images = chat_prompt(view, source, messages, tools=plan.tools, think=think, num_ctx=num_ctx,
                                     truncate=truncate,
                                     count_tokens=lambda t: len(self.services.scheduler.tokenize(view.name, t)))
        parser = parser_for(source, prompt, plan.tools, think)
        job = Job("/v1/responses", view, prompt, options, None, parser, grammar=thinking_first(grammar, parser),
                  truncate=truncate, rid=req.context.rid, images=check_images(view, images))
        store = body.get("store") is not False
        builder = ResponseBuilder(_head(body, view.name, previous, store), declared)
        gen = Generation(self.services, job)
        keep = (lambda: self.store.put(builder.response, conversation + builder.output)) if store else None
        if body.get("stream"):
            send_sse(resp, self._events(gen, builder, keep), close=gen.close, done=False, named=True)
            return
        try:
            final = None
            for piece in gen:
                builder.feed(piece)
                final = piece.final or final
            builder.finish(final)
        finally:
            gen.close()
        if keep is not None:
            keep()
        send_json(resp, builder.response)

    @staticmethod
    def _events(gen: Generation, builder: ResponseBuilder, keep: Any) -> Iterator[dict[str, Any]]:
        yield from builder.begin()
        try:
            final = None
            for piece in gen:
                yield from builder.feed(piece)
                final = piece.final or final
            done = builder.finish(final)
        except Exception as exc:  # noqa: BLE001 - the status is sent; the stream ends with the error event
            yield from builder.failed(_error_message(exc))
            return
        if keep is not None:
            keep()  # before response.completed: a client may continue from it at once
        yield from done


class ResponseResource:
    """``GET`` and ``DELETE /v1/responses/{response_id}``."""

    def __init__(self, services: Services) -> None:
        self.store = ResponseStore.for_settings(services.settings)

    def on_get(self, req: falcon.Request, resp: falcon.Response, response_id: str) -> None:
        stored = self.store.get(response_id)
        if stored is None:
            raise NotFound(f"Response with id '{response_id}' not found.")
        send_json(resp, stored.response)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, response_id: str) -> None:
        if not self.store.delete(response_id):
            raise NotFound(f"Response with id '{response_id}' not found.")
        send_json(resp, {"id": response_id, "object": "response", "deleted": True})
