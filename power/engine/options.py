"""Ollama's request options: types, valid ranges, defaults, and the split into load-time and per-request settings.

``OPTIONS`` is the one table of every option: its type and the range a value
must lie in. Requests (``parse_options``) and Modelfiles / ``/api/create``
(``power.store.params``) are checked against it, so nothing outside it reaches
the engine or llama.cpp; a value outside is a 400 naming the option and its
range. Within the range, load-time values are then fitted to the model and the
machine (``LoadOptions.from_options``) and per-request ones to the loaded
context (``Engine``):

=================  =======================  =====================================================
option             valid range              then
=================  =======================  =====================================================
num_ctx            int32                    below 4 -> 4; 0 -> the default; at most the model's
                                            training context and 2^24
num_batch          1 .. 2^31-1              at most 8192 (llama.cpp's n_batch and n_ubatch)
num_gpu            -1 .. 2^31-1             -1 = as many layers as fit; past the layer count = all
main_gpu           0 .. 2^31-1              an index the GPU backend does not have is ignored
num_thread         0 .. 2^31-1              0 = one per CPU; at most one per CPU (and 512, ggml's
                                            limit): threads past the cores only slow decoding
num_keep           -1 .. 2^31-1             -1 keeps as much of the prompt's start as fits
seed               int64 (Go's int)         negative = random; otherwise taken modulo 2^32
num_predict        -2 .. 2^31-1             -1 = until the end, -2 = fill the context; at most
                                            the context
top_k              -1 .. 2^31-1             0 or -1 = off; at most the vocabulary
repeat_last_n      -1 .. 2^31-1             -1 = the whole context; at most the context
draft_num_predict  0 .. 2^31-1              tokens drafted a step with draft_lookup or the model's
                                            DRAFT model; at most 64; unset: the DRAFT model's
                                            4, lookup's drafts as long as the gate finds pay
draft_p_min        0 .. 1                   a draft model's draft stops at a token it gives less
                                            probability (llama-server's --draft-p-min; 0 default)
top_p, min_p,      0 .. 1                   probabilities
typical_p
temperature        0 .. 3.4e38 (float32)    0 = greedy
repeat_penalty     > 0 .. 3.4e38            1 = off
presence_penalty,  -3.4e38 .. 3.4e38        0 = off
frequency_penalty
use_mmap           bool
draft_lookup       bool                     speculative decoding with drafts from the sequence's own
                                            prompt and output (prompt lookup)
stop               string or list of them   empty strings dropped
=================  =======================  =====================================================

Integers are JSON numbers with an integral value (``3.0`` is 3; ``1.5`` or
``1e308`` is refused); floats must be finite and representable as float32.
Deprecated options (``mirostat``, ``tfs_z``, ...) are typed and ranged too,
for Modelfiles, but requests drop them, as Ollama does.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from power.errors import InvalidRequest

__all__ = ["OPTIONS", "Option", "LoadOptions", "RequestOptions", "parse_options", "check_option", "OPTION_TYPES",
           "LOAD_KEYS", "DEPRECATED", "INT32_MAX", "MAX_PREDICT"]

log = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
F32_MAX = 3.4028234663852886e38


@dataclass(frozen=True, slots=True)
class Option:
    """One option's type and valid range (``lo`` itself excluded when ``above``)."""

    kind: type
    lo: float = 0
    hi: float = 0
    above: bool = False
    load: bool = False
    deprecated: bool = False

    def contains(self, value: float) -> bool:
        return (self.lo < value if self.above else self.lo <= value) and value <= self.hi

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.above:
            return f"{what} greater than {_num(self.lo)} and at most {_num(self.hi)}"
        return f"{what} from {_num(self.lo)} to {_num(self.hi)}"


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _int(lo: int = INT32_MIN, hi: int = INT32_MAX, **kw: Any) -> Option:
    return Option(int, lo, hi, **kw)


def _float(lo: float = -F32_MAX, hi: float = F32_MAX, **kw: Any) -> Option:
    return Option(float, lo, hi, **kw)


# Ollama's default draft_num_predict: what a draft model drafts a step when a request does not say.
DRAFT_MODEL_PREDICT = 4

# The ranges and what is done with a value in range are described in the module docstring.
OPTIONS: dict[str, Option] = {
    "num_ctx": _int(load=True), "num_batch": _int(1, load=True), "num_gpu": _int(-1, load=True),
    "main_gpu": _int(0, load=True), "use_mmap": Option(bool, load=True), "num_thread": _int(0, load=True),
    "num_keep": _int(-1), "seed": _int(INT64_MIN, INT64_MAX), "num_predict": _int(-2), "top_k": _int(-1),
    "top_p": _float(0.0, 1.0), "min_p": _float(0.0, 1.0), "typical_p": _float(0.0, 1.0),
    "repeat_last_n": _int(-1), "temperature": _float(0.0), "repeat_penalty": _float(0.0, above=True),
    "presence_penalty": _float(), "frequency_penalty": _float(), "stop": Option(list),
    "draft_num_predict": _int(0), "draft_lookup": Option(bool), "draft_p_min": _float(0.0, 1.0),
    # Deprecated: accepted so old Modelfiles and clients keep working; requests drop them (Ollama warns too).
    **{name: Option(bool, deprecated=True) for name in ("penalize_newline", "low_vram", "f16_kv", "logits_all",
                                                         "vocab_only", "use_mlock", "numa")},
    "mirostat": _int(0, 2, deprecated=True), "mirostat_tau": _float(deprecated=True),
    "mirostat_eta": _float(deprecated=True), "tfs_z": _float(deprecated=True), "num_gqa": _int(0, deprecated=True),
}
OPTION_TYPES: dict[str, type] = {k: o.kind for k, o in OPTIONS.items() if not o.deprecated}
LOAD_KEYS = tuple(k for k, o in OPTIONS.items() if o.load)
DEPRECATED = frozenset(k for k, o in OPTIONS.items() if o.deprecated)
GO_TYPE = {int: "int", float: "float32", bool: "bool", list: "[]string"}

MAX_PREDICT = 1 << 20
MAX_CTX = 1 << 24  # past any model's training context; bounds a model that does not say its own
MAX_BATCH = 8192
MAX_THREADS = 512  # GGML_MAX_N_THREADS


def check_option(key: str, value: float) -> None:
    """Refuse a number outside ``key``'s range with a 400 that names the option and the range."""
    spec = OPTIONS[key]
    if not spec.contains(value):
        raise InvalidRequest(f'option "{key}" must be {spec.describe()} (got {_num(value)})')


def _coerce(key: str, value: Any) -> Any:
    spec = OPTIONS[key]
    kind = spec.kind
    bad = InvalidRequest(f'option "{key}" must be of type {GO_TYPE[kind]}')
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if kind is list:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise bad
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if isinstance(value, float) and not math.isfinite(value):
        raise bad
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise InvalidRequest(f'option "{key}" must be an integer (got {value!r})')
    check_option(key, value)
    return int(value) if kind is int else float(value)


def parse_options(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check the types and ranges of a request's ``options``; unknown and deprecated keys are dropped."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidRequest("options must be an object")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in OPTION_TYPES:
            if value is None:
                continue
            out[key] = _coerce(key, value)
        elif key in DEPRECATED:
            log.debug("ignoring deprecated option %s", key)
        else:
            log.warning("invalid option provided option=%s", key)
    return out


def max_threads() -> int:
    """The most threads a model runs with: one per CPU this process may use, within ggml's limit."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS))


def default_threads() -> int:
    # llama.cpp scales poorly past the physical cores; on these machines all cores are physical.
    return max_threads()


@dataclass(frozen=True)
class LoadOptions:
    """What a loaded model was loaded with; a request that differs here needs a reload."""

    num_ctx: int = 4096
    num_batch: int = 512
    num_gpu: int = -1
    main_gpu: int = 0
    use_mmap: bool = True
    num_thread: int = 0
    num_parallel: int = 1
    flash_attention: str = "auto"
    kv_cache_type: str = "f16"
    # The speculation gate (Settings.spec_costs): "" measures the costs, "off" drafts whenever a request asks,
    # "STEP,ROW,DRAFT" takes them as given in microseconds (a target step STEP + ROW a row, a draft model
    # step DRAFT), for tests.
    spec_costs: str = ""
    # Sampling through llama.cpp's whole chain, without the engine's shortcuts (Settings.reference_sampling).
    reference_sampling: bool = False
    # Each step's batch levelled for llama.cpp's ubatches (Settings.level_batch); off decodes it as it is.
    level_batch: bool = True

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], *, default_ctx: int = 4096, num_parallel: int = 1,
                     flash_attention: str = "auto", kv_cache_type: str = "f16",
                     default_gpu: int = -1, spec_costs: str = "", reference_sampling: bool = False,
                     level_batch: bool = True) -> "LoadOptions":
        """Fit options (already in their ranges, see ``parse_options``) to what the engine can run."""
        return cls(
            num_ctx=max(4, min(int(opts.get("num_ctx", default_ctx) or default_ctx), MAX_CTX)),
            num_batch=max(1, min(int(opts.get("num_batch", 512)), MAX_BATCH)),
            num_gpu=max(-1, min(int(opts.get("num_gpu", default_gpu)), INT32_MAX)),
            main_gpu=max(0, min(int(opts.get("main_gpu", 0)), INT32_MAX)),
            use_mmap=bool(opts.get("use_mmap", True)),
            num_thread=max(0, min(int(opts.get("num_thread", 0)), max_threads())),
            num_parallel=max(1, num_parallel),
            flash_attention=flash_attention,
            kv_cache_type=kv_cache_type,
            spec_costs=spec_costs,
            reference_sampling=reference_sampling,
            level_batch=level_batch,
        )

    @property
    def threads(self) -> int:
        return self.num_thread or default_threads()

    @property
    def spec_gate(self) -> tuple[int, float, float, float]:
        """pw_engine_params' spec_gate (1 measured, 0 off, 2 fixed) and fixed costs, from ``spec_costs``."""
        v = self.spec_costs.strip().lower()
        if v in ("off", "0"):
            return 0, 0.0, 0.0, 0.0
        try:
            step, row, draft = (float(x) for x in v.split(","))
        except ValueError:
            return 1, 0.0, 0.0, 0.0
        return 2, step, row, draft

    @property
    def flash_attn_mode(self) -> int:
        v = self.flash_attention.lower()
        if v in ("1", "true", "on", "enabled"):
            return 1
        if v in ("0", "false", "off", "disabled"):
            return 0
        return -1


@dataclass
class RequestOptions:
    """Per-request generation settings, with Ollama's defaults."""

    num_keep: int = 4
    seed: int = -1
    num_predict: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    temperature: float = 0.8
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    draft_lookup: bool = False
    draft_num_predict: int | None = None  # unset: DRAFT_MODEL_PREDICT for a draft model, lookup up to DRAFT_MAX
    draft_p_min: float = 0.0

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> "RequestOptions":
        r = cls()
        for key in ("num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n",
                    "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty", "draft_lookup",
                    "draft_num_predict", "draft_p_min"):
            if key in opts:
                setattr(r, key, opts[key])
        if "stop" in opts:
            r.stop = [s for s in opts["stop"] if s]
        if r.num_predict > MAX_PREDICT:
            r.num_predict = MAX_PREDICT
        if r.num_predict < -2:
            r.num_predict = -1
        if r.repeat_penalty <= 0:
            raise InvalidRequest("repeat_penalty must be greater than 0")
        return r
