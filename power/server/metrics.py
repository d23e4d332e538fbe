"""Prometheus metrics: our own families plus the llama.cpp-server and vLLM names that gateways scrape.

Each app owns a ``CollectorRegistry`` (tests build many apps). Counters and
histograms are updated as requests finish; gauges that describe the scheduler
(running and waiting requests, KV-cache usage, loaded models, memory, GPU) are
read from it at scrape time by a custom collector.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics", "CONTENT_TYPE"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _SchedulerCollector(Collector):
    """Gauges read from the scheduler when Prometheus scrapes."""

    def __init__(self, stats: Callable[[], dict[str, Any]], ps: Callable[[], list[dict[str, Any]]],
                 in_flight: Callable[[], int], quick: Callable[[], dict[str, Any]] | None = None) -> None:
        self.stats = stats
        self.quick = quick  # stats that never wait (for a scrape answered in the HTTP worker's event loop)
        self.ps = ps
        self.in_flight = in_flight
        self.local = threading.local()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            quick = self.quick if getattr(self.local, "quick", False) else None
            stats = (quick or self.stats)() or {}
        except Exception:  # a scrape must never fail because the scheduler is busy
            log.debug("scheduler stats unavailable", exc_info=True)
            stats = {}
        try:
            models = [m for m in self.ps() or [] if "status" not in m]  # loaded ones: not those still loading
        except Exception:
            models = []
        running = float(stats.get("running", self.in_flight()))
        waiting = float(stats.get("waiting", 0))
        kv = float(stats.get("kv_cache_usage", 0.0))
        for name, doc, value in (
            ("vllm:num_requests_running", "Requests running on a model", running),
            ("vllm:num_requests_waiting", "Requests waiting for a slot or a load", waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage, 0 to 1", kv),
            ("llamacpp:requests_processing", "Requests being processed", running),
            ("llamacpp:requests_deferred", "Requests deferred (queued)", waiting),
            ("llamacpp:kv_cache_usage_ratio", "KV-cache usage, 0 to 1", kv),
            ("llamacpp:kv_cache_tokens", "KV-cache cells in use", float(stats.get("kv_used", 0))),
            ("a3s_power_models_loaded", "Models loaded in runners", float(len(models))),
            ("a3s_power_queue_capacity", "Maximum pending requests", float(stats.get("queue_capacity", 0))),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        yield from self._per_model(models, stats.get("models") or [])
        yield from self._prompt_cache(stats.get("models") or [])
        yield from self._gpus(stats.get("gpus") or [])

    @staticmethod
    def _per_model(models: list[dict[str, Any]], usage: list[dict[str, Any]]) -> Iterable[GaugeMetricFamily]:
        mem = GaugeMetricFamily("a3s_power_model_memory_bytes", "Memory of a loaded model", labels=["model"])
        vram = GaugeMetricFamily("a3s_power_model_vram_bytes", "GPU memory of a loaded model", labels=["model"])
        for m in models:
            name = str(m.get("name", ""))
            mem.add_metric([name], float(m.get("size", 0) or 0))
            vram.add_metric([name], float(m.get("size_vram", 0) or 0))
        run = GaugeMetricFamily("a3s_power_model_requests_running", "Requests running on a model", labels=["model"])
        wait = GaugeMetricFamily("a3s_power_model_requests_waiting", "Requests waiting in a model's runner",
                                 labels=["model"])
        kv = GaugeMetricFamily("a3s_power_model_kv_cache_usage_ratio", "KV-cache usage of a model, 0 to 1",
                               labels=["model"])
        skipped = CounterMetricFamily("a3s_power_draft_skipped_steps", "Sequence steps the speculation gate "
                                      "left undrafted (drafting would have cost more than it gains)", labels=["model"])
        caught_up = CounterMetricFamily("a3s_power_draft_evaluated_tokens", "Tokens the draft model's context "
                                        "evaluated to catch up with its sequences (prompts, rejected drafts)",
                                        labels=["model"])
        copied = CounterMetricFamily("a3s_power_draft_copied_tokens", "Draft-model cells copied from another "
                                     "sequence holding the prefix instead of evaluated", labels=["model"])
        for u in usage:
            name = str(u.get("name", ""))
            run.add_metric([name], float(u.get("running", 0)))
            wait.add_metric([name], float(u.get("waiting", 0)))
            kv.add_metric([name], float(u.get("kv_cache_usage", 0.0)))
            skipped.add_metric([name], float(u.get("draft_skipped", 0)))
            caught_up.add_metric([name], float(u.get("draft_caught_up", 0)))
            copied.add_metric([name], float(u.get("draft_copied", 0)))
        yield from (mem, vram, run, wait, kv, skipped, caught_up, copied)

    @staticmethod
    def _prompt_cache(usage: list[dict[str, Any]]) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        """Each model's prompt cache per tier: kv (its sequences' cells), ram (saved states in host memory), disk
        (saved states in files)."""
        labels = ["model", "tier"]
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "bytes": GaugeMetricFamily("a3s_power_prompt_cache_bytes", "Bytes the prompt cache holds", labels=labels),
            "entries": GaugeMetricFamily("a3s_power_prompt_cache_entries",
                                         "Prompts the cache holds (sequences with cells, saved states)", labels=labels),
            "hits": CounterMetricFamily("a3s_power_prompt_cache_hits", "Requests that reused a cached prefix",
                                        labels=labels),
            "misses": CounterMetricFamily("a3s_power_prompt_cache_misses", "Requests that found no cached prefix",
                                          labels=labels),
            "restored_tokens": CounterMetricFamily("a3s_power_prompt_cache_restored_tokens",
                                                   "Prompt tokens reused instead of evaluated", labels=labels),
        }
        for u in usage:
            for tier, values in (u.get("prompt_cache") or {}).items():
                for key, family in families.items():
                    family.add_metric([str(u.get("name", "")), str(tier)], float(values.get(key, 0)))
        yield from families.values()

    @staticmethod
    def _gpus(gpus: list[dict[str, Any]]) -> Iterable[GaugeMetricFamily]:
        if not gpus:
            return
        used = GaugeMetricFamily("a3s_power_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("a3s_power_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        util = GaugeMetricFamily("a3s_power_gpu_utilization_ratio", "GPU utilisation, 0 to 1", labels=["gpu"])
        for i, g in enumerate(gpus):
            label = str(g.get("index", i))
            used.add_metric([label], float(g.get("used", 0)))
            total.add_metric([label], float(g.get("total", 0)))
            util.add_metric([label], float(g.get("utilization", 0)))
        yield from (used, total, util)


class Metrics:
    """Every metric family of one app."""

    def __init__(self, scheduler: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._lock = threading.Lock()
        self._in_flight = 0
        self._totals = [0.0, 0.0, 0.0, 0.0]  # prompt tokens, seconds, generated tokens, seconds
        self._http_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # see ``http``
        self.requests = Counter("a3s_power_http_requests", "HTTP requests", ["route", "method", "status"],
                                registry=r)
        self.request_seconds = Histogram("a3s_power_http_request_duration_seconds", "HTTP request duration",
                                         ["route"], buckets=_LATENCY, registry=r)
        self.tokens_in = Counter("a3s_power_prompt_tokens", "Prompt tokens evaluated", ["model"], registry=r)
        self.tokens_cached = Counter("a3s_power_prompt_cached_tokens", "Prompt tokens reused from the KV cache",
                                     ["model"], registry=r)
        self.tokens_out = Counter("a3s_power_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.drafted = Counter("a3s_power_draft_tokens", "Tokens drafted for speculative decoding", ["model"],
                               registry=r)
        self.draft_accepted = Counter("a3s_power_draft_accepted_tokens", "Drafted tokens the model accepted",
                                      ["model"], registry=r)
        self.ttft = Histogram("a3s_power_time_to_first_token_seconds", "Time to first token", ["model"],
                              buckets=_LATENCY, registry=r)
        self.inference = Histogram("a3s_power_inference_duration_seconds", "Whole inference duration",
                                   ["model"], buckets=_LATENCY, registry=r)
        self.load_seconds = Histogram("a3s_power_model_load_seconds", "Model load time", ["model"],
                                      buckets=_LATENCY, registry=r)
        self.evictions = Counter("a3s_power_model_evictions", "Models unloaded to make room or on expiry",
                                 registry=r)
        # llama.cpp server names
        self.lc_prompt_tokens = Counter("llamacpp:prompt_tokens", "Prompt tokens processed", registry=r)
        self.lc_prompt_seconds = Counter("llamacpp:prompt_seconds", "Prompt processing time", registry=r)
        self.lc_predicted = Counter("llamacpp:tokens_predicted", "Generated tokens", registry=r)
        self.lc_predicted_seconds = Counter("llamacpp:tokens_predicted_seconds", "Generation time", registry=r)
        self.lc_prompt_rate = Gauge("llamacpp:prompt_tokens_seconds", "Average prompt tokens/s", registry=r)
        self.lc_predicted_rate = Gauge("llamacpp:predicted_tokens_seconds", "Average generation tokens/s",
                                       registry=r)
        # vLLM names
        self.v_ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token", ["model_name"],
                                buckets=_LATENCY, registry=r)
        self.v_tpot = Histogram("vllm:time_per_output_token_seconds", "Time per output token", ["model_name"],
                                buckets=_TOKEN, registry=r)
        self.v_itl = Histogram("vllm:inter_token_latency_seconds", "Inter-token latency", ["model_name"],
                               buckets=_TOKEN, registry=r)
        self.v_e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency", ["model_name"],
                               buckets=_LATENCY, registry=r)
        self.v_queue = Histogram("vllm:request_queue_time_seconds", "Time waiting for a runner", ["model_name"],
                                 buckets=_LATENCY, registry=r)
        self.v_prompt = Counter("vllm:prompt_tokens", "Prompt tokens", ["model_name"], registry=r)
        self.v_generation = Counter("vllm:generation_tokens", "Generated tokens", ["model_name"], registry=r)
        self.v_success = Counter("vllm:request_success", "Finished requests", ["model_name", "finished_reason"],
                                 registry=r)
        self.v_drafted = Counter("vllm:spec_decode_num_draft_tokens", "Draft tokens", ["model_name"], registry=r)
        self.v_accepted = Counter("vllm:spec_decode_num_accepted_tokens", "Accepted draft tokens", ["model_name"],
                                  registry=r)
        if scheduler is not None:
            stats = getattr(scheduler, "scrape_stats", None) or getattr(scheduler, "stats", None)
            quick = (lambda: scheduler.scrape_stats(block=False)) if hasattr(scheduler, "scrape_stats") else None
            self._collector = _SchedulerCollector(stats if callable(stats) else dict, scheduler.ps,
                                                  lambda: self._in_flight, quick)
            r.register(self._collector)

    # -- updates --------------------------------------------------------------
    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def http(self, route: str, method: str, status: str, seconds: float) -> None:
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:  # labels() hashes and locks each time; routes, methods and statuses are few
            children = self._http_children[key] = (self.requests.labels(*key), self.request_seconds.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def generation(self, model: str, final: dict[str, Any], *, ttft: float | None, e2e: float,
                   output_tokens: int) -> None:
        """Record one finished generation from its final chunk's counts and durations (ns)."""
        prompt_all = int(final.get("prompt_eval_count") or 0)
        cached_n = min(int(final.get("cached_tokens") or 0), prompt_all)
        prompt_n = prompt_all - cached_n  # evaluated now; the throughput counters measure work done
        prompt_s = (final.get("prompt_eval_duration") or 0) / 1e9
        eval_n = int(final.get("eval_count") or output_tokens)
        eval_s = (final.get("eval_duration") or 0) / 1e9
        load_s = (final.get("load_duration") or 0) / 1e9
        self.tokens_in.labels(model).inc(prompt_n)
        self.tokens_cached.labels(model).inc(cached_n)
        self.tokens_out.labels(model).inc(eval_n)
        self.inference.labels(model).observe(e2e)
        self.v_e2e.labels(model).observe(e2e)
        self.v_prompt.labels(model).inc(prompt_all)  # vLLM counts whole prompts
        self.v_generation.labels(model).inc(eval_n)
        self.v_success.labels(model, str(final.get("done_reason") or "stop")).inc()
        drafted = int(final.get("draft_count") or 0)
        if drafted:
            accepted = min(int(final.get("draft_accepted") or 0), drafted)
            for counter, n in ((self.drafted, drafted), (self.draft_accepted, accepted), (self.v_drafted, drafted),
                               (self.v_accepted, accepted)):
                counter.labels(model).inc(n)
        if load_s > 0:
            self.load_seconds.labels(model).observe(load_s)
            self.v_queue.labels(model).observe(load_s)
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)
            self.v_ttft.labels(model).observe(ttft)
        if eval_n > 1 and eval_s > 0:
            self.v_tpot.labels(model).observe(eval_s / eval_n)
            self.v_itl.labels(model).observe(eval_s / eval_n)
        self.lc_prompt_tokens.inc(prompt_n)
        self.lc_prompt_seconds.inc(prompt_s)
        self.lc_predicted.inc(eval_n)
        self.lc_predicted_seconds.inc(eval_s)
        with self._lock:
            t = self._totals
            t[0] += prompt_n
            t[1] += prompt_s
            t[2] += eval_n
            t[3] += eval_s
            self.lc_prompt_rate.set(t[0] / t[1] if t[1] else 0.0)
            self.lc_predicted_rate.set(t[2] / t[3] if t[3] else 0.0)

    def render(self, wait: bool = True) -> bytes:
        """The scrape's text; ``wait=False``: with whatever the scheduler has at once (the worker's loop)."""
        collector = getattr(self, "_collector", None)
        if wait or collector is None:
            return generate_latest(self.registry)
        collector.local.quick = True
        try:
            return generate_latest(self.registry)
        finally:
            collector.local.quick = False
