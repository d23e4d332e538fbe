"""Run one generation for any endpoint: options, checks, the scheduler call, parsing, metrics and usage.

Native and OpenAI handlers both build a ``Job`` and iterate a ``Generation``.
The first chunk is pulled when the generation starts, so every error the
scheduler raises (model missing, busy, load failed) happens before the response
begins and keeps its real status; later errors become an error line or event.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

from power.config import Settings
from power.engine.options import parse_options
from power.errors import InvalidRequest, ModelNotFound
from power.names import parse_name
from power.prompt import Delta, OutputParser
from power.runner.keepalive import parse_keep_alive
from power.server.disconnect import current_client, watcher
from power.server.metrics import Metrics
from power.server.ports import ModelStore, ModelView, Scheduler
from power.server.usage import UsageRecord, UsageStore

__all__ = ["Services", "Job", "Piece", "Generation", "interleave", "lookup", "merged_options", "check_keep_alive",
           "require_capability", "resolve_think"]

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The collaborators every resource shares."""

    settings: Settings
    store: ModelStore
    scheduler: Scheduler
    metrics: Metrics
    usage: UsageStore | None
    started: float = field(default_factory=time.time)


def lookup(services: Services, name: str) -> ModelView:
    """The stored model for a request's name: 400 for a bad name, 404 ``model 'x' not found``."""
    parse_name(name)
    try:
        return services.store.model(name)
    except ModelNotFound as exc:
        raise ModelNotFound(name, f"model '{name}' not found") from exc


def require_capability(view: ModelView, capability: str, what: str | None = None) -> None:
    if capability not in view.capabilities:
        raise InvalidRequest(f'"{view.name}" does not support {what or capability}')


def resolve_think(view: ModelView, think: bool | str | None) -> bool | str | None:
    """Thinking is on by default for thinking models; asking a non-thinking model to think is a 400."""
    if "thinking" in view.capabilities:
        return True if think is None else think
    if think not in (None, False):
        raise InvalidRequest(f'"{view.name}" does not support thinking')
    return None


def check_keep_alive(value: Any) -> Any:
    """Refuse a malformed keep_alive before anything starts; the scheduler applies it."""
    parse_keep_alive(value)
    return value


def merged_options(view: ModelView, request_options: Mapping[str, Any] | None,
                   extra_stop: list[str]) -> dict[str, Any]:
    """Modelfile parameters overlaid by the request's options, type-checked; format stops as fallback."""
    options = parse_options(dict(view.parameters))
    options.update(parse_options(request_options))
    if not options.get("stop") and extra_stop:
        options["stop"] = list(extra_stop)
    return options


@dataclass
class Job:
    """Everything a generation needs, decided by the handler."""

    endpoint: str
    view: ModelView
    prompt: str
    options: dict[str, Any]
    keep_alive: Any
    parser: OutputParser | None
    grammar: str | None = None
    logprobs: int = -1
    raw: bool = False
    truncate: bool = True
    rid: str = ""
    context: bool = False  # ask for the prompt's tokens in the final chunk (generate's ``context``)
    images: list[bytes] = field(default_factory=list)  # placed by the prompt's [img-N] tags
    load_progress: bool = False  # stream the progress of a load this generation waits for


@dataclass
class Piece:
    """One step of parsed output; ``final`` is the last chunk's counts when the generation ended.

    A piece with ``load`` (``{"completed", "total"}``, no output) reports the model's load, before any output.
    """

    delta: Delta
    logprobs: list[Any]
    tokens: list[int]
    final: dict[str, Any] | None = None
    load: dict[str, int] | None = None


class Generation:
    """An iterator of ``Piece`` over one scheduler stream, with metrics and usage recorded at the end.

    ``index`` > 0: another choice of the prompt of choice 0 (OpenAI's ``n``), which counts the prompt.
    """

    def __init__(self, services: Services, job: Job, stream: Any = None, index: int = 0) -> None:
        self.services = services
        self.job = job
        self.index = index
        self.start = time.monotonic()
        self.ttft: float | None = None
        self.output_tokens = 0
        self._recorded = False
        services.metrics.started()
        try:
            self.stream = stream if stream is not None else _start(services, job, 1)[0]
            self.first: dict[str, Any] | None = next(iter(self.stream))
        except StopIteration:
            self.first = None
        except BaseException:
            services.metrics.finished()
            self._recorded = True
            raise

    @classmethod
    def choices(cls, services: Services, job: Job, n: int,
                parser: Callable[[], OutputParser | None] | None = None) -> list[Generation]:
        """``n`` generations of ``job``'s prompt (OpenAI's ``n``), which the runner evaluates once; choices
        past the first parse their output with a ``parser()`` of their own."""
        if n == 1:
            return [cls(services, job)]
        streams = _start(services, job, n)  # the scheduler refuses an n the model cannot run at once
        gens: list[Generation] = []
        try:
            for i, stream in enumerate(streams):
                gens.append(cls(services, replace(job, parser=parser()) if i and parser else job, stream, i))
        except BaseException:
            for stream in streams:
                stream.close()
            for gen in gens:
                gen.close()
            raise
        return gens

    @property
    def ready(self) -> bool:
        """Whether the next piece comes without waiting for the runner."""
        return self.first is not None or self.stream.ready

    def __iter__(self) -> Iterator[Piece]:
        chunk = self.first
        self.first = None
        it = iter(self.stream)
        parser = self.job.parser
        while chunk is not None:
            if "load" in chunk:
                yield Piece(Delta(), [], [], load=dict(chunk["load"]))
                chunk = next(it, None)
                continue
            text = chunk.get("text") or ""
            if text and self.ttft is None:
                self.ttft = time.monotonic() - self.start
            tokens = list(chunk.get("tokens") or ())
            self.output_tokens += len(tokens)
            delta = parser.feed(text) if parser is not None else Delta(text)
            if chunk.get("done"):
                if parser is not None:
                    delta = delta + parser.finish()
                self._record(chunk)
                yield Piece(delta, list(chunk.get("logprobs") or ()), tokens, final=chunk)
                return
            yield Piece(delta, list(chunk.get("logprobs") or ()), tokens)
            chunk = next(it, None)
        # A stream that ended without a final chunk: finish what is held back.
        final = {"done": True, "done_reason": "stop"}
        self._record(final)
        yield Piece(parser.finish() if parser is not None else Delta(), [], [], final=final)

    def close(self) -> None:
        """Stop the generation (client gone); safe to call more than once."""
        close = getattr(self.stream, "close", None)
        if callable(close):
            close()
        if not self._recorded:
            self._recorded = True
            self.services.metrics.finished()

    @property
    def total_ns(self) -> int:
        return int((time.monotonic() - self.start) * 1e9)

    def _record(self, final: dict[str, Any]) -> None:
        if self._recorded:
            return
        self._recorded = True
        if self.index:  # the prompt was evaluated, and is counted, once: with choice 0
            final = {**final, "prompt_eval_count": 0, "cached_tokens": 0, "prompt_eval_duration": 0}
        m = self.services.metrics
        m.finished()
        e2e = time.monotonic() - self.start
        model = self.job.view.name
        m.generation(model, final, ttft=self.ttft, e2e=e2e, output_tokens=self.output_tokens)
        prompt_n = int(final.get("prompt_eval_count") or 0)
        eval_n = int(final.get("eval_count") or self.output_tokens)
        # prompt_ms: from the request's sequence being given to it to its first token (ttft_ms less it: the
        # wait for a sequence, and the way there); cached_tokens: of prompt_tokens, those it did not evaluate.
        log.info("generation rid=%s model=%s endpoint=%s prompt_tokens=%d cached_tokens=%d tokens=%d ttft_ms=%.1f "
                 "prompt_ms=%.1f tok_s=%.1f done_reason=%s", self.job.rid, model, self.job.endpoint, prompt_n,
                 int(final.get("cached_tokens") or 0), eval_n, (self.ttft or 0) * 1000,
                 int(final.get("prompt_eval_duration") or 0) / 1e6,
                 eval_n / ((final.get("eval_duration") or 0) / 1e9 or e2e or 1), final.get("done_reason"))
        if self.services.usage is not None:
            self.services.usage.record(UsageRecord(
                endpoint=self.job.endpoint, model=model, prompt_tokens=prompt_n, completion_tokens=eval_n,
                total_duration_ns=int(e2e * 1e9), load_duration_ns=int(final.get("load_duration") or 0),
                prompt_eval_duration_ns=int(final.get("prompt_eval_duration") or 0),
                eval_duration_ns=int(final.get("eval_duration") or 0), request_id=self.job.rid,
                cached_tokens=int(final.get("cached_tokens") or 0)))


def _start(services: Services, job: Job, n: int) -> list[Any]:
    """Ask the scheduler for ``n`` streams of ``job``'s prompt; a client that leaves while they wait for a
    sequence cancels them."""
    extra: dict[str, Any] = {}
    if job.context:
        extra["context"] = True
    if job.images:
        extra["images"] = job.images
    if job.load_progress:
        extra["load_progress"] = True
    client = current_client()
    stop_watch: list[Callable[[], None]] = []
    if client is not None:
        extra["on_start"] = lambda stream: stop_watch.append(watcher().watch(client, stream.close))
    sched = services.scheduler
    try:
        kwargs: dict[str, Any] = dict(options=job.options, keep_alive=job.keep_alive, grammar=job.grammar,
                                      logprobs=job.logprobs, add_special=not job.raw, truncate=job.truncate,
                                      **extra)
        if n == 1:
            return [sched.generate(job.view.name, job.prompt, **kwargs)]
        return list(sched.generate_choices(job.view.name, job.prompt, n, **kwargs))
    finally:
        for stop in stop_watch:  # running now (or failed): a failed write tells from here on
            stop()


def interleave(gens: list[Generation]) -> Iterator[tuple[int, Piece]]:
    """The pieces of several generations, each as soon as it comes, with its generation's index."""
    if len(gens) == 1:
        for piece in gens[0]:
            yield 0, piece
        return
    arrived: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i, gen in enumerate(gens):
        gen.stream.wake = lambda i=i: arrived.put(i)
        arrived.put(i)  # whatever came before the hook
    live = {i: iter(gen) for i, gen in enumerate(gens)}
    while live:
        i = arrived.get()
        while i in live and gens[i].ready:
            piece = next(live[i], None)
            if piece is None or piece.final is not None:
                del live[i]
            if piece is not None:
                yield i, piece
