"""Settings: TOML file, then environment, then request options.

This is the only module that reads ``os.environ``. ``OLLAMA_*`` names are
honoured for drop-in use, ``A3S_POWER_*`` for settings of our own.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Settings", "load_settings", "parse_bool", "parse_host"]

DEFAULT_PORT = 11434


def parse_bool(value: str) -> bool:
    """Read a boolean the way Ollama does: unparsable values count as true."""
    v = value.strip().strip("'\"").lower()
    if v in ("", "0", "false", "f", "no", "off"):
        return False
    return True


def parse_host(value: str) -> tuple[str, str, int]:
    """Parse ``OLLAMA_HOST`` (``[scheme://]host[:port][/path]``) into scheme, host, port."""
    v = value.strip().strip("'\"")
    scheme = "http"
    if "://" in v:
        scheme, v = v.split("://", 1)
    v = v.split("/", 1)[0]
    default_port = {"http": DEFAULT_PORT, "https": 443}.get(scheme, DEFAULT_PORT)
    host, port = v, default_port
    if v.startswith("["):  # [::1]:port
        end = v.find("]")
        host = v[1:end]
        rest = v[end + 1:]
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif v.count(":") == 1:
        h, p = v.split(":")
        host = h
        if p.isdigit():
            port = int(p)
    if not host:
        host = "127.0.0.1"
    return scheme, host, port


@dataclass(frozen=True)
class Settings:
    """Every setting of a3s-power, resolved once."""

    home: Path
    models: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    scheme: str = "http"
    keep_alive: str = "5m"
    num_parallel: int = 1
    max_loaded_models: int = 0
    max_queue: int = 512
    context_length: int = 4096
    origins: tuple[str, ...] = ()
    flash_attention: str = "auto"
    kv_cache_type: str = "f16"
    # MiB of host memory per runner for the prompt states of sequences given to other prompts (-1: from
    # free memory, see power.runner.memory.prompt_cache_bytes; 0: none).
    cache_ram: int = -1
    # MiB of disk per model for the prompt states a runner holds when it ends, read by the model's next
    # runner (0: none); under <home>/prompt-cache.
    cache_disk: int = 0
    # The speculation gate's costs, for tests (A3S_POWER_SPEC_COSTS, LoadOptions.spec_costs): "" measured.
    spec_costs: str = ""
    # Sampling through llama.cpp's whole sampler chain, to compare against (A3S_POWER_REFERENCE_SAMPLING).
    reference_sampling: bool = False
    # Each step's batch levelled for llama.cpp's ubatches (A3S_POWER_LEVEL_BATCH; off to compare against).
    level_batch: bool = True
    noprune: bool = False
    debug: int = 0
    load_timeout: float = 300.0
    api_key: str | None = None
    num_gpu: int | None = None
    # llama.cpp RPC servers (host:port) whose devices hold model layers beside the local ones.
    rpc_servers: tuple[str, ...] = ()
    sched_spread: bool = False
    prices: Mapping[str, Any] = field(default_factory=dict)
    # Registry transfers: a host table (registry host -> base URL, e.g. tests point
    # registry.ollama.ai at loopback), the Hugging Face endpoint, and parallel streams.
    registry_hosts: Mapping[str, str] = field(default_factory=dict)
    hf_endpoint: str = "https://huggingface.co"
    max_transfer_streams: int = 4
    # Pulls and pushes may reach loopback, link-local and private addresses (a local registry or mirror).
    allow_private_pulls: bool = False
    # Bounded work and input (reliability P6-P8); a value <= 0 turns a timeout off.
    first_token_timeout: float = 300.0  # seconds from dispatch to a runner until the first output
    request_timeout: float = 1800.0  # seconds a whole generation or embedding may take
    header_timeout: float = 10.0  # seconds a client has to send its request line and headers
    body_min_rate: int = 1024  # bytes/s a request body must average once body_grace has passed
    body_grace: float = 10.0  # seconds a body may take before the minimum rate applies
    shutdown_timeout: float = 25.0  # seconds streams may run on after SIGTERM before they are ended
    thread_idle: float = 30.0  # seconds a request thread waits for work before it ends (memory comes back)
    # Stored /v1/responses (store: true): the oldest go first past any bound; a value <= 0 lifts that bound.
    responses_max_count: int = 10_000
    responses_max_age: float = 30 * 86400.0  # seconds
    responses_max_bytes: int = 1 << 30

    @property
    def prompt_cache_dir(self) -> Path:
        return self.home / "prompt-cache"

    @property
    def usage_db(self) -> Path:
        return self.home / "usage.db"

    @property
    def responses_db(self) -> Path:
        return self.usage_db.with_name("responses.db")

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}"

    def with_(self, **changes: Any) -> "Settings":
        return replace(self, **changes)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip().strip("'\""):
        return default
    try:
        return int(raw.strip().strip("'\""))
    except ValueError:
        return default


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean variable, or ``default`` (the TOML's value) where it is unset or empty."""
    return parse_bool(env[name]) if env.get(name) else bool(default)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip().strip("'\"")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        return default


def _host_table(raw: str | None, cfg: Any) -> dict[str, str]:
    """Read ``host=url,host=url`` (env) over the ``[registry.hosts]`` TOML table."""
    table = {str(k).lower(): str(v) for k, v in cfg.items()} if isinstance(cfg, dict) else {}
    for item in (raw or "").split(","):
        host, sep, url = item.strip().strip("'\"").partition("=")
        if sep and host.strip() and url.strip():
            table[host.strip().lower()] = url.strip()
    return table


def _list(raw: str | None, cfg: Any) -> tuple[str, ...]:
    """Read ``a,b,c`` (env), else a TOML list or string; entries stripped, empties dropped."""
    if raw is None or not raw.strip().strip("'\""):
        items = cfg if isinstance(cfg, (list, tuple)) else str(cfg or "").split(",")
    else:
        items = raw.strip().strip("'\"").split(",")
    return tuple(str(i).strip() for i in items if str(i).strip())


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings from ``config.toml`` under the home folder and the environment."""
    env = os.environ if env is None else env
    home = Path(env.get("A3S_POWER_HOME") or Path.home() / ".a3s" / "power").expanduser()
    cfg: dict[str, Any] = {}
    cfg_path = home / "config.toml"
    if cfg_path.is_file():
        try:
            cfg = tomllib.loads(cfg_path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            cfg = {}
    models = Path(env.get("OLLAMA_MODELS") or cfg.get("models") or home / "models").expanduser()
    scheme, host, port = parse_host(env.get("OLLAMA_HOST") or cfg.get("host") or "127.0.0.1:11434")
    origins = tuple(o.strip() for o in (env.get("OLLAMA_ORIGINS") or "").split(",") if o.strip())
    origins += tuple(cfg.get("origins", ()))
    num_gpu_raw = env.get("OLLAMA_NUM_GPU")
    return Settings(
        home=home,
        models=models,
        host=host,
        port=port,
        scheme=scheme,
        keep_alive=(env.get("OLLAMA_KEEP_ALIVE") or str(cfg.get("keep_alive", "5m"))).strip().strip("'\""),
        num_parallel=max(1, _int(env, "OLLAMA_NUM_PARALLEL", int(cfg.get("num_parallel", 1)))),
        max_loaded_models=_int(env, "OLLAMA_MAX_LOADED_MODELS", int(cfg.get("max_loaded_models", 0))),
        max_queue=_int(env, "OLLAMA_MAX_QUEUE", int(cfg.get("max_queue", 512))),
        context_length=_int(env, "OLLAMA_CONTEXT_LENGTH", int(cfg.get("context_length", 4096))) or 4096,
        origins=origins,
        flash_attention=(env.get("OLLAMA_FLASH_ATTENTION") or str(cfg.get("flash_attention", "auto"))).lower(),
        kv_cache_type=(env.get("OLLAMA_KV_CACHE_TYPE") or str(cfg.get("kv_cache_type", "f16"))).lower(),
        cache_ram=max(-1, _int(env, "A3S_POWER_CACHE_RAM", int(cfg.get("cache_ram", -1)))),
        cache_disk=max(0, _int(env, "A3S_POWER_CACHE_DISK", int(cfg.get("cache_disk", 0)))),
        spec_costs=(env.get("A3S_POWER_SPEC_COSTS") or str(cfg.get("spec_costs", ""))).strip(),
        reference_sampling=_bool(env, "A3S_POWER_REFERENCE_SAMPLING", cfg.get("reference_sampling", False)),
        level_batch=_bool(env, "A3S_POWER_LEVEL_BATCH", cfg.get("level_batch", True)),
        noprune=parse_bool(env["OLLAMA_NOPRUNE"]) if "OLLAMA_NOPRUNE" in env else False,
        debug=_int(env, "OLLAMA_DEBUG", 0),
        load_timeout=float(_int(env, "OLLAMA_LOAD_TIMEOUT", 300)),
        api_key=env.get("A3S_POWER_API_KEY") or cfg.get("api_key") or None,
        num_gpu=int(num_gpu_raw) if num_gpu_raw and num_gpu_raw.strip().lstrip("-").isdigit() else None,
        rpc_servers=_list(env.get("A3S_POWER_RPC_SERVERS") or env.get("OLLAMA_RPC_SERVERS"), cfg.get("rpc_servers")),
        sched_spread=parse_bool(env["OLLAMA_SCHED_SPREAD"]) if "OLLAMA_SCHED_SPREAD" in env else False,
        prices=cfg.get("prices", {}),
        registry_hosts=_host_table(env.get("A3S_POWER_REGISTRY_HOSTS"),
                                   (cfg.get("registry") or {}).get("hosts")),
        hf_endpoint=(env.get("HF_ENDPOINT") or str((cfg.get("registry") or {}).get("hf_endpoint", ""))
                     or "https://huggingface.co").strip().strip("'\"").rstrip("/"),
        max_transfer_streams=max(1, _int(env, "OLLAMA_MAX_TRANSFER_STREAMS", 4)),
        allow_private_pulls=(parse_bool(env["A3S_POWER_ALLOW_PRIVATE_PULLS"])
                             if "A3S_POWER_ALLOW_PRIVATE_PULLS" in env
                             else bool((cfg.get("registry") or {}).get("allow_private", False))),
        first_token_timeout=_seconds(env, "A3S_POWER_FIRST_TOKEN_TIMEOUT",
                                     float(cfg.get("first_token_timeout", 300))),
        request_timeout=_seconds(env, "A3S_POWER_REQUEST_TIMEOUT", float(cfg.get("request_timeout", 1800))),
        header_timeout=_seconds(env, "A3S_POWER_HEADER_TIMEOUT", float(cfg.get("header_timeout", 10))),
        body_min_rate=max(0, _int(env, "A3S_POWER_BODY_MIN_RATE", int(cfg.get("body_min_rate", 1024)))),
        body_grace=_seconds(env, "A3S_POWER_BODY_GRACE", float(cfg.get("body_grace", 10))),
        shutdown_timeout=_seconds(env, "A3S_POWER_SHUTDOWN_TIMEOUT", float(cfg.get("shutdown_timeout", 25))),
        thread_idle=_seconds(env, "A3S_POWER_THREAD_IDLE", float(cfg.get("thread_idle", 30))),
        responses_max_count=_int(env, "A3S_POWER_RESPONSES_MAX_COUNT", int(cfg.get("responses_max_count", 10_000))),
        responses_max_age=_seconds(env, "A3S_POWER_RESPONSES_MAX_AGE",
                                   float(cfg.get("responses_max_age", 30 * 86400))),
        responses_max_bytes=_int(env, "A3S_POWER_RESPONSES_MAX_BYTES",
                                 int(cfg.get("responses_max_bytes", 1 << 30))),
    )
