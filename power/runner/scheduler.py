"""Which runner serves which model: autoload, parallel slots and queue, keep_alive, LRU, memory, crashes.

The scheduler's state lives in the loop thread (``LoopThread``) and is only
touched there, so it needs no locks; the public methods are synchronous and
thread-safe, for the threaded HTTP server. A request for a loaded model with
the same load options goes straight to its runner; anything else (first use,
changed options, a runner that died) loads a new runner, one load at a time,
after evicting idle runners (least recently used first) until both
``max_loaded_models`` and the memory estimate allow it. Tokenizing takes none
of this: a loaded runner answers it at once, and the vocab runner (one process,
outside the models and the budget) answers for every model that is not loaded.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from power.config import Settings
from power.engine.options import LoadOptions, parse_options
from power.engine.rpc import RpcServer, parse_endpoints, probe_all
from power.errors import Busy, InvalidRequest, PowerError, ShuttingDown
from power.runner.client import LoopThread, RunnerProcess, VocabProcess, gather_quietly
from power.runner.keepalive import parse_keep_alive
from power.runner.loaded import Loaded, ModelSpec, ModelView, ProgressWatcher, Resolver
from power.runner.memory import (
    GPU,
    MemoryEstimate,
    ModelFacts,
    OutOfMemory,
    Placement,
    detect_gpus,
    estimate,
    fit_layers,
    model_facts,
    place,
    prompt_cache_bytes,
    read_meminfo,
    remote_share,
)
from power.runner.protocol import RunnerCrashed
from power.runner.resolve import blob_digests
from power.runner.stats import GpuSampler, summarize
from power.runner.stream import Call, Sink, Stream, arm_deadlines

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

GiB = 1 << 30


SCRAPE_WAIT_S = 0.0  # how long a metrics scrape waits for busy runners' counters (``scrape_stats``)
RPC_TIMEOUT = 3.0  # seconds an RPC server has to answer the handshake before a load goes without it
RPC_REASK = 30.0  # seconds before a server that has not answered yet is asked again for the default placement


@dataclass(frozen=True)
class SchedulerView:
    """What ``ps`` and ``queue_depth`` answer, as of the scheduler's last change.

    The loop thread makes a new one after every change (a hold or release, a load's start, progress and
    end, an unload, a crash) and swaps it in with one assignment, so any thread, the HTTP worker's event
    loop included, reads a consistent state without a lock or a round trip to the loop.
    """

    models: tuple[ModelView, ...] = ()  # loaded and loading models, not those being retired
    waiting: int = 0  # requests waiting for a slot or a load, as admission counts them


class Scheduler:
    """Loaded models and their runners, shared by every server thread."""

    def __init__(self, settings: Settings, resolve: Resolver, *, gpus: Sequence[GPU] | None = None,
                 meminfo: Any = read_meminfo, reserve: int = 256 << 20, runner_log_level: str = "WARNING",
                 load_pause: float = 0.0) -> None:
        """``load_pause``: seconds each runner sleeps at each load-progress report (a slow load, for tests)."""
        self.settings = settings
        self._load_pause = load_pause
        self._resolve = resolve
        self._gpus = list(detect_gpus() if gpus is None else gpus)
        self._meminfo = meminfo
        self._reserve = reserve
        self._log_level = runner_log_level
        self._models: dict[str, Loaded] = {}
        self._pending_loads = 0
        self._closing = False
        self._lt = LoopThread()
        self._load_lock = asyncio.Lock()
        self._changed = asyncio.Event()  # set whenever a runner goes idle or away
        self._vocab: VocabProcess | None = None  # tokenizes for models that are not loaded
        self._vocab_lock = asyncio.Lock()
        self._gpu_sampler = GpuSampler(bool(self._gpus))
        self._view = SchedulerView()
        self._stats_lock = threading.Lock()
        self._stats_asked: concurrent.futures.Future[tuple[list[dict[str, Any]], int]] | None = None
        self._stats_last: tuple[list[dict[str, Any]], int] | None = None  # the runners' last answer to a scrape
        self._rpc_lock = threading.Lock()
        self._rpc_offers: dict[str, int] = {}  # free bytes each RPC server reported when it first answered
        self._rpc_asked: dict[str, float] = {}  # when each server that has not answered yet was last asked

    @property
    def max_loaded(self) -> int:
        return self.settings.max_loaded_models or 3 * max(1, len(self._gpus))

    # ---- public API (any thread) -----------------------------------------------------------------
    def generate(self, name: str, prompt: str | Sequence[int], **kwargs: Any) -> Stream:
        """Start a generation, loading the model if needed; errors before the first chunk raise here.

        Takes ``generate_choices``' keyword arguments.
        """
        return self.generate_choices(name, prompt, 1, **kwargs)[0]

    def generate_choices(self, name: str, prompt: str | Sequence[int], n: int, *,
                         options: Mapping[str, Any] | None = None, keep_alive: Any = None, grammar: str | None = None,
                         logprobs: int = -1, add_special: bool = True, truncate: bool = True, context: bool = False,
                         images: Sequence[bytes] = (), on_start: Callable[[Stream], None] | None = None,
                         load_progress: bool = False) -> list[Stream]:
        """Start ``n`` generations of one prompt (OpenAI's ``n``), a stream each; the runner evaluates the
        prompt once. They take ``n`` of the model's parallel sequences: more is a 400 that says how many.

        ``images`` are encoded image files that ``[img-N]`` tags in the prompt place. ``on_start`` gets each
        stream before the wait for its first chunk (queue and prompt), e.g. to cancel it from elsewhere.
        ``load_progress``: the first stream, when it has to wait for its model's load, returns at its first
        progress item (see ``Stream``); an error after that comes from the streams.
        """
        spec, opts, load, facts = self._prepare(name, options)
        limit = load.num_parallel
        if not 1 <= n <= limit:
            raise InvalidRequest(f"n must be between 1 and {limit}, not {n}: {spec.name} generates at most {limit} "
                                 f"choice{'s' if limit != 1 else ''} at once, one per parallel sequence "
                                 f"(OLLAMA_NUM_PARALLEL={limit})")
        ka = parse_keep_alive(keep_alive, self.settings.keep_alive)
        req = {k: v for k, v in opts.items() if k not in ("num_ctx", "num_batch", "num_gpu", "main_gpu",
                                                          "use_mmap", "num_thread")}
        boxes: list[dict[str, Any]] = [{} for _ in range(n)]
        streams = [Stream(cancel=lambda reason, box=box: self._lt.soon(self._cancel, box, reason)) for box in boxes]
        fields = {"prompt": prompt if isinstance(prompt, str) else list(prompt), "options": req,
                  "grammar": grammar, "logprobs": logprobs, "add_special": add_special, "truncate": truncate,
                  "context": context}
        if images:
            fields["images"] = [base64.b64encode(image).decode("ascii") for image in images]
        if on_start is not None:
            for stream in streams:
                on_start(stream)
        dispatch = self._dispatch(spec, load, facts, ka, "submit", streams, fields, boxes,
                                  watch=streams[0].progress if load_progress else None)
        if not load_progress:
            self._lt.call(dispatch)
        else:  # the first progress item (or chunk, or error) ends the wait below, not the load
            def fail(exc: BaseException) -> None:
                for stream in streams:
                    stream.fail(exc)

            self._lt.spawn(dispatch, on_error=fail)
        try:
            for stream in streams:
                stream.wait_first()
        except BaseException:
            for stream in streams:
                stream.close()
            raise
        return streams

    def embed(self, name: str, inputs: Sequence[str], *, options: Mapping[str, Any] | None = None,
              keep_alive: Any = None, truncate: bool = True, normalize: bool = True) -> dict[str, Any]:
        """Embedding vectors for ``inputs``: ``{"embeddings", "prompt_eval_count", "load_duration"}``."""
        res, load_ns = self._call(name, options, keep_alive, "embed",
                                  {"inputs": list(inputs), "truncate": truncate, "normalize": normalize})
        return {**res, "load_duration": load_ns}

    def rerank(self, name: str, query: str, documents: Sequence[str], *, options: Mapping[str, Any] | None = None,
               keep_alive: Any = None, truncate: bool = True) -> dict[str, Any]:
        """A score per document for ``query``: ``{"scores", "prompt_eval_count", "load_duration"}``."""
        res, load_ns = self._call(name, options, keep_alive, "rank",
                                  {"query": query, "documents": list(documents), "truncate": truncate})
        return {**res, "load_duration": load_ns}

    def tokenize(self, name: str, text: str, *, add_special: bool = True, parse_special: bool = True,
                 pieces: bool = False) -> list[Any]:
        """``text``'s tokens (with ``pieces``, ``{"id", "piece"}`` each) from the model's vocabulary.

        Never loads the model and never waits for a sequence: a loaded runner answers between its steps,
        any other model's vocabulary is read by the vocab runner.
        """
        return list(self._tokens(name, "tokenize", {"text": text, "add_special": add_special,
                                                    "parse_special": parse_special, "pieces": pieces}))

    def detokenize(self, name: str, tokens: Sequence[int], *, special: bool = False) -> str:
        """The text of ``tokens`` (with ``special``, control tokens written out), as ``tokenize`` answers."""
        return str(self._tokens(name, "detokenize", {"tokens": list(tokens), "special": special}))

    def load(self, name: str, options: Mapping[str, Any] | None = None, keep_alive: Any = None) -> int:
        """Make sure ``name`` is loaded; return the load's duration in ns (0 if it already was)."""
        _, load_ns = self._call(name, options, keep_alive, "health", {})
        return load_ns

    def load_progress(self, name: str, options: Mapping[str, Any] | None = None,
                      keep_alive: Any = None) -> Iterator[tuple[int, int]]:
        """Make sure ``name`` is loaded like ``load``, yielding (completed, total) while the load it waits for
        goes on; the load's error raises from the iterator (before any item when it fails at once)."""
        spec, _, load, facts = self._prepare(name, options)
        ka = parse_keep_alive(keep_alive, self.settings.keep_alive)
        call = Call()
        events: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        call.future.add_done_callback(lambda _: events.put(None))
        self._lt.spawn(self._dispatch(spec, load, facts, ka, "health", [call], {}, [{}],
                                      watch=lambda completed, total: events.put((completed, total))),
                       on_error=call.fail)

        def items() -> Iterator[tuple[int, int]]:
            while (item := events.get()) is not None:
                yield item
            call.wait()

        return items()

    def stats(self, name: str | None = None, timeout: float = 2.0) -> dict[str, Any]:
        """Counters for metrics; never loads a model unless ``name`` is given.

        Without a name: running and waiting requests, KV-cache use (totals and
        per loaded model) and GPU memory and utilisation. With a name: that
        model's raw engine counters, loading it if needed.
        """
        if name is not None:
            res, _ = self._call(name, None, None, "stats", {})
            return dict(res)
        rows: list[dict[str, Any]] = []
        pending = 0
        if not self._closing:
            rows, pending = self._lt.call(self._engine_stats(timeout), timeout=timeout + 5)
        return summarize(rows, pending_loads=pending, queue_capacity=self.settings.max_queue,
                         gpus=self._gpu_sampler.sample())

    def scrape_stats(self, busy_wait: float = SCRAPE_WAIT_S, timeout: float = 2.0,
                     block: bool = True) -> dict[str, Any]:
        """``stats()`` for a metrics scrape, which must answer at once however busy the runners are.

        With nothing running or queued the runners answer at once and the scrape waits for them (so the
        counters include every finished request). While requests run, a runner answers between its
        decode steps, behind its streams, so the scrape waits ``busy_wait`` seconds at most (none by
        default) and otherwise gets the runners' last answer, asking them again for the next scrape; the
        GPUs' figures are then the last ones too (``GpuSampler.sample(block=False)``).
        """
        rows: list[dict[str, Any]] = []
        pending = 0
        busy = self._busy()
        if not self._closing:
            with self._stats_lock:
                asked = self._stats_asked
                if not busy or asked is None or asked.done():  # idle: a fresh answer, after every request's end
                    asked = self._stats_asked = self._lt.submit(self._engine_stats(timeout))
                    asked.add_done_callback(self._stats_landed)
                last = self._stats_last
            wait = busy_wait if busy and last is not None else timeout + 5
            try:
                rows, pending = asked.result(wait if block else 0)  # block=False: never wait (the caller can't)
            except concurrent.futures.TimeoutError:
                rows, pending = last if last is not None else ([], 0)
        return summarize(rows, pending_loads=pending, queue_capacity=self.settings.max_queue,
                         gpus=self._gpu_sampler.sample(block=block and not busy))

    def scrape_waits(self) -> bool:
        """Whether ``scrape_stats`` would wait now (for idle runners, or for a first answer to fall back on);
        if not, it returns at once (with ``busy_wait`` 0), so the HTTP worker's event loop may call it."""
        return self._stats_last is None or not self._busy()

    def _busy(self) -> bool:
        view = self._view
        return view.waiting > 0 or any(m.refs for m in view.models)

    def _stats_landed(self, fut: concurrent.futures.Future[tuple[list[dict[str, Any]], int]]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._stats_last = fut.result()

    @property
    def closing(self) -> bool:
        """True once ``close`` began: no new work is taken."""
        return self._closing

    def queue_depth(self) -> int:
        """Requests waiting for a slot or a load, as admission counts them (503 at ``max_queue``).

        Never blocks, as ``ps`` (``SchedulerView``)."""
        return self._view.waiting

    def unload(self, name: str) -> bool:
        """Stop ``name`` now; its in-flight requests end with done_reason "unload". False if not loaded."""
        return self._lt.call(self._unload(name))

    def ps(self) -> list[dict[str, Any]]:
        """Loaded models, latest expiry first (see ``Loaded.describe``); never blocks (``SchedulerView``)."""
        rows = [v.describe() for v in self._view.models]
        return sorted(rows, key=lambda r: r["expires_at"], reverse=True)

    def blobs_in_use(self) -> set[str]:
        """Digests of the blobs loaded runners hold open: garbage collection must spare them (P5)."""
        if self._closing:
            return set()
        specs = self._lt.call(self._specs())
        paths: list[str] = []
        for m in specs:
            paths += m.spec.paths()
        return blob_digests(paths)

    def close(self, deadline: float = 30.0) -> None:
        """Stop accepting, let streams finish for up to ``deadline`` seconds, then end every runner."""
        if self._closing:
            return
        self._closing = True
        try:
            self._lt.call(self._shutdown(deadline), timeout=deadline + 30)
        finally:
            self._lt.stop()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- preparation (caller's thread) -------------------------------------------------------------
    def _prepare(self, name: str, options: Mapping[str, Any] | None
                 ) -> tuple[ModelSpec, dict[str, Any], LoadOptions, ModelFacts]:
        if self._closing:
            raise ShuttingDown()
        spec = self._resolve(name)
        opts = {**parse_options(spec.options), **parse_options(options)}
        facts = model_facts(spec.model_path, spec.draft)
        s = self.settings
        # RPC servers, like GPUs, take every layer unless num_gpu says otherwise.
        default_gpu = s.num_gpu if s.num_gpu is not None else (-1 if self._gpus or s.rpc_servers else 0)
        load = LoadOptions.from_options(opts, default_ctx=s.context_length,
                                        num_parallel=1 if facts.embedding else s.num_parallel,
                                        flash_attention=s.flash_attention, kv_cache_type=s.kv_cache_type,
                                        default_gpu=default_gpu, spec_costs=s.spec_costs,
                                        reference_sampling=s.reference_sampling, level_batch=s.level_batch)
        if facts.n_ctx_train and load.num_ctx > facts.n_ctx_train:
            load = replace(load, num_ctx=facts.n_ctx_train)  # the engine clamps too; equal options, no reload
        remote = self._rpc_offered() if s.rpc_servers and s.num_gpu is None and "num_gpu" not in opts else 0
        if (self._gpus or remote) and s.num_gpu is None and "num_gpu" not in opts:
            # Offload what the GPUs and the RPC servers can hold, judged against what was free at start: the
            # same answer for every request, so equal requests keep equal load options and never reload.
            layers = fit_layers(estimate(facts, spec.files_size(), load), facts, self._gpus, remote)
            load = replace(load, num_gpu=layers)
        return spec, opts, load, facts

    def _rpc_offered(self) -> int:
        """The free bytes the RPC servers reported when each first answered, before any model of ours was on
        them (as the GPUs' free memory at start, so that the default placement does not move once a model is
        loaded there). A server that has not answered yet is asked with the load's deadline, at most once
        every RPC_REASK seconds; until it answers it offers nothing (without GPUs the default stays every
        layer, and the load itself reaches the servers)."""
        try:
            endpoints = parse_endpoints(self.settings.rpc_servers)
        except ValueError:
            return 0  # the load names the bad entry
        now = time.monotonic()
        with self._rpc_lock:
            ask = [e for e in endpoints if e not in self._rpc_offers
                   and (e not in self._rpc_asked or now - self._rpc_asked[e] >= RPC_REASK)]
            self._rpc_asked.update((e, now) for e in ask)
        if ask:
            self._remember_offers(probe_all(ask, RPC_TIMEOUT)[0])
        with self._rpc_lock:
            return sum(self._rpc_offers.get(e, 0) for e in endpoints)

    def _remember_offers(self, up: Sequence[RpcServer]) -> None:
        with self._rpc_lock:
            for server in up:
                self._rpc_offers.setdefault(server.endpoint, server.free)

    def _call(self, name: str, options: Mapping[str, Any] | None, keep_alive: Any, op: str,
              fields: dict[str, Any]) -> tuple[Any, int]:
        spec, _, load, facts = self._prepare(name, options)
        ka = parse_keep_alive(keep_alive, self.settings.keep_alive)
        call = Call()
        load_ns = self._lt.call(self._dispatch(spec, load, facts, ka, op, [call], fields, [{}]))
        return call.wait(), load_ns

    def _tokens(self, name: str, op: str, fields: dict[str, Any]) -> Any:
        if self._closing:
            raise ShuttingDown()
        spec = self._resolve(name)
        try:
            return self._token_call(spec, op, fields, loaded=True)
        except RunnerCrashed:  # the model's runner ended meanwhile: its vocabulary still answers
            return self._token_call(spec, op, fields, loaded=False)

    def _token_call(self, spec: ModelSpec, op: str, fields: dict[str, Any], *, loaded: bool) -> Any:
        call = Call()
        self._lt.call(self._send_tokens(spec, op, call, fields, loaded))
        return call.wait()

    # ---- loop thread -----------------------------------------------------------------------------
    async def _send_tokens(self, spec: ModelSpec, op: str, call: Call, fields: dict[str, Any], loaded: bool) -> None:
        """Send a token op to the model's ready runner (no slot held, no queue), else to the vocab runner."""
        m = self._models.get(spec.name)
        if (loaded and m is not None and m.runner is not None and m.spec.same_files(spec) and not m.closing
                and not m.runner.closed and m.ready.done() and m.ready.exception() is None):
            m.runner.send(op, call, **fields)
        else:
            runner = await self._vocab_runner()
            runner.send(op, call, model=spec.model_path, **fields)
        arm_deadlines(call, lambda reason: None, first_token=0, total=self.settings.request_timeout,
                      what=f"model={spec.name} op={op}")

    async def _vocab_runner(self) -> VocabProcess:
        """The vocab runner, started on first use and again after it ends."""
        async with self._vocab_lock:
            if self._vocab is None or self._vocab.closed:
                runner = VocabProcess(log_level=self._log_level)
                timeout = self.settings.load_timeout if self.settings.load_timeout > 0 else None
                await runner.start(timeout)
                self._vocab = runner
            return self._vocab

    async def _dispatch(self, spec: ModelSpec, load: LoadOptions, facts: ModelFacts, ka: float | None, op: str,
                        sinks: Sequence[Sink], fields: dict[str, Any], boxes: Sequence[dict[str, Any]],
                        watch: ProgressWatcher | None = None) -> int:
        """Send one request answered into ``sinks`` (the choices of a prompt each hold a sequence)."""
        if self._closing:
            raise ShuttingDown()
        m, load_ns = await self._acquire(spec, load, facts, ka, strict=op in ("submit", "embed", "rank", "health"),
                                         n=len(sinks), watch=watch)
        for sink in sinks:
            sink.on_done = lambda: self._release(m)
            if isinstance(sink, Stream):
                sink.load_duration = load_ns
        assert m.runner is not None
        ids = m.runner.send_choices(op, sinks, **fields)
        for sink, box, rid in zip(sinks, boxes, ids):
            box["runner"], box["id"] = m.runner, rid
            if getattr(sink, "cancel_reason", None):  # cancelled while the model was loading
                self._cancel(box, sink.cancel_reason)  # type: ignore[attr-defined]
            arm_deadlines(sink, lambda reason, box=box: self._cancel(box, reason),
                          first_token=self.settings.first_token_timeout, total=self.settings.request_timeout,
                          what=f"model={spec.name} op={op}")
        return load_ns

    def _cancel(self, box: dict[str, Any], reason: str) -> None:
        runner: RunnerProcess | None = box.get("runner")
        if runner is not None:
            runner.cancel(box["id"], reason)

    def _waiting(self) -> int:
        return self._pending_loads + sum(m.waiting for m in self._models.values())

    async def _acquire(self, spec: ModelSpec, load: LoadOptions, facts: ModelFacts, ka: float | None,
                       strict: bool = True, n: int = 1, watch: ProgressWatcher | None = None
                       ) -> tuple[Loaded, int]:
        """Hold a ready runner for ``spec``/``load`` ``n`` times (a hold per sequence the request takes),
        loading it first if needed; return it and the load time.

        ``watch`` hears the progress of the load this request waits for, if it waits for one.
        """
        m = self._models.get(spec.name)
        if m is not None and not strict and not m.closing and m.spec.same_files(spec):
            load = m.load  # tokenizing needs no particular context: whatever is loaded will do
        if m is not None and m.serves(spec, load) and m.ready.done() and m.ready.exception() is None:
            if m.refs + n > m.load.num_parallel and self._waiting() >= self.settings.max_queue:
                raise Busy()
            m.hold(ka, n)
            self._publish()
            return m, 0
        if self._waiting() >= self.settings.max_queue:
            raise Busy()
        self._pending_loads += 1
        self._publish()
        try:
            while True:
                m = self._models.get(spec.name)
                if m is not None and m.serves(spec, load):
                    m.watch(watch)
                    await asyncio.shield(m.ready)  # raises the load's error
                    if m.serves(spec, load):  # not retired or crashed while we waited
                        m.hold(ka, n)
                        return m, m.load_duration
                    continue
                async with self._load_lock:
                    if self._models.get(spec.name) is m:
                        m = await self._load(spec, load, facts, watch)
                        m.hold(ka, n)
                        return m, m.load_duration
        finally:
            self._pending_loads -= 1
            self._publish()

    async def _load(self, spec: ModelSpec, load: LoadOptions, facts: ModelFacts,
                    watch: ProgressWatcher | None = None) -> Loaded:
        old = self._models.get(spec.name)
        if old is not None:  # other options or files: wait for its requests, then replace it
            old.closing = True
            self._publish()
            while old.refs:
                await self._wait_change()
            await self._stop(old, "unload")
        est = estimate(facts, spec.files_size(), load)
        # The prompt cache's default bound is a share of the memory the model leaves free.
        est = estimate(facts, spec.files_size(), load,
                       prompt_cache_bytes(self.settings.cache_ram, self._budget()[1] - est.total),
                       self.settings.cache_disk << 20)
        rpc, remote = await self._reach_rpc(spec, est, load, facts)
        est = replace(est, remote=remote)
        placement = await self._make_room(spec, est, load, facts)
        m = Loaded(spec, load, facts, replace(est, gpus=placement.per_gpu), placement.vram + remote)
        self._models[spec.name] = m
        self._publish()
        m.watch(watch)
        m.runner = RunnerProcess(spec.model_path, load, spec.adapters, projector=spec.projector, draft=spec.draft,
                                 log_level=self._log_level, cache_ram=est.prompt_cache,
                                 cache_disk=(str(self.settings.prompt_cache_dir), self.settings.cache_disk << 20)
                                 if self.settings.cache_disk and not facts.embedding else None,
                                 rpc_servers=rpc, on_exit=lambda r: self._on_exit(m, r),
                                 on_progress=lambda fraction: self._progress(m, fraction),
                                 load_pause=self._load_pause)
        t0 = time.monotonic_ns()
        try:
            timeout = self.settings.load_timeout if self.settings.load_timeout > 0 else None
            await m.runner.start(timeout)
        except BaseException as exc:
            log.error("model load failed model=%s: %s", spec.name, exc)
            if self._models.get(spec.name) is m:
                del self._models[spec.name]
            m.closing = True
            m.loaded(False)
            m.ready.set_exception(exc)
            m.ready.exception()  # retrieved: waiters re-raise it themselves
            self._changed.set()
            self._publish()
            raise
        m.load_duration = time.monotonic_ns() - t0
        m.loaded(True)
        m.ready.set_result(None)
        self._publish()
        log.info("model loaded model=%s pid=%d load_ms=%.1f num_ctx=%d parallel=%d est_mib=%d", spec.name,
                 m.runner.pid, m.load_duration / 1e6, load.num_ctx, load.num_parallel, est.total >> 20)
        return m

    async def _reach_rpc(self, spec: ModelSpec, est: MemoryEstimate, load: LoadOptions,
                         facts: ModelFacts) -> tuple[tuple[str, ...], int]:
        """The RPC servers that answer, for a runner to put layers on, and the bytes they would hold.

        A server that does not answer is left out when the model fits here without it (a log line
        says so); otherwise the load fails with ``RpcUnreachable`` naming it.
        """
        if not self.settings.rpc_servers or load.num_gpu == 0:
            return (), 0
        try:
            endpoints = parse_endpoints(self.settings.rpc_servers)
        except ValueError as exc:
            raise PowerError(f"A3S_POWER_RPC_SERVERS: {exc}") from None
        up, down = await asyncio.get_running_loop().run_in_executor(None, probe_all, endpoints, RPC_TIMEOUT)
        self._remember_offers(up)
        local_free = sum(g.free for g in self._gpus_free())
        remote = remote_share(est, load, facts, sum(s.free for s in up), local_free) if up else 0
        if down:
            ceiling, _ = self._budget()
            need = est.host - remote
            if need > ceiling:
                raise type(down[0])(f"{down[0]}; the model needs {need / GiB:.1f} GiB here without it, "
                                    f"and this machine has {max(0, ceiling) / GiB:.1f} GiB")
            log.warning("loading without unreachable RPC servers model=%s using=%s: %s", spec.name,
                        ",".join(s.endpoint for s in up) or "local devices only", "; ".join(map(str, down)))
        return tuple(s.endpoint for s in up), remote

    def _budget(self) -> tuple[int, int]:
        """(what the machine could ever give a model, what it can give now), in bytes."""
        total, avail = self._meminfo()
        if not total:
            return 1 << 62, 1 << 62
        held = sum(m.estimate.host for m in self._models.values())
        # MemAvailable counts mmap'd weights as reclaimable cache, so trust our own estimates too.
        return total - self._reserve, min(avail, total - held) - self._reserve

    def _gpus_free(self) -> list[GPU]:
        """The GPUs with what our loaded runners hold taken off their free memory (as detected at start)."""
        held: dict[int, int] = {}
        for m in self._models.values():
            for index, size in m.estimate.gpus:
                held[index] = held.get(index, 0) + size
        return [replace(g, free=g.free - held.get(g.index, 0)) for g in self._gpus]

    def _place(self, est: MemoryEstimate, load: LoadOptions, facts: ModelFacts, gpus: Sequence[GPU]) -> Placement:
        return place(est, load, facts, gpus, spread=self.settings.sched_spread)

    async def _make_room(self, spec: ModelSpec, est: MemoryEstimate, load: LoadOptions,
                         facts: ModelFacts) -> Placement:
        """Evict idle runners until ``est`` fits system memory and its offloaded share fits the GPUs."""
        need = est.host
        ceiling, _ = self._budget()
        if need > ceiling:
            raise OutOfMemory(f"model requires more system memory ({need / GiB:.1f} GiB) than is available "
                              f"({max(0, ceiling) / GiB:.1f} GiB)")
        alone = self._place(est, load, facts, self._gpus)
        if alone.short:
            raise OutOfMemory(f"model requires more GPU memory ({alone.vram / GiB:.1f} GiB) than is available "
                              f"({(alone.vram - alone.short) / GiB:.1f} GiB); lower num_gpu to offload fewer layers")
        while True:
            _, free = self._budget()
            placement = self._place(est, load, facts, self._gpus_free())
            if len(self._models) < self.max_loaded and need <= free and not placement.short:
                if placement.vram:
                    log.info("model placed model=%s gpus=%s spread=%s", spec.name,
                             ",".join(f"{i}:{b >> 20}MiB" for i, b in placement.per_gpu), self.settings.sched_spread)
                return placement
            idle = sorted((m for m in self._models.values() if m.idle), key=lambda m: m.last_used)
            if idle:
                log.info("evicting idle model model=%s for=%s", idle[0].name, spec.name)
                await self._stop(idle[0], "unload")
                continue
            if not self._models:
                raise OutOfMemory(f"model requires more system memory ({need / GiB:.1f} GiB) than is "
                                  f"available ({max(0, free) / GiB:.1f} GiB)")
            await self._wait_change()

    async def _wait_change(self) -> None:
        self._changed.clear()
        timeout = self.settings.load_timeout if self.settings.load_timeout > 0 else None
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            raise Busy("timed out waiting for a loaded model to become idle") from None

    def _progress(self, m: Loaded, fraction: float) -> None:
        m.progress(fraction)
        self._publish()

    def _release(self, m: Loaded) -> None:
        try:
            self._let_go(m)
        finally:
            self._publish()

    def _let_go(self, m: Loaded) -> None:
        m.refs -= 1
        m.last_used = time.monotonic()
        if m.refs > 0:
            return
        self._changed.set()
        if m.closing or m.runner is None or m.runner.closed:
            return
        if m.keep_alive is None:
            m.expires_at = None
        elif m.keep_alive <= 0:
            asyncio.get_running_loop().create_task(self._stop(m, "unload"))
        else:
            m.expires_at = time.time() + m.keep_alive
            m.timer = asyncio.get_running_loop().call_later(m.keep_alive, self._expire, m)

    def _expire(self, m: Loaded) -> None:
        m.timer = None
        if m.refs == 0 and not m.closing:
            log.info("keep_alive expired, unloading model=%s", m.name)
            asyncio.get_running_loop().create_task(self._stop(m, "unload"))

    async def _stop(self, m: Loaded, reason: str) -> None:
        m.closing = True
        if m.timer is not None:
            m.timer.cancel()
            m.timer = None
        if self._models.get(m.name) is m:
            del self._models[m.name]
        self._publish()
        if m.runner is not None:
            await m.runner.stop(reason)
        self._changed.set()

    def _on_exit(self, m: Loaded, runner: RunnerProcess) -> None:
        if not m.closing:
            log.error("runner for model=%s ended; the next request starts a new one", m.name)
            m.closing = True
            if self._models.get(m.name) is m:
                del self._models[m.name]
            if m.timer is not None:
                m.timer.cancel()
        self._publish()
        self._changed.set()

    async def _unload(self, name: str) -> bool:
        m = self._models.get(name)
        if m is None:
            return False
        if not m.ready.done():
            try:
                await asyncio.shield(m.ready)
            except Exception:
                return False
        await self._stop(m, "unload")
        return True

    async def _engine_stats(self, timeout: float) -> tuple[list[dict[str, Any]], int]:
        """Ask every ready runner for its counters at once; a runner that does not answer counts as idle."""
        asked: list[tuple[Loaded, Call]] = []
        for m in self._models.values():
            if m.closing or m.runner is None or not m.ready.done() or m.ready.exception() is not None:
                continue
            call = Call()
            m.runner.send("stats", call)
            asked.append((m, call))
        rows = []
        for m, call in asked:
            try:
                engine = await asyncio.wait_for(asyncio.wrap_future(call.future), timeout)
            except Exception:  # noqa: BLE001 - a scrape must not fail because one runner is slow or gone
                engine = {}
            rows.append(m.usage(engine if isinstance(engine, dict) else {}))
        return rows, self._pending_loads

    async def _specs(self) -> list[Loaded]:
        return list(self._models.values())

    def _publish(self) -> None:
        """Make the view of the state as it is now (loop thread, after every change; see ``SchedulerView``)."""
        self._view = SchedulerView(tuple(m.view() for m in self._models.values() if not m.closing),
                                   self._waiting())

    async def _shutdown(self, deadline: float) -> None:
        end = time.monotonic() + deadline
        while any(m.refs for m in self._models.values()) and time.monotonic() < end:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.01, end - time.monotonic()))
            except TimeoutError:
                break
        models = list(self._models.values())
        for m in models:
            if m.runner is not None and m.refs:
                log.warning("shutdown deadline passed, ending %d request(s) of model=%s", m.refs, m.name)
                m.runner.fail_all(ShuttingDown())
        stops = [self._stop(m, "unload") for m in models]
        if self._vocab is not None:
            stops.append(self._vocab.stop("unload"))
        await gather_quietly(stops)
