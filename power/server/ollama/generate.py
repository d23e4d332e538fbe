"""``/api/generate`` and ``/api/chat``: prompts in, NDJSON chunks (or one object) out."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import falcon

from power.api import now_utc
from power.engine.options import INT32_MAX
from power.errors import InvalidRequest
from power.runner.keepalive import parse_keep_alive
from power.server.body import model_field, read_json
from power.server.inference import (
    Generation,
    Job,
    Piece,
    Services,
    check_keep_alive,
    lookup,
    merged_options,
    require_capability,
    resolve_think,
)
from power.server.ports import ModelView
from power.server.prompting import (
    chat_prompt,
    check_images,
    generate_prompt,
    parser_for,
    request_grammar,
    source_of,
    speaks_in_channels,
    stop_words,
    thinking_first,
    tool_plan,
)
from power.server.streaming import send_json, send_ndjson

__all__ = ["ChatResource", "GenerateResource", "final_fields"]

log = logging.getLogger(__name__)

# draft_count, draft_accepted: speculative decoding's drafted tokens and those accepted (debug fields of ours)
_METRICS = ("load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration",
            "draft_count", "draft_accepted")


def final_fields(final: dict[str, Any], total_ns: int) -> dict[str, Any]:
    """The final chunk's done_reason and metrics; zero-valued metrics are omitted as Ollama does."""
    out: dict[str, Any] = {"done_reason": final.get("done_reason") or "stop", "total_duration": total_ns}
    for key in _METRICS:
        value = final.get(key)
        if value:
            out[key] = int(value)
    return out


def load_line(name: str, completed: int, total: int, empty: dict[str, Any]) -> dict[str, Any]:
    """A progress line of the model's load: ``empty`` is the endpoint's empty answer, so clients parse it."""
    return {"model": name, "created_at": now_utc(), **empty, "done": False, "status": "loading model",
            "completed": int(completed), "total": int(total)}


def _load_progress(body: dict[str, Any]) -> bool:
    """Progress lines are opt-in (``load_progress: true``), and only on a stream."""
    return bool(body.get("load_progress")) and body.get("stream", True) is not False


def _options_opt_in(body: dict[str, Any]) -> None:
    """Take ``load_progress`` from ``options`` too (where any Ollama client can put it); the top level wins."""
    options = body.get("options")
    if isinstance(options, dict) and "load_progress" in options:
        options = dict(options)
        flag = options.pop("load_progress")
        if not isinstance(flag, bool):
            raise InvalidRequest("options.load_progress must be true or false")
        body["options"] = options
        body.setdefault("load_progress", flag)


def _logprobs(body: dict[str, Any]) -> int:
    if not body.get("logprobs"):
        return -1
    return int(body.get("top_logprobs") or 0)


def _load_or_unload(services: Services, view: ModelView, body: dict[str, Any], resp: falcon.Response,
                    extra: dict[str, Any]) -> None:
    keep_alive = body.get("keep_alive")
    if keep_alive is not None and parse_keep_alive(keep_alive) == 0:
        services.scheduler.unload(view.name)
        reason = "unload"
    elif _load_progress(body):  # the load's progress lines, then the answer as a last line
        events = services.scheduler.load_progress(view.name, merged_options(view, body.get("options"), []),
                                                  keep_alive)
        first = next(events, None)  # an error before any progress keeps its status

        def lines() -> Iterator[dict[str, Any]]:
            for completed, total in itertools.chain([first] if first else [], events):
                yield load_line(view.name, completed, total, extra)
            yield {"model": view.name, "created_at": now_utc(), **extra, "done": True, "done_reason": "load"}

        send_ndjson(resp, lines())
        return
    else:
        services.scheduler.load(view.name, merged_options(view, body.get("options"), []), keep_alive)
        reason = "load"
    send_json(resp, {"model": view.name, "created_at": now_utc(), **extra, "done": True, "done_reason": reason})


class _Base:
    schema = ""
    endpoint = ""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _begin(self, req: falcon.Request) -> tuple[dict[str, Any], ModelView]:
        body = read_json(req, self.schema)
        _options_opt_in(body)
        name = model_field(body)
        req.context.model = name
        check_keep_alive(body.get("keep_alive"))
        return body, lookup(self.services, name)

    def _respond(self, resp: falcon.Response, body: dict[str, Any], gen: Generation,
                 render: Any, whole: Any) -> None:
        if body.get("stream", True):
            send_ndjson(resp, render(gen), close=gen.close)
            return
        try:
            send_json(resp, whole(gen))
        finally:
            gen.close()


class GenerateResource(_Base):
    schema = "GenerateRequest"
    endpoint = "/api/generate"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body, view = self._begin(req)
        if not body.get("prompt") and not body.get("images") and not body.get("suffix"):
            _load_or_unload(self.services, view, body, resp, {"response": ""})
            return
        require_capability(view, "completion", "generate")
        if body.get("suffix"):
            require_capability(view, "insert")
        images = check_images(view, body.get("images") or ())
        grammar, request_options = request_grammar(body.get("format"), body.get("options"))
        raw = bool(body.get("raw"))
        think = resolve_think(view, body.get("think"))
        source = source_of(view)
        context_text = None
        if body.get("context") and not raw:
            # ids past int32 never reach the runner; those past the vocabulary it refuses itself
            if not isinstance(body["context"], list) or not all(
                    type(t) is int and 0 <= t <= INT32_MAX for t in body["context"]):
                raise InvalidRequest(f"context must be a list of token ids from 0 to {INT32_MAX}")
            context_text = self.services.scheduler.detokenize(view.name, body["context"])
        prompt = generate_prompt(view, source, body, think, context_text)
        if body.get("_debug_render_only"):
            send_json(resp, {"model": view.name, "created_at": now_utc(), "response": "", "done": True,
                             "_debug_info": {"rendered_template": prompt}})
            return
        options = merged_options(view, request_options, stop_words(view, source))
        parse = think or (speaks_in_channels(source) and not raw)  # gpt-oss's channels are never content
        parser = parser_for(source, prompt, None, think) if parse else None
        job = Job(self.endpoint, view, prompt, options, body.get("keep_alive"), parser,
                  grammar=thinking_first(grammar, parser), logprobs=_logprobs(body), raw=raw,
                  truncate=body.get("truncate", True), rid=req.context.rid, context=not raw, images=images,
                  load_progress=_load_progress(body))
        gen = Generation(self.services, job)
        want_context = not raw
        self._respond(resp, body, gen, lambda g: self._chunks(g, want_context),
                      lambda g: self._whole(g, want_context))

    def _final(self, gen: Generation, piece: Piece, want_context: bool, outputs: list[int]) -> dict[str, Any]:
        assert piece.final is not None
        out: dict[str, Any] = {"done": True, **final_fields(piece.final, gen.total_ns)}
        if want_context:
            out["context"] = list(piece.final.get("prompt_tokens") or ()) + outputs
        return out

    def _chunks(self, gen: Generation, want_context: bool) -> Iterator[dict[str, Any]]:
        name = gen.job.view.name
        outputs: list[int] = []
        for piece in gen:
            if piece.load is not None:
                yield load_line(name, piece.load["completed"], piece.load["total"], {"response": ""})
                continue
            outputs += piece.tokens
            d = piece.delta
            if d.content or d.thinking or piece.logprobs:
                chunk: dict[str, Any] = {"model": name, "created_at": now_utc(), "response": d.content}
                if d.thinking:
                    chunk["thinking"] = d.thinking
                if piece.logprobs:
                    chunk["logprobs"] = piece.logprobs
                chunk["done"] = False
                yield chunk
            if piece.final is not None:
                yield {"model": name, "created_at": now_utc(), "response": "",
                       **self._final(gen, piece, want_context, outputs)}

    def _whole(self, gen: Generation, want_context: bool) -> dict[str, Any]:
        text, thinking, logprobs, outputs = [], [], [], []
        last: Piece | None = None
        for piece in gen:
            text.append(piece.delta.content)
            thinking.append(piece.delta.thinking)
            logprobs += piece.logprobs
            outputs += piece.tokens
            last = piece
        assert last is not None
        out: dict[str, Any] = {"model": gen.job.view.name, "created_at": now_utc(), "response": "".join(text)}
        if any(thinking):
            out["thinking"] = "".join(thinking)
        if logprobs:
            out["logprobs"] = logprobs
        out.update(self._final(gen, last, want_context, outputs))
        return out


class ChatResource(_Base):
    schema = "ChatRequest"
    endpoint = "/api/chat"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, self.schema)
        _options_opt_in(body)
        if not body.get("model"):
            raise InvalidRequest("model is required")
        req.context.model = body["model"]
        check_keep_alive(body.get("keep_alive"))
        view = lookup(self.services, body["model"])
        messages = body.get("messages") or []
        if not messages:
            _load_or_unload(self.services, view, body, resp, {"message": {"role": "assistant", "content": ""}})
            return
        require_capability(view, "completion", "chat")
        tools = body.get("tools") or None
        if tools:
            require_capability(view, "tools")
        check_images(view, [image for m in messages for image in m.get("images") or ()])
        think = resolve_think(view, body.get("think"))
        source = source_of(view)
        plan = tool_plan(source, tools, body.get("tool_choice"))
        grammar, request_options = request_grammar(body.get("format"), body.get("options"))
        tools = plan.tools
        options = merged_options(view, request_options, stop_words(view, source))
        num_ctx = int(options.get("num_ctx") or self.services.settings.context_length)
        prompt, images = chat_prompt(
            view, source, messages, tools=tools, think=think, num_ctx=num_ctx,
            truncate=body.get("truncate", True),
            count_tokens=lambda text: len(self.services.scheduler.tokenize(view.name, text)))
        if body.get("_debug_render_only"):
            send_json(resp, {"model": view.name, "created_at": now_utc(),
                             "message": {"role": "assistant", "content": ""}, "done": True,
                             "_debug_info": {"rendered_template": prompt}})
            return
        parser = parser_for(source, prompt, tools, think)
        job = Job(self.endpoint, view, prompt, options, body.get("keep_alive"), parser,
                  grammar=thinking_first(plan.grammar or grammar, parser),
                  logprobs=_logprobs(body), truncate=body.get("truncate", True), rid=req.context.rid,
                  images=check_images(view, images), load_progress=_load_progress(body))
        gen = Generation(self.services, job)
        self._respond(resp, body, gen, self._chunks, self._whole)

    @staticmethod
    def _message(content: str, thinking: str = "", tool_calls: Any = ()) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            msg["thinking"] = thinking
        if tool_calls:
            msg["tool_calls"] = [c.to_ollama() for c in tool_calls]
        return msg

    def _chunks(self, gen: Generation) -> Iterator[dict[str, Any]]:
        name = gen.job.view.name
        for piece in gen:
            if piece.load is not None:
                yield load_line(name, piece.load["completed"], piece.load["total"], {"message": self._message("")})
                continue
            d = piece.delta
            if d.content or d.thinking or d.tool_calls or piece.logprobs:
                chunk: dict[str, Any] = {"model": name, "created_at": now_utc(),
                                         "message": self._message(d.content, d.thinking, d.tool_calls),
                                         "done": False}
                if piece.logprobs:
                    chunk["logprobs"] = piece.logprobs
                yield chunk
            if piece.final is not None:
                yield {"model": name, "created_at": now_utc(), "message": self._message(""), "done": True,
                       **final_fields(piece.final, gen.total_ns)}

    def _whole(self, gen: Generation) -> dict[str, Any]:
        text: list[str] = []
        thinking: list[str] = []
        calls: list[Any] = []
        logprobs: list[Any] = []
        last: Piece | None = None
        for piece in gen:
            text.append(piece.delta.content)
            thinking.append(piece.delta.thinking)
            calls += piece.delta.tool_calls
            logprobs += piece.logprobs
            last = piece
        assert last is not None and last.final is not None
        out: dict[str, Any] = {"model": gen.job.view.name, "created_at": now_utc(),
                               "message": self._message("".join(text), "".join(thinking), calls)}
        if logprobs:
            out["logprobs"] = logprobs
        out.update({"done": True, **final_fields(last.final, gen.total_ns)})
        return out
