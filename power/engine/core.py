"""One loaded model serving many requests with continuous batching.

A single loop thread owns the llama context: it admits waiting requests into
free sequences, calls ``Context.step`` (one batched decode for every active
sequence, sampling in C), and hands each sequence's new text to its request.
Python's work per step is constant per active sequence: decode the bytes C
already made whole, match stop strings, push one chunk.

Context overflow: a prompt longer than the context is truncated, keeping the
first ``num_keep`` tokens and the most recent tail (as Ollama does), so that a
quarter of the context (or ``num_predict`` tokens) is left for the answer;
with ``truncate=False`` it is refused instead. Generation that fills the
sequence's context ends with ``done_reason`` "length".

Failures: a request's own fault (a bad token, a grammar that does not parse)
ends that request and no other. Anything that escapes the loop itself is
fatal to the engine (P12): every request in it ends with an ``EngineError``,
later submits are refused, and ``on_death`` tells the owner (the runner
process exits, so the server starts a fresh one) rather than leave a live
engine that answers nothing.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

from power import native
from power.engine.options import DRAFT_MODEL_PREDICT, INT32_MAX, LoadOptions, RequestOptions, parse_options
from power.engine.rpc import probe as probe_rpc
from power.engine.statefiles import state_folder, state_key
from power.engine.stops import StopMatcher
from power.engine.vocab import Vocab
from power.errors import EngineError, InvalidRequest, NativeError

__all__ = ["Engine", "Request", "Chunk", "TokenLogprob", "EmbedResult", "RankResult"]

log = logging.getLogger(__name__)

_DONE_REASON = {native.FINISH_STOP: "stop", native.FINISH_LENGTH: "length", native.FINISH_CONTEXT: "length",
                native.FINISH_CANCEL: "cancel", native.FINISH_ERROR: "error"}


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a request's output; the last one has ``done`` set and the timings (nanoseconds)."""

    text: str = ""
    tokens: tuple[int, ...] = ()
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    # Of prompt_eval_count (the whole prompt, as Ollama counts it), the tokens reused from the KV cache.
    cached_tokens: int = 0
    # Speculative decoding (draft_lookup): tokens drafted and, of them, those the model accepted.
    draft_count: int = 0
    draft_accepted: int = 0

    @property
    def evaluated(self) -> int:
        """Prompt tokens actually evaluated for this request (the rest came from the KV cache)."""
        return self.prompt_eval_count - self.cached_tokens


@dataclass(frozen=True, slots=True)
class EmbedResult:
    embeddings: list[list[float]]
    prompt_eval_count: int
    load_duration: int = 0


@dataclass(frozen=True, slots=True)
class RankResult:
    scores: list[float]  # one per document, in the documents' order
    prompt_eval_count: int
    load_duration: int = 0


# Inputs an encoder's pooling context evaluates in one decode (embed and rank batches).
_POOL_SEQS = 16


_END = object()
_IMAGE_TAG = re.compile(r"\[img-(\d+)\]")


def place_media(prompt: str, images: Sequence[bytes]) -> tuple[str, list[bytes]]:
    """Turn Ollama's ``[img-N]`` tags into the projector's media markers.

    Returns the prompt and the images in marker order: a tag may repeat an image,
    a tag naming no image stays text, and images no tag names go in front, in order.
    """
    prompt = prompt.replace(native.MEDIA_MARKER, "")  # a literal marker in user text is not an image
    ordered: list[bytes] = []
    used: set[int] = set()

    def sub(m: re.Match[str]) -> str:
        i = int(m.group(1))
        if i >= len(images):
            return m.group(0)
        used.add(i)
        ordered.append(images[i])
        return native.MEDIA_MARKER

    text = _IMAGE_TAG.sub(sub, prompt)
    front = [img for i, img in enumerate(images) if i not in used]
    return native.MEDIA_MARKER * len(front) + text, front + ordered


class Request:
    """A submitted generation. Iterate it for chunks; ``cancel()`` from any thread."""

    def __init__(self, engine: "Engine", tokens: list[int], opts: RequestOptions, sampling: native.Sampling,
                 truncated: bool, load_duration: int, media: native.MediaPrompt | None = None) -> None:
        self.engine = engine
        self.media = media
        self.prompt_tokens = [t for t in tokens if t >= 0] if media is not None else tokens
        self.truncated = truncated
        self.output_tokens: list[int] = []
        self.opts = opts
        self.sampling = sampling
        self.load_duration = load_duration
        self.seq = -1
        self.finished = False
        self.cancel_reason: str | None = None
        self._stops = StopMatcher(opts.stop)
        self._q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._done = threading.Event()  # set after the last item is queued
        self.submitted_at = time.monotonic_ns()

    # ---- consumer side -------------------------------------------------------
    def __iter__(self) -> Iterator[Chunk]:
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def result(self) -> Chunk:
        """Wait for the whole answer as one chunk.

        Sleeps until the request ends instead of waking for every token, so a waiting caller takes
        no CPU time from the decode threads.
        """
        self._done.wait()
        parts: list[str] = []
        tokens: list[int] = []
        lps: list[TokenLogprob] = []
        last = Chunk()
        for c in self:
            parts.append(c.text)
            tokens.extend(c.tokens)
            lps.extend(c.logprobs)
            last = c
        return Chunk("".join(parts), tuple(tokens), True, last.done_reason, last.prompt_eval_count,
                     last.prompt_eval_duration, last.eval_count, last.eval_duration, last.load_duration, tuple(lps),
                     last.cached_tokens, last.draft_count, last.draft_accepted)

    def cancel(self, reason: str = "cancel") -> None:
        self.engine._cancel(self, reason)

    def _choice(self, index: int) -> "Request":
        """Choice ``index`` of this request's prompt: its own sampler, seeded ``seed + index`` given a seed."""
        seed = self.sampling.seed
        sampling = replace(self.sampling, seed=seed + index if seed >= 0 else -1)
        tokens = self.media.tokens if self.media is not None else self.prompt_tokens
        return Request(self.engine, tokens, self.opts, sampling, self.truncated, 0, self.media)

    # ---- engine side (loop thread) -------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if not self.finished:
            self.finished = True
            self._q.put(exc)
            self._q.put(_END)
            self._done.set()

    def _finish(self, text: str, tokens: tuple[int, ...], reason: str, ev: native.Event | None,
                lps: tuple[TokenLogprob, ...] = (), eval_count: int | None = None) -> None:
        self.finished = True
        self._q.put(Chunk(text, tokens, True, reason, ev.n_prompt if ev else 0, (ev.t_prompt_us if ev else 0) * 1000,
                          eval_count if eval_count is not None else len(self.output_tokens),
                          (ev.t_gen_us if ev else 0) * 1000, self.load_duration, lps, ev.n_cached if ev else 0,
                          ev.n_drafted if ev else 0, ev.n_accepted if ev else 0))
        self._q.put(_END)
        self._done.set()

    def _on_event(self, ev: native.Event, lps: tuple[TokenLogprob, ...]) -> bool:
        """Deliver one event; return True when the request wants its sequence stopped."""
        if self.finished:
            return False
        finish = ev.finish
        if finish == native.FINISH_ERROR:
            self._fail(EngineError(f"inference failed: {native.last_error() or 'decode error'}"))
            return False
        if finish == native.FINISH_GRAMMAR:
            self._fail(native.GrammarError(native.last_error() or "the grammar allows no next token", finish))
            return False
        if finish == native.FINISH_CANCEL:
            self._finish(self._stops.flush(), (), self.cancel_reason or "cancel", ev)
            return False
        tokens: tuple[int, ...] = ()
        if ev.token >= 0 and finish != native.FINISH_STOP:
            self.output_tokens.append(ev.token)
            tokens = (ev.token,)
        text, stopped = self._stops.feed(ev.text.decode("utf-8", "replace")) if ev.text else ("", False)
        if stopped:
            self._finish(text, tokens, "stop", ev, lps)
            return True
        if finish != native.FINISH_NONE:
            text += self._stops.flush()
            self._finish(text, tokens, _DONE_REASON[finish], ev, lps)
            return False
        if text or tokens:
            self._q.put(Chunk(text, tokens, logprobs=lps))
        return False


class Engine:
    """A GGUF model loaded for serving: generation with continuous batching, and embeddings."""

    def __init__(self, model_path: str, load: LoadOptions | None = None, *,
                 adapters: Sequence[tuple[str, float]] = (), progress: Callable[[float], bool] | None = None,
                 embedding_only: bool | None = None, projector: str | None = None, draft: str | None = None,
                 cache_ram: int = 0,
                 cache_disk: tuple[str, int] | None = None, rpc_servers: Sequence[str] = (),
                 on_death: Callable[[EngineError], None] | None = None) -> None:
        """``cache_ram``: bytes of host memory for the prompt states of sequences given to other prompts;
        ``cache_disk``: (folder, bytes) of the disk tier, where the prompt states go when host memory lets
        them go and when the engine closes, and come back from (in this engine or the next of this model);
        ``rpc_servers``: llama.cpp RPC servers (``host:port``) whose devices take offloaded layers beside the
        local ones, split by free memory (each must answer, or the load fails with ``RpcUnreachable``);
        ``draft``: a draft model (same vocabulary) for speculative decoding, in its own context beside the
        model's, drafting ``draft_num_predict`` tokens a step for every request (where prompt lookup finds none)."""
        self.load = load or LoadOptions()
        self.on_death = on_death  # called (from the loop thread) if the loop dies
        self.dead: EngineError | None = None
        self.cache_ram = cache_ram
        self.cache_disk = cache_disk
        t0 = time.monotonic_ns()
        for endpoint in rpc_servers:
            # llama.cpp aborts the process on a server that does not answer: ask it first, with a deadline.
            server = probe_rpc(endpoint)
            n = native.rpc_add_server(endpoint)
            log.info("rpc server added endpoint=%s devices=%d free_mib=%d", endpoint, n, server.free >> 20)
        self.model = native.Model(model_path, n_gpu_layers=self.load.num_gpu, main_gpu=self.load.main_gpu,
                                  use_mmap=self.load.use_mmap, progress=progress)
        self.model_path = model_path
        self.projector_path = projector
        self.info = self.model.info
        self.vocab = Vocab(self.model)
        self.arch = self.model.meta("general.architecture") or ""
        # An encoder (BERT-like) keeps no KV cache, so inputs pooled together cost nothing extra.
        self._pool_seqs = _POOL_SEQS if self.model.meta(f"{self.arch}.attention.causal") == "false" else 1
        pooling = self.model.meta(f"{self.arch}.pooling_type")
        self.embedding_only = bool(pooling and pooling != "0") if embedding_only is None else embedding_only
        n_ctx = min(self.load.num_ctx, self.info.n_ctx_train) if self.info.n_ctx_train > 0 else self.load.num_ctx
        self.num_ctx = max(4, n_ctx)
        self.adapters = list(adapters)
        self._ctx: native.Context | None = None
        self._embed_ctx: native.Context | None = None
        self._embed_lock = threading.Lock()
        self.projector: native.Projector | None = None
        self.draft_path = draft
        self.draft: native.Model | None = None
        try:
            if not self.embedding_only:
                self._ctx = self._make_context(embeddings=False)
                for path, scale in self.adapters:
                    self._ctx.set_lora(path, scale)
                if projector:
                    self.projector = native.Projector(self.model, projector, n_threads=self.load.threads,
                                                      use_gpu=self.load.num_gpu != 0)
                    self._ctx.set_projector(self.projector)
                if draft:
                    self._set_draft(draft)
        except BaseException:
            for c in (self._ctx, self.projector, self.draft):
                if c is not None:
                    c.close()
            self.model.close()
            raise
        self.n_ctx_seq = self._ctx.n_ctx_seq if self._ctx else self.num_ctx
        if self._ctx is not None and cache_disk is not None:
            found = self._ctx.cache_open(*self._state_files(), cache_disk[1])
            log.info("prompt cache disk tier opened states=%d model=%s", found, model_path)
        self.load_duration = time.monotonic_ns() - t0
        self._load_reported = False
        self._lock = threading.Condition()
        self._pending: deque[list[Request]] = deque()  # requests admitted together: one, or the choices of one
        self._cancels: list[Request] = []
        self._clear_waiters: list[threading.Event] = []
        self._active: dict[int, Request] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        if self._ctx is not None:
            self._thread = threading.Thread(target=self._loop, name="power-engine", daemon=True)
            self._thread.start()

    def _state_files(self) -> tuple[str, str]:
        """The disk tier's folder and key for this engine."""
        assert self.cache_disk is not None
        key = state_key(self.model_path, self.adapters, self.projector_path, self.n_ctx_seq, self.load,
                        self.draft_path if self.draft is not None else None)
        return state_folder(self.cache_disk[0], key), key

    def _set_draft(self, path: str) -> None:
        """Load the draft model beside the model; a model whose cells cannot be cut (a recurrent one) runs
        without it, as a model without a draft does."""
        self.draft = native.Model(path, n_gpu_layers=self.load.num_gpu, main_gpu=self.load.main_gpu,
                                  use_mmap=self.load.use_mmap)
        assert self._ctx is not None
        try:
            self._ctx.set_draft(self.draft)
        except NativeError as exc:
            log.warning("draft model not used model=%s draft=%s: %s", self.model_path, path, exc)
            self.draft.close()
            self.draft = None

    def _make_context(self, *, embeddings: bool) -> native.Context:
        lo = self.load
        kv = lo.kv_cache_type if lo.kv_cache_type in native.GGML_TYPES else "f16"
        n_batch = max(lo.num_batch, self.num_ctx) if embeddings else lo.num_batch
        # An encoder (a BERT-like embedding model) must see each input in one ubatch, whatever num_batch says.
        n_ubatch = n_batch if embeddings and self.embedding_only else lo.num_batch
        n_seq = self._pool_seqs if embeddings else lo.num_parallel
        return native.Context(self.model, n_ctx=self.num_ctx, n_seq=n_seq,
                              n_batch=n_batch, n_ubatch=n_ubatch, n_threads=lo.threads, n_threads_batch=lo.threads,
                              flash_attn=lo.flash_attn_mode, type_k=kv, type_v=kv if kv == "f16" or
                              lo.flash_attn_mode != 0 else "f16", embeddings=embeddings,
                              pooling=1 if embeddings and not self.embedding_only else -1,
                              cache_ram=0 if embeddings else self.cache_ram, spec_gate=lo.spec_gate,
                              reference_sampling=lo.reference_sampling, level_batch=lo.level_batch)

    # ---- tokens --------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.vocab.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[Any], *, special: bool = False) -> str:
        return self.vocab.detokenize(tokens, special=special)

    def check_tokens(self, tokens: Sequence[Any]) -> list[int]:
        """Refuse ids that are not integers of this model's vocabulary (a 400, not an error from C)."""
        return self.vocab.check_tokens(tokens)

    def _take_load_duration(self) -> int:
        if self._load_reported:
            return 0
        self._load_reported = True
        return self.load_duration

    def _limit(self, opts: RequestOptions) -> int:
        """The most prompt tokens a request may have: the rest of the context is left for the answer."""
        n_ctx = self.n_ctx_seq
        reserve = opts.num_predict if 0 < opts.num_predict < n_ctx // 2 else max(1, n_ctx // 4)
        return max(1, n_ctx - 1 - reserve)

    def _fit(self, tokens: list[int], opts: RequestOptions, truncate: bool) -> tuple[list[int], bool]:
        limit = self._limit(opts)
        if len(tokens) <= limit:
            return tokens, False
        if not truncate:
            raise InvalidRequest("the input length exceeds the context length")
        keep = limit - 1 if opts.num_keep < 0 else min(opts.num_keep, limit - 1)
        if self.info.add_bos and tokens and tokens[0] == self.info.token_bos:
            keep = max(keep, 1)
        tail = limit - keep
        log.warning("truncating input prompt limit=%d prompt=%d keep=%d", limit, len(tokens), keep)
        return tokens[:keep] + tokens[len(tokens) - tail:], True

    # ---- generation ----------------------------------------------------------
    def _tokenize_media(self, prompt: str | Sequence[int], images: Sequence[bytes],
                        add_special: bool) -> native.MediaPrompt:
        if self.projector is None:
            raise InvalidRequest("this model does not support images: it has no projector")
        if not isinstance(prompt, str):
            raise InvalidRequest("images need a text prompt, not tokens")
        text, ordered = place_media(prompt, images)
        try:
            media = self.projector.tokenize(text, ordered, add_special=add_special)
        except NativeError as exc:
            raise InvalidRequest(str(exc)) from None
        if media.tokens and media.tokens[-1] < 0:
            raise InvalidRequest("a prompt cannot end with an image: put some text after it")
        return media

    def submit(self, prompt: str | Sequence[int], options: RequestOptions | Mapping[str, Any] | None = None, *,
               grammar: str | None = None, logprobs: int = -1, add_special: bool = True,
               truncate: bool = True, ignore_eos: bool = False, images: Sequence[bytes] = ()) -> Request:
        """Queue a generation; it joins the running batch at the next step.

        With ``images`` (encoded image files), ``prompt`` is text whose ``[img-N]`` tags place them.
        A prompt with images is never truncated through an image: one that does not fit is refused.
        """
        req = self._prepare(prompt, options, grammar=grammar, logprobs=logprobs, add_special=add_special,
                            truncate=truncate, ignore_eos=ignore_eos, images=images)
        self._enqueue([req])
        return req

    def submit_many(self, prompts: Sequence[str | Sequence[int]],
                    options: RequestOptions | Mapping[str, Any] | None = None, **kwargs: Any) -> list[Request]:
        """Queue several generations that join the batch at the same step, all or none.

        Takes ``submit``'s keyword arguments, applied to every prompt; an invalid prompt raises
        before any is queued.
        """
        reqs = [self._prepare(p, options, **kwargs) for p in prompts]
        self._enqueue(reqs)
        return reqs

    def submit_choices(self, prompt: str | Sequence[int], n: int,
                       options: RequestOptions | Mapping[str, Any] | None = None, **kwargs: Any) -> list[Request]:
        """Queue ``n`` choices of one prompt (OpenAI's ``n``), with ``submit``'s keyword arguments.

        The prompt is evaluated once, in the first choice's sequence; the others take its cells and the
        logits of its last token, so they start in the same step. Each choice samples on its own: with a
        seed, choice i is seeded ``seed + i``. The choices start together, when ``n`` sequences are free.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidRequest(f"n must be a positive integer, not {n!r}")
        if self._ctx is not None and n > self._ctx.n_seq:
            raise InvalidRequest(f"n is {n}, more choices than the {self._ctx.n_seq} parallel sequences this "
                                 "model runs (OLLAMA_NUM_PARALLEL)")
        first = self._prepare(prompt, options, **kwargs)
        reqs = [first] + [first._choice(i) for i in range(1, n)]
        self._enqueue(reqs, together=True)
        return reqs

    def _prepare(self, prompt: str | Sequence[int], options: RequestOptions | Mapping[str, Any] | None, *,
                 grammar: str | None = None, logprobs: int = -1, add_special: bool = True, truncate: bool = True,
                 ignore_eos: bool = False, images: Sequence[bytes] = ()) -> Request:
        if self._ctx is None:
            raise InvalidRequest("this model does not support generate")
        opts = options if isinstance(options, RequestOptions) else RequestOptions.from_options(
            parse_options(options or {}))
        media = self._tokenize_media(prompt, images, add_special) if images else None
        if media is not None:
            tokens = media.tokens
        else:
            tokens = (self.tokenize(prompt, add_special=add_special) if isinstance(prompt, str)
                      else self.check_tokens(prompt))
        if not tokens:
            raise InvalidRequest("prompt is empty")
        if media is not None:
            limit = self._limit(opts)
            if len(tokens) > limit:
                raise InvalidRequest(f"the input with images ({len(tokens)} tokens) exceeds the context length "
                                     f"({limit} tokens for the prompt)")
            truncated = False
        else:
            tokens, truncated = self._fit(tokens, opts, truncate)
        # Counts past the vocabulary or the context mean "all of it": fit them to int32 for llama.cpp, and
        # keep the penalty window (a buffer llama.cpp allocates) no larger than the context.
        n_draft = opts.draft_num_predict
        sampling = native.Sampling(
            seed=opts.seed, top_k=max(0, min(opts.top_k, self.info.n_vocab)), top_p=opts.top_p, min_p=opts.min_p,
            typical_p=opts.typical_p, temperature=opts.temperature,
            repeat_last_n=-1 if opts.repeat_last_n < 0 else min(opts.repeat_last_n, self.n_ctx_seq),
            repeat_penalty=opts.repeat_penalty, presence_penalty=opts.presence_penalty,
            frequency_penalty=opts.frequency_penalty, num_predict=max(-2, min(opts.num_predict, INT32_MAX)),
            logprobs=max(-1, min(logprobs, 20)), grammar=grammar, ignore_eos=ignore_eos,
            draft=min(native.DRAFT_MAX if n_draft is None else n_draft, native.DRAFT_MAX) if opts.draft_lookup else 0,
            draft_model=min(DRAFT_MODEL_PREDICT if n_draft is None else n_draft, native.DRAFT_MAX)
            if self.draft is not None else 0,
            draft_p_min=opts.draft_p_min)
        return Request(self, tokens, opts, sampling, truncated, 0, media)

    def _enqueue(self, reqs: list[Request], together: bool = False) -> None:
        """Queue ``reqs``; ``together``: as the choices of the first one's prompt, admitted at once."""
        with self._lock:
            if self.dead is not None:
                raise self.dead
            if self._closed:
                raise EngineError("model is unloading")
            if not reqs:
                return
            reqs[0].load_duration = self._take_load_duration()
            if together:
                self._pending.append(reqs)
            else:
                self._pending.extend([r] for r in reqs)
            self._lock.notify()

    def _cancel(self, req: Request, reason: str) -> None:
        with self._lock:
            if req.finished:
                return
            req.cancel_reason = reason
            self._cancels.append(req)
            self._lock.notify()

    def _admit(self, ctx: native.Context) -> None:
        """Move waiting requests into free sequences (loop thread, lock held)."""
        for req in self._cancels:
            group = next((g for g in self._pending if req in g), None)
            if group is not None:
                group.remove(req)
                if not group:
                    self._pending.remove(group)
                req._finish("", (), req.cancel_reason or "cancel", None)
            elif req.seq >= 0 and not req.finished:
                ctx.cancel(req.seq)
        self._cancels.clear()
        while self._pending and len(self._active) + len(self._pending[0]) <= ctx.n_seq:
            leader = -1  # the sequence evaluating the prompt of a group of choices
            for req in self._pending.popleft():
                self._start(ctx, req, leader)
                if leader < 0 and req.seq >= 0:
                    leader = req.seq

    def _start(self, ctx: native.Context, req: Request, leader: int) -> None:
        """Give ``req`` a sequence: its own, or another choice of ``leader``'s prompt (loop thread)."""
        try:
            if leader >= 0:
                req.seq = ctx.submit_choice(leader, req.sampling)
            else:
                req.seq = ctx.submit(req.media if req.media is not None else req.prompt_tokens, req.sampling)
        except native.GrammarError as exc:
            req._fail(exc)
            return
        except NativeError as exc:
            # the request's own fault (too long for the context or the batch) is a 400
            req._fail(InvalidRequest(str(exc)) if exc.code == native.E_TOOLONG else EngineError(str(exc)))
            return
        except Exception as exc:  # anything else about one request ends that request, not the loop
            log.exception("request could not start")
            req._fail(EngineError(f"request could not start: {exc}"))
            return
        self._active[req.seq] = req

    def _logprobs(self, ev: native.Event, req: Request) -> tuple[TokenLogprob, ...]:
        if req.sampling.logprobs < 0 or ev.token < 0:
            return ()
        tb = self.model.token_bytes
        top = tuple((tb(t).decode("utf-8", "replace"), lp, tuple(tb(t))) for t, lp in ev.top)
        b = tb(ev.token)
        return (TokenLogprob(b.decode("utf-8", "replace"), ev.logprob, tuple(b), top),)

    def _loop(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # whatever it was, the engine must not live on without its loop
            self._die(exc)
            return
        self._end_all(EngineError("model was unloaded"))

    def _die(self, exc: BaseException) -> None:
        log.critical("engine loop died: %s: %s", type(exc).__name__, exc, exc_info=exc)
        err = EngineError(f"the model's engine stopped ({type(exc).__name__}: {exc})")
        with self._lock:
            self.dead = err  # refuses submits from now on; close() still frees everything
        if self.on_death is not None:  # first, so the owner can say so before the requests' errors go out
            self.on_death(err)
        self._end_all(err)

    def _end_all(self, err: EngineError) -> None:
        """End every request still in the engine with ``err`` (the loop is over)."""
        with self._lock:
            for w in self._clear_waiters:
                w.set()
            self._clear_waiters.clear()
            for req in list(self._active.values()) + [r for group in self._pending for r in group]:
                req._fail(err)
            self._active.clear()
            self._pending.clear()

    def _run(self) -> None:
        ctx = self._ctx
        assert ctx is not None
        while True:
            with self._lock:
                while (not self._closed and not self._pending and not self._active and not self._cancels
                       and not self._clear_waiters):
                    self._lock.wait()
                if self._closed:
                    break
                if self._clear_waiters and not self._active:
                    ctx.clear()
                    for w in self._clear_waiters:
                        w.set()
                    self._clear_waiters.clear()
                self._admit(ctx)
                if not self._active:
                    continue
            try:
                res = ctx.step()
            except NativeError as exc:  # pragma: no cover - step fails only on bad arguments
                log.error("engine step failed: %s", exc)
                with self._lock:
                    for req in self._active.values():
                        req._fail(EngineError(str(exc)))
                    self._active.clear()
                continue
            for ev in res.events:
                req = self._active.get(ev.seq)
                if req is None:
                    continue
                if ev.finish != native.FINISH_NONE:
                    del self._active[ev.seq]
                try:
                    stop = req._on_event(ev, self._logprobs(ev, req))
                except Exception as exc:  # a broken request must not take the loop down
                    log.exception("request failed")
                    req._fail(EngineError(str(exc)))
                    stop = ev.finish == native.FINISH_NONE
                if stop:
                    ctx.cancel(ev.seq)

    # ---- embeddings and reranking ----------------------------------------------
    @property
    def reranker(self) -> bool:
        """Whether the model pools with a classifier head (rank pooling): it scores, it does not embed."""
        return self.info.pooling == native.POOLING_RANK

    def embed(self, inputs: Sequence[str], *, normalize: bool = True, truncate: bool = True) -> EmbedResult:
        """Pooled embedding vectors, one per input (L2-normalised unless asked otherwise)."""
        if self.reranker:
            raise InvalidRequest("this model is a reranker: it scores documents against a query (/api/rerank), "
                                 "it does not embed")
        load = self._take_load_duration()
        if not inputs:
            return EmbedResult([], 0, load)
        toks = self._fit_pooled([self.tokenize(text) for text in inputs], truncate)
        return EmbedResult(self._pool(toks, normalize), sum(len(t) for t in toks), load)

    def rank(self, query: str, documents: Sequence[str], *, truncate: bool = True) -> RankResult:
        """A relevance score per document for ``query``, in the documents' order (one decode for many)."""
        if not self.reranker:
            raise InvalidRequest("this model does not support reranking: it has no rank pooling "
                                 "(a reranker GGUF declares pooling_type 4)")
        load = self._take_load_duration()
        if not documents:
            return RankResult([], 0, load)
        toks = self._fit_pooled([self.vocab.rank_pair(query, doc) for doc in documents], truncate)
        scores = [row[0] for row in self._pool(toks, False)]
        return RankResult(scores, sum(len(t) for t in toks), load)

    def _fit_pooled(self, toks: list[list[int]], truncate: bool) -> list[list[int]]:
        """Cut (or refuse) inputs longer than the context; an empty input becomes one token."""
        limit = min(self.num_ctx, self.info.n_ctx_train or self.num_ctx)
        out = []
        for t in toks:
            if len(t) > limit:
                if not truncate:
                    raise InvalidRequest("the input length exceeds the context length")
                t = t[:limit]
            out.append(t or [self.info.token_bos if self.info.token_bos >= 0 else 0])
        return out

    def _pool(self, toks: list[list[int]], normalize: bool) -> list[list[float]]:
        with self._embed_lock:
            if self._embed_ctx is None:
                self._embed_ctx = self._make_context(embeddings=True)
            return self._embed_ctx.embed(toks, normalize=normalize)

    # ---- state ---------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget every cached prompt prefix, so the next requests evaluate their prompts in full.

        Waits for running generations to end first; queued requests may start before or after it.
        """
        done = threading.Event()
        with self._lock:
            if self._ctx is None or self._closed or self.dead is not None:
                return
            self._clear_waiters.append(done)
            self._lock.notify()
        done.wait()

    def stats(self) -> dict[str, int]:
        if self._ctx is None:
            return {"n_seq": 1, "n_active": 0, "kv_used": 0, "n_ctx_seq": self.n_ctx_seq}
        st = self._ctx.stats()
        st["n_waiting"] = sum(len(group) for group in self._pending)
        return st

    def close(self) -> None:
        """Stop the loop (ending every request with an error) and free the model."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self._ctx is not None and self.cache_disk is not None and self.dead is None:
            try:
                self._ctx.cache_save()
            except NativeError as exc:
                log.warning("prompt states not written to disk: %s", exc)
        for c in (self._ctx, self._embed_ctx, self.projector, self.draft):
            if c is not None:
                c.close()
        self._ctx = self._embed_ctx = self.projector = self.draft = None
        self.model.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
