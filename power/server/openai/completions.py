"""OpenAI's generation routes: ``/v1/chat/completions`` and ``/v1/completions``.

Requests are translated to the native generation (OpenAI's defaults of
temperature and top_p 1.0 override the Modelfile, as Ollama does) and answers
translated back, streaming as SSE with ``data: [DONE]`` at the end.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import falcon

from power.server.body import read_json
from power.server.inference import (
    Generation,
    Job,
    Services,
    interleave,
    lookup,
    merged_options,
    require_capability,
    resolve_think,
)
from power.server.openai.messages import effort_of, native_messages, response_format
from power.server.prompting import (
    chat_prompt,
    check_images,
    generate_prompt,
    grammar_for,
    parser_for,
    source_of,
    stop_words,
    thinking_first,
    tool_plan,
)
from power.server.streaming import send_json, send_sse

__all__ = ["ChatCompletionsResource", "CompletionsResource"]


def _options(body: dict[str, Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"),
                     ("frequency_penalty", "frequency_penalty"), ("presence_penalty", "presence_penalty"),
                     ("max_tokens", "num_predict")):
        if body.get(src) is not None:
            opts[dst] = body[src]
    if body.get("max_completion_tokens") is not None and "num_predict" not in opts:
        opts["num_predict"] = body["max_completion_tokens"]
    stop = body.get("stop")
    if stop:
        opts["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return opts


def _choices(body: dict[str, Any]) -> int:
    """``n``, how many choices to generate (the schema has checked it is an integer of at least 1)."""
    n = body.get("n")
    return 1 if n is None else int(n)


def _usage(finals: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """OpenAI's usage: the whole prompt once (choice 0's, with the part reused from the KV cache in
    ``cached_tokens``: the other choices reuse all of it) and the completion tokens of every choice."""
    first = finals[0] or {}
    p = int(first.get("prompt_eval_count") or 0)
    c = sum(int((final or {}).get("eval_count") or 0) for final in finals)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": min(int(first.get("cached_tokens") or 0), p)}}


def _close(gens: Sequence[Generation]) -> None:
    for gen in gens:
        gen.close()


def _finish(final: dict[str, Any] | None, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if (final or {}).get("done_reason") == "length" else "stop"


def _logprobs_legacy(items: list[Any], offset: int = 0) -> dict[str, Any] | None:
    """Completions' logprobs: parallel lists of tokens, their logprobs, top alternatives and offsets."""
    if not items:
        return None
    offsets, at = [], offset
    for i in items:
        offsets.append(at)
        at += len(i.get("token") or "")
    return {"tokens": [i.get("token") for i in items], "token_logprobs": [i.get("logprob") for i in items],
            "top_logprobs": [{t.get("token"): t.get("logprob") for t in i.get("top_logprobs") or ()}
                             for i in items],
            "text_offset": offsets}


def _logprobs_openai(items: list[Any]) -> dict[str, Any]:
    return {"content": [{"token": i.get("token"), "logprob": i.get("logprob"), "bytes": i.get("bytes"),
                         "top_logprobs": i.get("top_logprobs") or []} for i in items]}


class ChatCompletionsResource:
    def __init__(self, services: Services) -> None:
        self.services = services

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "ChatCompletionRequest")
        req.context.model = body["model"]
        view = lookup(self.services, body["model"])
        require_capability(view, "completion", "chat")
        tools = body.get("tools") or None
        if tools:
            require_capability(view, "tools")
        messages = native_messages(body["messages"])
        check_images(view, [image for m in messages for image in m.get("images") or ()])
        think = resolve_think(view, effort_of(body))
        source = source_of(view)
        plan = tool_plan(source, tools, body.get("tool_choice"))
        tools = plan.tools
        grammar = plan.grammar or grammar_for(response_format(body))
        options = merged_options(view, _options(body), stop_words(view, source))
        num_ctx = int(options.get("num_ctx") or self.services.settings.context_length)
        prompt, images = chat_prompt(view, source, messages, tools=tools, think=think,
                                num_ctx=num_ctx, truncate=True,
                                count_tokens=lambda t: len(self.services.scheduler.tokenize(view.name, t)))
        top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else -1
        parser = parser_for(source, prompt, tools, think)
        job = Job("/v1/chat/completions", view, prompt, options, None, parser,
                  grammar=thinking_first(grammar, parser), logprobs=top, rid=req.context.rid, images=check_images(view, images))
        gens = Generation.choices(self.services, job, _choices(body),  # each choice parses its own output
                                  parser=lambda: parser_for(source, prompt, tools, think))
        ident = f"chatcmpl-{random.randint(0, 998)}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            send_sse(resp, self._chunks(gens, ident, created, include_usage), close=lambda: _close(gens))
            return
        try:
            send_json(resp, self._whole(gens, ident, created))
        finally:
            _close(gens)

    @staticmethod
    def _chunk(gen: Generation, ident: str, created: int, delta: dict[str, Any], finish: str | None = None,
               logprobs: Any = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": gen.index, "delta": delta, "finish_reason": finish}
        if logprobs:
            choice["logprobs"] = _logprobs_openai(logprobs)
        return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": gen.job.view.name,
                "system_fingerprint": "fp_ollama", "choices": [choice]}

    def _chunks(self, gens: list[Generation], ident: str, created: int,
                include_usage: bool) -> Iterator[dict[str, Any]]:
        """The choices' chunks as they come, each choice with its role first and its own finish chunk."""
        first = [True] * len(gens)
        called = [False] * len(gens)
        finals: list[dict[str, Any] | None] = [None] * len(gens)
        for i, piece in interleave(gens):
            gen, d = gens[i], piece.delta
            deltas: list[dict[str, Any]] = []
            if d.thinking:  # a step with both thinking and content goes out as two chunks
                deltas.append({"reasoning": d.thinking})
            if d.content:
                deltas.append({"content": d.content})
            if d.tool_calls:
                called[i] = True
                deltas.append({"tool_calls": [c.to_openai() for c in d.tool_calls]})
            for delta in deltas:
                if first[i]:
                    delta = {"role": "assistant", **delta}
                    first[i] = False
                yield self._chunk(gen, ident, created, delta, logprobs=piece.logprobs)
            if piece.final is not None:
                finals[i] = piece.final
                if first[i]:
                    yield self._chunk(gen, ident, created, {"role": "assistant", "content": ""})
                yield self._chunk(gen, ident, created, {}, _finish(piece.final, called[i]))
        if include_usage:
            yield {"id": ident, "object": "chat.completion.chunk", "created": created,
                   "model": gens[0].job.view.name, "system_fingerprint": "fp_ollama", "choices": [],
                   "usage": _usage(finals)}

    @staticmethod
    def _whole(gens: list[Generation], ident: str, created: int) -> dict[str, Any]:
        choices, finals = [], []
        for gen in gens:
            text: list[str] = []
            thinking: list[str] = []
            calls: list[Any] = []
            logprobs: list[Any] = []
            final = None
            for piece in gen:
                text.append(piece.delta.content)
                thinking.append(piece.delta.thinking)
                calls += piece.delta.tool_calls
                logprobs += piece.logprobs
                final = piece.final or final
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
            if any(thinking):
                message["reasoning"] = "".join(thinking)
            if calls:
                message["tool_calls"] = [c.to_openai() for c in calls]
            choice: dict[str, Any] = {"index": gen.index, "message": message,
                                      "finish_reason": _finish(final, bool(calls))}
            if logprobs:
                choice["logprobs"] = _logprobs_openai(logprobs)
            choices.append(choice)
            finals.append(final)
        return {"id": ident, "object": "chat.completion", "created": created, "model": gens[0].job.view.name,
                "system_fingerprint": "fp_ollama", "choices": choices, "usage": _usage(finals)}


class CompletionsResource:
    def __init__(self, services: Services) -> None:
        self.services = services

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "CompletionRequest")
        req.context.model = body["model"]
        view = lookup(self.services, body["model"])
        require_capability(view, "completion", "generate")
        if body.get("suffix"):
            require_capability(view, "insert")
        source = source_of(view)
        prompt = generate_prompt(view, source, {"prompt": body["prompt"], "suffix": body.get("suffix"),
                                                "raw": False}, None, None)
        options = merged_options(view, _options(body), stop_words(view, source))
        top = int(body["logprobs"]) if body.get("logprobs") is not None else -1
        job = Job("/v1/completions", view, prompt, options, None, None, logprobs=top, rid=req.context.rid)
        gens = Generation.choices(self.services, job, _choices(body))
        ident = f"cmpl-{random.randint(0, 998)}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            send_sse(resp, self._chunks(gens, ident, created, include_usage), close=lambda: _close(gens))
            return
        try:
            choices, finals = [], []
            for gen in gens:
                text, final, logprobs = [], None, []
                for piece in gen:
                    text.append(piece.delta.content)
                    logprobs += piece.logprobs
                    final = piece.final or final
                choices.append({"text": "".join(text), "index": gen.index, "logprobs": _logprobs_legacy(logprobs),
                                "finish_reason": _finish(final, False)})
                finals.append(final)
            send_json(resp, {"id": ident, "object": "text_completion", "created": created, "model": view.name,
                             "system_fingerprint": "fp_ollama", "choices": choices, "usage": _usage(finals)})
        finally:
            _close(gens)

    @staticmethod
    def _chunks(gens: list[Generation], ident: str, created: int, include_usage: bool) -> Iterator[dict[str, Any]]:
        zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

        def chunk(index: int, text: str, finish: str | None, logprobs: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
            out = {"id": ident, "object": "text_completion", "created": created, "model": gens[0].job.view.name,
                   "system_fingerprint": "fp_ollama",
                   "choices": [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}]}
            if include_usage:
                out["usage"] = zero
            return out

        finals: list[dict[str, Any] | None] = [None] * len(gens)
        offsets = [0] * len(gens)
        for i, piece in interleave(gens):
            if piece.delta.content or piece.logprobs:
                yield chunk(i, piece.delta.content, None, _logprobs_legacy(piece.logprobs, offsets[i]))
                offsets[i] += len(piece.delta.content)
            if piece.final is not None:
                finals[i] = piece.final
                yield chunk(i, "", _finish(piece.final, False))
        if include_usage:
            yield {"id": ident, "object": "text_completion", "created": created, "model": gens[0].job.view.name,
                   "system_fingerprint": "fp_ollama", "choices": [], "usage": _usage(finals)}
