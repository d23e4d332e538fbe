"""Ollama's request options: types, defaults, and the split into load-time and per-request settings."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from power.errors import InvalidRequest

__all__ = ["LoadOptions", "RequestOptions", "parse_options", "OPTION_TYPES", "LOAD_KEYS"]

log = logging.getLogger(__name__)

# Every option Ollama accepts, with its type. Load-time options force a reload.
OPTION_TYPES: dict[str, type] = {
    "num_ctx": int, "num_batch": int, "num_gpu": int, "main_gpu": int, "use_mmap": bool, "num_thread": int,
    "num_keep": int, "seed": int, "num_predict": int, "top_k": int, "top_p": float, "min_p": float,
    "typical_p": float, "repeat_last_n": int, "temperature": float, "repeat_penalty": float,
    "presence_penalty": float, "frequency_penalty": float, "stop": list, "draft_num_predict": int,
}
LOAD_KEYS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")
# Accepted for compatibility and ignored (Ollama warns about them too).
DEPRECATED = {"penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock", "mirostat",
              "mirostat_tau", "mirostat_eta", "tfs_z", "numa", "num_gqa"}
GO_TYPE = {int: "int", float: "float32", bool: "bool", list: "[]string"}

MAX_PREDICT = 1 << 20


def _coerce(key: str, value: Any) -> Any:
    kind = OPTION_TYPES[key]
    bad = InvalidRequest(f'option "{key}" must be of type {GO_TYPE[kind]}')
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if kind is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            return int(value)
        raise bad
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):
            raise bad
        return value
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise bad


def parse_options(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check types of a request's ``options``; unknown and deprecated keys are dropped with a log line."""
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


def default_threads() -> int:
    # llama.cpp scales poorly past the physical cores; on these machines all cores are physical.
    return max(1, os.cpu_count() or 1)


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

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], *, default_ctx: int = 4096, num_parallel: int = 1,
                     flash_attention: str = "auto", kv_cache_type: str = "f16",
                     default_gpu: int = -1) -> "LoadOptions":
        return cls(
            num_ctx=max(4, int(opts.get("num_ctx", default_ctx) or default_ctx)),
            num_batch=max(1, min(int(opts.get("num_batch", 512)), 8192)),
            num_gpu=int(opts.get("num_gpu", default_gpu)),
            main_gpu=int(opts.get("main_gpu", 0)),
            use_mmap=bool(opts.get("use_mmap", True)),
            num_thread=max(0, int(opts.get("num_thread", 0))),
            num_parallel=max(1, num_parallel),
            flash_attention=flash_attention,
            kv_cache_type=kv_cache_type,
        )

    @property
    def threads(self) -> int:
        return self.num_thread or default_threads()

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

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> "RequestOptions":
        r = cls()
        for key in ("num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n",
                    "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty"):
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
