"""How much memory a model needs, how much the machine has, and which GPUs it has.

The estimate is made before a runner starts, from the GGUF header alone (the
server never loads llama.cpp): weights (the files' sizes), the KV cache for the
chosen context and type, and the compute buffers llama.cpp allocates for one
batch. It is deliberately a little pessimistic: refusing a load up front is
better than a machine that swaps or a runner killed by the OOM killer.

GPUs come from NVML when ``pynvml`` is importable, else from ``nvidia-smi``; on
Apple silicon, Metal is one GPU sharing the machine's unified memory
(``sysctl hw.memsize``). Where neither finds one and this install's native build has
another GPU backend (Vulkan: AMD and Intel GPUs), a subprocess asks llama.cpp itself
(``python -m power.runner.probe``). Every command goes through an injectable runner, so
tests feed captured output. ``place`` decides which GPUs hold a runner's
offloaded share: the fewest that fit, or all of them with ``OLLAMA_SCHED_SPREAD``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from power import python_command
from power.engine.options import LoadOptions
from power.errors import PowerError

__all__ = [
    "GPU",
    "MemoryEstimate",
    "ModelFacts",
    "OutOfMemory",
    "Placement",
    "detect_gpus",
    "detect_metal",
    "estimate",
    "fit_layers",
    "model_facts",
    "nvml_gpus",
    "parse_memsize",
    "parse_nvidia_smi",
    "place",
    "processor_split",
    "prompt_cache_bytes",
    "read_meminfo",
    "remote_share",
]

log = logging.getLogger(__name__)

_KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
             "q5_0": 22 / 32, "q5_1": 24 / 32, "iq4_nl": 18 / 32}
_OVERHEAD = 64 << 20  # interpreter, llama.cpp's own tables, allocator slack
_PROMPT_CACHE_MAX = 8 << 30  # llama-server's --cache-ram default


class OutOfMemory(PowerError):
    """The model does not fit in the memory that is available."""


@dataclass(frozen=True)
class ModelFacts:
    """What the GGUF header says that the scheduler needs."""

    architecture: str = ""
    n_layer: int = 0
    n_embd: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    key_length: int = 0
    value_length: int = 0
    n_vocab: int = 0
    n_ctx_train: int = 0
    embedding: bool = False
    draft: "ModelFacts | None" = None  # the draft model's, which runs beside it with the same contexts


@lru_cache(maxsize=64)
def _facts(path: str, mtime_ns: int) -> ModelFacts:
    from power.store.gguf import read_gguf  # pure Python: no llama.cpp in the server

    f = read_gguf(path, max_array_items=1024)

    def num(suffix: str, default: int = 0) -> int:
        v = f.arch_value(suffix, default)
        if isinstance(v, list):  # per-layer arrays (some architectures): take the largest
            v = max((x for x in v if isinstance(x, int)), default=default)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    n_embd, n_head = num("embedding_length"), num("attention.head_count")
    head_dim = n_embd // n_head if n_head else 0
    vocab = num("vocab_size") or _array_len(f.get("tokenizer.ggml.tokens"))
    pooling = f.arch_value("pooling_type")
    return ModelFacts(
        architecture=f.architecture, n_layer=num("block_count"), n_embd=n_embd, n_head=n_head,
        n_head_kv=num("attention.head_count_kv", n_head), key_length=num("attention.key_length", head_dim),
        value_length=num("attention.value_length", head_dim), n_vocab=vocab, n_ctx_train=num("context_length"),
        embedding=isinstance(pooling, int) and not isinstance(pooling, bool) and pooling > 0)


def _array_len(v: object) -> int:
    if isinstance(v, list):
        return len(v)
    n = getattr(v, "count", None)
    return int(n) if isinstance(n, int) else 0


def model_facts(path: str | Path, draft: str | Path | None = None) -> ModelFacts:
    """Read (and cache) the facts of a GGUF file, and of its draft model's; unreadable headers give empty facts."""
    p = Path(path)
    try:
        facts = _facts(str(p), p.stat().st_mtime_ns)
    except (OSError, PowerError) as exc:
        log.warning("cannot read model header path=%s: %s", p, exc)
        facts = ModelFacts()
    return replace(facts, draft=model_facts(draft)) if draft else facts


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    compute: int
    gpus: tuple[tuple[int, int], ...] = ()  # (GPU index, bytes) of the offloaded share, once placed
    prompt_cache: int = 0  # the bound of the prompt states kept in host memory (never offloaded)
    remote: int = 0  # the share on llama.cpp RPC servers (other machines' memory)

    @property
    def total(self) -> int:
        """The model's own size: what may be offloaded."""
        return self.weights + self.kv_cache + self.compute

    @property
    def host(self) -> int:
        """The most the runner holds in system memory, its prompt cache included."""
        return self.total + self.prompt_cache - self.remote


def prompt_cache_bytes(mib: int, available: int) -> int:
    """The bound of a runner's prompt cache in host memory: ``mib`` (``A3S_POWER_CACHE_RAM``), or for -1 an
    eighth of ``available`` (what the machine has free beside the model), at most 8 GiB."""
    if mib >= 0:
        return mib << 20
    return min(_PROMPT_CACHE_MAX, max(0, available) // 8)


def estimate(facts: ModelFacts, weights: int, load: LoadOptions, cache_ram: int = 0) -> MemoryEstimate:
    """Estimate the resident size of a runner for ``load`` (bytes), with ``cache_ram`` for its prompt cache.

    ``weights`` are the files' bytes (a draft model's included); a draft model's KV cache and compute buffers
    (its context has the model's sequences, contexts and batch) are added to the model's."""
    n_ctx = load.num_ctx
    kv_type = load.kv_cache_type if load.kv_cache_type in _KV_BYTES else "f16"
    kv = compute = 0
    for f in (facts, facts.draft):
        if f is None:
            continue
        per_token = f.n_layer * f.n_head_kv * (f.key_length + f.value_length) * _KV_BYTES[kv_type]
        # Each parallel sequence gets its own num_ctx (not a shared, unified cache), as Ollama sizes it.
        kv += 0 if facts.embedding else int(per_token * n_ctx * load.num_parallel)
        ubatch = min(load.num_batch, n_ctx)
        # logits + activations of one micro-batch, and (without flash attention) the attention scores.
        compute += 4 * ubatch * (f.n_vocab + 6 * f.n_embd)
        if load.flash_attn_mode != 1:
            compute += 4 * ubatch * f.n_head * n_ctx
    return MemoryEstimate(weights, kv, compute + _OVERHEAD, prompt_cache=0 if facts.embedding else cache_ram)


def read_meminfo(path: str = "/proc/meminfo") -> tuple[int, int]:
    """Return (total, available) system memory in bytes; (0, 0) where unknown."""
    total = avail = 0
    try:
        with open(path) as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    kib = int(rest.split()[0]) * 1024
                    if key == "MemTotal":
                        total = kib
                    else:
                        avail = kib
    except (OSError, ValueError, IndexError):
        return 0, 0
    return total, avail


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    total: int
    free: int
    library: str = "cuda"  # "metal": unified memory, shared with the system


Run = Callable[[Sequence[str]], str]


def _run(cmd: Sequence[str], timeout: float = 10) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=True).stdout


def parse_nvidia_smi(text: str) -> list[GPU]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        try:
            gpus.append(GPU(int(parts[0]), parts[1], int(float(parts[2])) << 20, int(float(parts[3])) << 20))
        except ValueError:
            continue
    return gpus


def parse_memsize(text: str) -> int:
    """Read ``sysctl -n hw.memsize`` (or ``sysctl hw.memsize``: ``hw.memsize: N``); 0 where unreadable."""
    value = text.strip().rpartition(":")[2].strip()
    return int(value) if value.isdigit() else 0


def detect_metal(run: Run = _run) -> list[GPU]:
    """Apple silicon's GPU: one device over the unified memory."""
    try:
        total = parse_memsize(run(["sysctl", "-n", "hw.memsize"]))
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("sysctl failed: %s", exc)
        return []
    if not total:
        return []
    # Metal's recommended working set: about two thirds of memory on small machines, three quarters above 36 GiB.
    usable = total * 3 // 4 if total > 36 << 30 else total * 2 // 3
    return [GPU(0, "Apple Metal", total, usable, library="metal")]


def nvml_gpus(nvml: Any) -> list[GPU] | None:
    """NVIDIA GPUs through NVML (the ``pynvml`` module); None when NVML does not answer."""
    errors = (OSError, RuntimeError, getattr(nvml, "NVMLError", RuntimeError))  # no driver, no library
    try:
        nvml.nvmlInit()
    except errors as exc:
        log.info("NVML is not available: %s", exc)
        return None
    try:
        gpus = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GPU(i, name.decode() if isinstance(name, bytes) else str(name), int(mem.total),
                            int(mem.free)))
        return gpus
    except errors as exc:
        log.info("NVML query failed: %s", exc)
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except errors as exc:
            log.debug("NVML shutdown failed: %s", exc)


def _import_nvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


# Shared libraries of ggml's GPU backends other than Metal (built in, or loadable at run time).
_GPU_BACKEND_LIBS = ("vulkan", "cuda", "hip", "sycl", "musa", "opencl", "cann")


def gpu_backend_built(lib_dir: Path | None = None) -> bool:
    """Whether this install's native libraries include a ggml GPU backend (found without loading them)."""
    if lib_dir is None:
        lib_dir = Path(os.environ.get("A3S_POWER_LIB_DIR") or Path(__file__).resolve().parents[1] / "lib")
    try:
        names = [p.name for p in lib_dir.iterdir()]
    except OSError:
        return False
    return any(n.startswith(f"libggml-{b}") or n.startswith(f"ggml-{b}") for n in names for b in _GPU_BACKEND_LIBS)


def parse_probe(text: str) -> list[GPU]:
    """Parse ``python -m power.runner.probe``'s JSON (its last line); [] for anything else."""
    lines = [ln for ln in text.splitlines() if ln.startswith("[")]
    try:
        rows = json.loads(lines[-1]) if lines else []
        gpus = []
        for r in rows:
            library = "".join(c for c in str(r["name"]) if not c.isdigit()).lower() or "gpu"
            gpus.append(GPU(int(r["index"]), str(r.get("description") or r["name"]), int(r["total"]),
                            int(r["free"]), library=library))
        return gpus
    except (ValueError, KeyError, TypeError) as exc:
        log.info("GPU probe gave no usable answer: %s", exc)
        return []


def probe_gpus(run: Run | None = None) -> list[GPU]:
    """GPUs as llama.cpp's own backends see them, from a subprocess."""
    try:
        cmd = python_command("power.runner.probe")
        return parse_probe(run(cmd) if run else _run(cmd, timeout=60))  # loading GPU backends takes a while
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("GPU probe failed: %s", exc)
        return []


def detect_gpus(run: Run | None = None, *, nvml: Any = None, system: str | None = None,
                machine: str | None = None, gpu_backend: bool | None = None) -> list[GPU]:
    """The machine's GPUs: Metal on Apple silicon, else NVML or nvidia-smi, else (for a build with
    another GPU backend) llama.cpp's own devices; [] where there is none.

    ``run`` executes a command and returns its output; a test that gives one also
    decides whether NVML is used (``nvml``) and whether a GPU backend is built
    (``gpu_backend``), so the host's own GPUs never leak in.
    """
    system = (system or platform.system()).lower()
    machine = (machine or platform.machine()).lower()
    if system == "darwin":
        return detect_metal(run or _run) if machine in ("arm64", "aarch64") else []
    found = _nvidia_gpus(run, nvml)
    if found:
        return found
    if gpu_backend is None:
        gpu_backend = run is None and gpu_backend_built()
    return probe_gpus(run) if gpu_backend else []


def _nvidia_gpus(run: Run | None, nvml: Any) -> list[GPU]:
    if nvml is None and run is None:
        nvml = _import_nvml()
    if nvml is not None:
        found = nvml_gpus(nvml)
        if found is not None:
            return found
    try:
        out = (run or _run)(["nvidia-smi", "--query-gpu=index,name,memory.total,memory.free",
                             "--format=csv,noheader,nounits"])
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("nvidia-smi failed: %s", exc)
        return []
    return parse_nvidia_smi(out)


def processor_split(size: int, size_vram: int, gpus: Sequence[tuple[int, int]] = ()) -> str:
    """Describe where a model runs, as ``ollama ps`` does ("100% CPU", "48%/52% CPU/GPU").

    A share spread over several GPUs adds their split: "100% GPU (50%/50% GPU 0/1)".
    """
    if size <= 0 or size_vram <= 0:
        return "100% CPU"
    if size_vram >= size:
        text = "100% GPU"
    else:
        gpu = round(100 * size_vram / size)
        text = f"{100 - gpu}%/{gpu}% CPU/GPU"
    if len(gpus) > 1:
        shares = "/".join(f"{round(100 * b / size_vram)}%" for _, b in gpus)
        text += f" ({shares} GPU {'/'.join(str(i) for i, _ in gpus)})"
    return text


def vram_share(est: MemoryEstimate, load: LoadOptions, facts: ModelFacts, gpus: Sequence[GPU]) -> int:
    """Bytes of ``est`` that live on GPUs for ``load.num_gpu`` offloaded layers."""
    if not gpus or load.num_gpu == 0:
        return 0
    layers = facts.n_layer + 1
    if load.num_gpu < 0 or load.num_gpu >= layers:
        return est.total
    return est.total * load.num_gpu // layers


def remote_share(est: MemoryEstimate, load: LoadOptions, facts: ModelFacts, remote_free: int,
                 local_free: int = 0) -> int:
    """Bytes of ``est`` on RPC servers with ``remote_free`` bytes free, beside local GPUs with ``local_free``.

    llama.cpp splits the offloaded layers over every device by free memory (its default ``tensor_split``);
    the servers never hold more than they have free.
    """
    if remote_free <= 0 or load.num_gpu == 0:
        return 0
    layers = facts.n_layer + 1
    offloaded = est.total if load.num_gpu < 0 or load.num_gpu >= layers else est.total * load.num_gpu // layers
    return min(remote_free, offloaded * remote_free // (remote_free + max(0, local_free)))


def fit_layers(est: MemoryEstimate, facts: ModelFacts, gpus: Sequence[GPU], remote_free: int = 0) -> int:
    """Layers to offload by default: -1 (all) when the whole model fits the free memory of the GPUs and of the
    RPC servers (``remote_free``: llama.cpp splits the offloaded layers over both), else those that do."""
    room = sum(g.free for g in gpus) + max(0, remote_free)
    layers = facts.n_layer + 1
    if not gpus and remote_free <= 0:
        return 0
    if facts.n_layer <= 0 or est.total <= room:
        return -1
    return max(0, min(layers - 1, room * layers // est.total))


@dataclass(frozen=True)
class Placement:
    """Bytes of a runner's offloaded share per GPU index, and what did not fit on the GPUs chosen."""

    per_gpu: tuple[tuple[int, int], ...] = ()
    short: int = 0

    @property
    def vram(self) -> int:
        return sum(b for _, b in self.per_gpu)


def place(est: MemoryEstimate, load: LoadOptions, facts: ModelFacts, gpus: Sequence[GPU], *,
          spread: bool = False) -> Placement:
    """Choose the GPUs for ``load``'s offloaded layers, given what each has free now.

    Without ``spread``, the fewest GPUs: ``main_gpu`` alone when it fits, else the
    one with the most free memory, else the largest ones until they fit. With
    ``spread``, every GPU. The share is split in proportion to free memory. The part of the offloaded
    layers that goes to RPC servers (``est.remote``) is theirs: only the rest is placed here.
    """
    need = max(0, vram_share(est, load, facts, gpus) - est.remote)
    if need <= 0:
        return Placement()
    by_free = sorted(gpus, key=lambda g: (-g.free, g.index))
    if spread:
        chosen = by_free
    else:
        alone = [g for g in by_free if g.free >= need]
        main = [g for g in alone if g.index == load.main_gpu]
        chosen = (main or alone)[:1]
        if not chosen:
            room = 0
            for g in by_free:
                chosen.append(g)
                room += g.free
                if room >= need:
                    break
    room = sum(max(0, g.free) for g in chosen)
    split: list[tuple[int, int]] = []
    left = need
    for n, g in enumerate(chosen):
        share = left if n == len(chosen) - 1 else (need * max(0, g.free) // room if room else need // len(chosen))
        split.append((g.index, share))
        left -= share
    return Placement(tuple(sorted(split)), max(0, need - room))
