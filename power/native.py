"""The C boundary: the only module that touches cffi.

It dlopens ``libpower_shim`` from the package's own ``lib`` folder (cffi ABI
mode), derives the cdef from the shim's header, checks the ABI version at
import, and turns every failing status code into a ``NativeError`` carrying
llama.cpp's message. Every native handle has exactly one owner object that
frees it (``close()``), with ``ffi.gc`` as a backstop.

cffi releases the GIL around every call, so a long ``step`` or ``embed`` does
not stall the other Python threads.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cffi

from power.errors import InvalidRequest, NativeError

__all__ = [
    "ABI_VERSION", "LIB_DIR", "argmax_rows", "top_k", "top_k_penalized", "Model", "ModelInfo", "Context", "Event",
    "StepResult", "Sampling",
    "Device", "devices", "quantize", "FTYPES", "GGML_TYPES", "NativeError", "GrammarError",
    "system_info", "llama_commit", "last_error", "Projector", "MediaPrompt", "MEDIA_MARKER", "E_TOOLONG",
    "POOLING_RANK", "load_vocab",
    "supports_rpc", "rpc_add_server", "rpc_serve",
    "DRAFT_MAX",
]

log = logging.getLogger("power.llama")

ABI_VERSION = 19
LIB_DIR = Path(os.environ.get("A3S_POWER_LIB_DIR") or Path(__file__).resolve().parent / "lib")

# llama_ftype values for the quantization types `create --quantize` accepts.
FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10,
          "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16,
          "q5_k_m": 17, "q6_k": 18, "bf16": 32}
# ggml_type values for the KV cache types Ollama accepts.
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}


class GrammarError(NativeError, InvalidRequest):
    """A grammar did not parse."""

    status = 400


def _cdef_from_header(text: str) -> str:
    body = text.split("/* CDEF-BEGIN */", 1)[1].split("/* CDEF-END */", 1)[0]
    return re.sub(r"\bPW_API\s+", "", body)


def _lib_name() -> str:
    if sys.platform == "darwin":
        return "libpower_shim.dylib"
    if sys.platform == "win32":
        return "power_shim.dll"
    return "libpower_shim.so"


def _load() -> tuple[cffi.FFI, object]:
    header = LIB_DIR / "power_shim.h"
    path = LIB_DIR / _lib_name()
    if not path.is_file() or not header.is_file():
        raise ImportError(f"a3s-power's native libraries are not built: {path} is missing "
                          "(run the build: see README)")
    ffi = cffi.FFI()
    ffi.cdef(_cdef_from_header(header.read_text()))
    if sys.platform == "win32":
        os.add_dll_directory(str(LIB_DIR))
    lib = ffi.dlopen(str(path))
    if lib.pw_abi_version() != ABI_VERSION:
        raise ImportError(f"libpower_shim ABI {lib.pw_abi_version()} does not match this package's {ABI_VERSION}")
    return ffi, lib


_ffi, _lib = _load()
DRAFT_MAX = int(_lib.PW_DRAFT_MAX)  # the most tokens a sequence drafts per step

_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR, 5: logging.DEBUG}


@_ffi.callback("void(int, const char *, void *)")
def _on_log(level: int, text: object, _data: object) -> None:
    try:
        msg = _ffi.string(text).decode("utf-8", "replace").rstrip()
        if msg:
            log.log(_LEVELS.get(level, logging.INFO), "%s", msg)
    except Exception:  # a logging failure must never unwind into C
        pass


_lib.pw_set_log(_on_log, _ffi.NULL, 3 if not log.isEnabledFor(logging.DEBUG) else 1)
_lib.pw_init(str(LIB_DIR).encode())


def last_error() -> str:
    """The shim's last error message on this thread (llama.cpp's reason where it gave one)."""
    return _ffi.string(_lib.pw_last_error()).decode("utf-8", "replace")


def _error(rc: int) -> NativeError:
    msg = last_error() or f"native call failed ({rc})"
    if rc == _lib.PW_E_GRAMMAR:
        return GrammarError(msg, rc)
    return NativeError(msg, rc)


def _check(rc: int) -> int:
    if rc < 0:
        raise _error(rc)
    return rc


def llama_commit() -> str:
    return _ffi.string(_lib.pw_llama_commit()).decode()


def system_info() -> str:
    return _ffi.string(_lib.pw_system_info()).decode()


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    description: str
    kind: str  # cpu | gpu | igpu | accel
    memory_free: int
    memory_total: int


def devices() -> list[Device]:
    """List the compute devices llama.cpp's backends found."""
    out = []
    dev = _ffi.new("pw_device *")
    for i in range(_lib.pw_device_count()):
        _check(_lib.pw_device_get(i, dev))
        out.append(Device(_ffi.string(dev.name).decode(), _ffi.string(dev.description).decode(),
                          ("cpu", "gpu", "igpu", "accel")[min(dev.type, 3)], dev.memory_free, dev.memory_total))
    return out


def supports_rpc() -> bool:
    """Whether this build has ggml's RPC backend (``POWER_RPC``)."""
    return bool(_lib.pw_supports_rpc())


def rpc_add_server(endpoint: str) -> int:
    """List the devices of the RPC server at ``host:port`` beside the local ones; return how many it has.

    llama.cpp aborts the process when the server does not answer: callers probe it first
    (``power.engine.rpc.probe``). Models loaded afterwards split their offloaded layers over every device.
    """
    return _check(_lib.pw_rpc_add_server(endpoint.encode()))


def rpc_serve(endpoint: str, threads: int, mem_bytes: int = 0, cache_dir: str | None = None) -> None:
    """Serve this machine's devices to RPC clients on ``host:port``; returns only by raising."""
    _check(_lib.pw_rpc_serve(endpoint.encode(), threads, mem_bytes,
                             os.fsencode(cache_dir) if cache_dir else _ffi.NULL))


def quantize(src: str | os.PathLike[str], dst: str | os.PathLike[str], ftype: str, nthreads: int = 0) -> None:
    """Quantize a GGUF file (F32/F16/BF16 input) to the named type with llama.cpp's quantizer."""
    key = ftype.lower()
    if key not in FTYPES:
        raise InvalidRequest(f"unsupported quantization type '{ftype}'")
    _check(_lib.pw_quantize(os.fsencode(src), os.fsencode(dst), FTYPES[key], nthreads))


@dataclass(frozen=True, slots=True)
class ModelInfo:
    n_ctx_train: int
    n_embd: int
    n_embd_out: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    n_swa: int
    size: int
    n_params: int
    token_bos: int
    token_eos: int
    token_eot: int
    token_sep: int
    ftype: int
    pooling: int  # the GGUF's pooling type (POOLING_*), -1 when it declares none
    n_cls_out: int
    add_bos: bool
    add_eos: bool
    add_sep: bool
    has_encoder: bool
    has_decoder: bool
    is_recurrent: bool


class Model:
    """A loaded GGUF model (weights, vocabulary, metadata)."""

    def __init__(self, path: str | os.PathLike[str], *, n_gpu_layers: int = -1, main_gpu: int = 0,
                 use_mmap: bool = True, use_mlock: bool = False, vocab_only: bool = False,
                 progress: Callable[[float], bool] | None = None) -> None:
        self.path = os.fspath(path)
        params = _lib.pw_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.main_gpu = main_gpu
        params.use_mmap = use_mmap
        params.use_mlock = use_mlock
        params.vocab_only = vocab_only
        cb = None
        if progress is not None:
            def _progress(p: float, _data: object) -> bool:
                try:
                    return bool(progress(p))
                except Exception:  # never unwind into C; a failing callback cancels
                    return False
            cb = _ffi.callback("bool(float, void *)", _progress)
            params.progress = cb
        p_params = _ffi.new("pw_model_params *", params)
        out = _ffi.new("pw_model **")
        try:
            rc = _lib.pw_model_load(os.fsencode(self.path), p_params, out)
        finally:
            del cb
        _check(rc)
        self._h = _ffi.gc(out[0], _lib.pw_model_free)
        info = _ffi.new("pw_model_info *")
        _check(_lib.pw_model_get_info(self._h, info))
        self.info = ModelInfo(**{f: getattr(info, f) for f in ModelInfo.__dataclass_fields__})
        self._buf = _ffi.new("char[]", 1 << 16)

    @property
    def handle(self) -> object:
        if self._h is None:
            raise NativeError("model is closed")
        return self._h

    def close(self) -> None:
        if self._h is not None:
            h, self._h = self._h, None
            _ffi.release(h)

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _str(self, fn: Callable[..., int], *args: object) -> str | None:
        n = fn(self.handle, *args, self._buf, len(self._buf))
        if n < 0:
            return None
        if n >= len(self._buf):
            big = _ffi.new("char[]", n + 1)
            n = fn(self.handle, *args, big, n + 1)
            return _ffi.string(big).decode("utf-8", "replace")
        return _ffi.string(self._buf).decode("utf-8", "replace")

    def metadata(self) -> dict[str, str]:
        """Scalar GGUF metadata as strings (arrays are summarised by llama.cpp)."""
        out = {}
        for i in range(_lib.pw_model_meta_count(self.handle)):
            k = self._str(_lib.pw_model_meta_key, i)
            v = self._str(_lib.pw_model_meta_value, i)
            if k is not None and v is not None:
                out[k] = v
        return out

    def meta(self, key: str) -> str | None:
        return self._str(_lib.pw_model_meta_get, key.encode())

    def description(self) -> str:
        return self._str(_lib.pw_model_desc) or ""

    def chat_template(self, name: str | None = None) -> str | None:
        p = _lib.pw_model_chat_template(self.handle, name.encode() if name else _ffi.NULL)
        return None if p == _ffi.NULL else _ffi.string(p).decode("utf-8", "replace")

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        out = _ffi.new("int32_t[]", cap)
        n = _lib.pw_tokenize(self.handle, data, len(data), out, cap, add_special, parse_special)
        if n < 0 and n != _lib.PW_E_TOOLONG and -n > cap:
            cap = -n
            out = _ffi.new("int32_t[]", cap)
            n = _lib.pw_tokenize(self.handle, data, len(data), out, cap, add_special, parse_special)
        _check(n)
        return list(_ffi.unpack(out, n))

    def detokenize(self, tokens: Sequence[int], *, remove_special: bool = False,
                   unparse_special: bool = False) -> str:
        n_tok = len(tokens)
        toks = _ffi.new("int32_t[]", list(tokens)) if n_tok else _ffi.NULL
        cap = max(64, n_tok * 8)
        out = _ffi.new("char[]", cap)
        n = _check_detok(_lib.pw_detokenize(self.handle, toks, n_tok, out, cap, remove_special, unparse_special))
        if n > cap:
            cap = n
            out = _ffi.new("char[]", cap)
            n = _check(_lib.pw_detokenize(self.handle, toks, n_tok, out, cap, remove_special, unparse_special))
        return _ffi.unpack(out, n).decode("utf-8", "replace")

    def token_bytes(self, token: int, *, special: bool = True) -> bytes:
        buf = _ffi.new("char[]", 256)
        n = _lib.pw_token_piece(self.handle, token, buf, 256, special)
        if n < -256:
            buf = _ffi.new("char[]", -n)
            n = _lib.pw_token_piece(self.handle, token, buf, -n, special)
        return _ffi.unpack(buf, _check(n))

    def is_eog(self, token: int) -> bool:
        return bool(_lib.pw_token_is_eog(self.handle, token))

    def grammar_accepts(self, grammar: str, text: str) -> bool:
        """Whether llama.cpp's grammar engine takes ``text`` (tokenized with special tokens) whole."""
        toks = self.tokenize(text, add_special=False, parse_special=True)
        arr = _ffi.new("int32_t[]", toks) if toks else _ffi.NULL
        return bool(_check(_lib.pw_grammar_accepts(self.handle, grammar.encode(), arr, len(toks))))


def _check_detok(n: int) -> int:
    # pw_detokenize answers -(bytes needed) when the buffer is small.
    if n < 0 and n not in (_lib.PW_E_INVALID, _lib.PW_E_INTERNAL):
        return -n
    return _check(n)


@dataclass(slots=True)
class Sampling:
    """Sampler settings of one request (Ollama's names and defaults)."""

    seed: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    temperature: float = 0.8
    repeat_last_n: int = 64
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    num_predict: int = -1
    logprobs: int = -1  # -1 none, 0 chosen token, N also the top N
    ignore_eos: bool = False
    grammar: str | None = None
    draft: int = 0  # prompt lookup: tokens drafted per step, at most DRAFT_MAX; 0 off
    draft_model: int = 0  # the context's draft model (set_draft): tokens drafted per step where lookup finds none
    draft_p_min: float = 0.0  # a model draft stops at a token whose draft probability is below this


@dataclass(frozen=True, slots=True)
class Event:
    """What one step produced for one sequence."""

    seq: int
    token: int
    finish: int
    text: bytes
    logprob: float
    top: tuple[tuple[int, float], ...]
    n_prompt: int
    n_cached: int
    n_gen: int
    t_prompt_us: int
    t_gen_us: int
    n_drafted: int = 0
    n_accepted: int = 0


@dataclass(frozen=True, slots=True)
class StepResult:
    events: list[Event]
    n_active: int
    n_decoded: int


FINISH_NONE, FINISH_STOP, FINISH_LENGTH, FINISH_CONTEXT, FINISH_CANCEL, FINISH_ERROR, FINISH_GRAMMAR = range(7)
# llama_pooling_type values (ModelInfo.pooling, Context's pooling=)
POOLING_NONE, POOLING_MEAN, POOLING_CLS, POOLING_LAST, POOLING_RANK = range(5)


# pw_stats's counters, as Context.stats() names them (the prompt cache's per tier: kv_*, ram_*).
_STATS = ("n_seq", "n_active", "n_ctx", "n_ctx_seq", "kv_used", "n_decode", "t_decode_us", "n_prompt_tokens",
          "n_gen_tokens", "n_reused_tokens", "kv_entries", "kv_hits", "kv_misses", "kv_shared_tokens", "kv_copies",
          "kv_waits", "ram_bytes", "ram_entries", "ram_budget", "ram_hits", "ram_misses", "ram_restored_tokens",
          "ram_saves", "ram_evictions", "disk_loaded", "disk_bytes", "disk_entries", "disk_hits", "disk_misses",
          "disk_restored_tokens", "disk_saves", "disk_evictions", "disk_loading", "n_draft_tokens",
          "n_draft_accepted", "n_draft_skipped", "n_draft_caught_up", "n_draft_copies", "n_draft_copied_tokens",
          "n_level_tokens")


class Context:
    """One llama_context serving up to ``n_seq`` sequences (continuous batching)."""

    def __init__(self, model: Model, *, n_ctx: int = 4096, n_seq: int = 1, n_batch: int = 512,
                 n_ubatch: int = 512, n_threads: int = 0, n_threads_batch: int = 0, flash_attn: int = -1,
                 type_k: str = "f16", type_v: str = "f16", embeddings: bool = False, pooling: int = -1,
                 cache_ram: int = 0, spec_gate: tuple[int, float, float, float] = (1, 0.0, 0.0, 0.0),
                 reference_sampling: bool = False, level_batch: bool = True) -> None:
        """``spec_gate``: the speculation gate, as LoadOptions.spec_gate gives it (mode, then fixed costs);
        ``reference_sampling``: every sequence samples through llama.cpp's whole chain (no shortcuts);
        ``level_batch``: each step's batch levelled for llama.cpp's ubatches (False decodes it as it is)."""
        self.model = model
        p = _lib.pw_engine_default_params()
        p.n_ctx = n_ctx
        p.n_seq = n_seq
        p.n_batch = n_batch
        p.n_ubatch = min(n_ubatch, n_batch)
        p.n_threads = n_threads
        p.n_threads_batch = n_threads_batch or n_threads
        p.flash_attn = flash_attn
        try:
            p.type_k = GGML_TYPES[type_k.lower()]
            p.type_v = GGML_TYPES[type_v.lower()]
        except KeyError as exc:
            raise InvalidRequest(f"unsupported KV cache type {exc.args[0]!r}") from None
        p.embeddings = embeddings
        p.pooling = pooling
        p.cache_ram = max(0, cache_ram)  # bytes of host memory for prompt states of evicted sequences
        p.spec_gate, p.spec_step_us, p.spec_row_us, p.spec_draft_us = spec_gate
        p.reference_sampling = reference_sampling
        p.level_batch = level_batch
        out = _ffi.new("pw_engine **")
        _check(_lib.pw_engine_create(model.handle, _ffi.new("pw_engine_params *", p), out))
        self._h = _ffi.gc(out[0], _lib.pw_engine_free)
        self.n_seq = n_seq
        self.embeddings = embeddings
        self._n_events = n_seq * (1 + DRAFT_MAX)  # a step gives a sequence one event per token it accepts
        self._events = _ffi.new("pw_event[]", self._n_events)
        self._out = _ffi.new("pw_step_out *")
        self._sp = _ffi.new("pw_sampling *")
        st = self.stats()
        self.n_ctx_seq = int(st["n_ctx_seq"])
        self.embd_dim = _check(_lib.pw_engine_embd_dim(self._h)) if embeddings else 0
        self.draft: Model | None = None

    @property
    def handle(self) -> object:
        if self._h is None:
            raise NativeError("engine is closed")
        return self._h

    def close(self) -> None:
        if self._h is not None:
            h, self._h = self._h, None
            _ffi.release(h)

    def set_lora(self, path: str | os.PathLike[str], scale: float = 1.0) -> None:
        _check(_lib.pw_engine_set_lora(self.handle, os.fsencode(path), scale))

    def set_projector(self, projector: "Projector | None") -> None:
        """Let this context evaluate media prompts with ``projector`` (which must outlive it)."""
        _check(_lib.pw_engine_set_mtmd(self.handle, projector.handle if projector else _ffi.NULL))

    def set_draft(self, draft: Model) -> None:
        """Draft with ``draft`` (same vocabulary; it must outlive this context) for speculative decoding."""
        _check(_lib.pw_engine_set_draft(self.handle, draft.handle))
        self.draft = draft

    def submit(self, tokens: "Sequence[int] | MediaPrompt", s: Sampling) -> int:
        """Start a sequence; returns its id. The longest cached prefix of the prompt is reused (cache.cpp)."""
        sp, _grammar = self._sampling(s)  # the grammar's buffer lives until the call returns
        if isinstance(tokens, MediaPrompt):
            return _check(_lib.pw_submit_media(self.handle, tokens.handle, sp))
        toks = _ffi.new("int32_t[]", list(tokens))
        return _check(_lib.pw_submit(self.handle, toks, len(tokens), sp))

    def submit_choice(self, leader: int, s: Sampling) -> int:
        """Start another choice of the prompt of ``leader`` (submitted since the last step); returns its id.

        It evaluates none of the prompt: it takes the leader's cells and last logits when they are ready.
        """
        sp, _grammar = self._sampling(s)
        return _check(_lib.pw_submit_choice(self.handle, leader, sp))

    def _sampling(self, s: Sampling) -> tuple[Any, Any]:
        """``s`` in the C struct, and the grammar buffer that must live as long as the call using it."""
        sp = self._sp
        sp.seed = 0xFFFFFFFF if s.seed < 0 else s.seed & 0xFFFFFFFF
        sp.top_k = s.top_k
        sp.top_p = s.top_p
        sp.min_p = s.min_p
        sp.typical_p = s.typical_p
        sp.temperature = s.temperature
        sp.repeat_last_n = s.repeat_last_n
        sp.repeat_penalty = s.repeat_penalty
        sp.presence_penalty = s.presence_penalty
        sp.frequency_penalty = s.frequency_penalty
        sp.n_predict = s.num_predict
        sp.n_logprobs = s.logprobs
        sp.ignore_eos = s.ignore_eos
        sp.draft_max = max(0, min(s.draft, DRAFT_MAX))
        sp.draft_model_max = max(0, min(s.draft_model, DRAFT_MAX))
        sp.draft_p_min = s.draft_p_min
        grammar = _ffi.new("char[]", s.grammar.encode()) if s.grammar else _ffi.NULL
        sp.grammar = grammar
        return sp, grammar

    def cancel(self, seq: int) -> None:
        _check(_lib.pw_cancel(self.handle, seq))

    def step(self) -> StepResult:
        """Run one batched decode for every active sequence and return what each produced."""
        n = _check(_lib.pw_step(self.handle, self._events, self._n_events, self._out))
        out = self._out
        events = []
        if n:
            evs = self._events
            total = 0
            for i in range(n):
                e = evs[i]
                total = max(total, e.text_off + e.text_len)
            arena = _ffi.buffer(out.text, total)[:] if total else b""
            for i in range(n):
                e = evs[i]
                top: tuple[tuple[int, float], ...] = ()
                if e.n_top:
                    top = tuple((out.top[j].token, out.top[j].logprob) for j in range(e.top_off, e.top_off + e.n_top))
                events.append(Event(e.seq, e.token, e.finish, arena[e.text_off:e.text_off + e.text_len],
                                    e.logprob, top, e.n_prompt, e.n_cached, e.n_gen, e.t_prompt_us, e.t_gen_us,
                                    e.n_drafted, e.n_accepted))
        return StepResult(events, out.n_active, out.n_decoded)

    def embed(self, inputs: Sequence[Sequence[int]], *, normalize: bool = True) -> list[list[float]]:
        """Pooled output, one per input (each input a list of tokens): embeddings, or with rank pooling the
        classifier head's scores (``embd_dim`` floats each; scores are never normalised)."""
        if not inputs:
            return []
        dim = self.embd_dim
        flat = [t for toks in inputs for t in toks]
        lengths = [len(toks) for toks in inputs]
        out = _ffi.new("float[]", dim * len(inputs))
        _check(_lib.pw_embed(self.handle, _ffi.new("int32_t[]", flat), _ffi.new("int32_t[]", lengths),
                             len(inputs), out, dim * len(inputs), normalize))
        vals = _ffi.unpack(out, dim * len(inputs))
        return [list(vals[i * dim:(i + 1) * dim]) for i in range(len(inputs))]

    def stats(self) -> dict[str, int]:
        st = _ffi.new("pw_stats *")
        _check(_lib.pw_engine_stats(self.handle, st))
        return {k: int(getattr(st, k)) for k in _STATS}

    def clear(self) -> None:
        _check(_lib.pw_engine_clear(self.handle))

    def cache_open(self, folder: str | os.PathLike[str], key: str, max_bytes: int) -> int:
        """Give the prompt cache a disk tier of ``max_bytes`` in ``folder`` for states valid under ``key``:
        states host memory lets go are written there, and come back for prompts they begin. Files of another
        key or damaged ones are removed. Returns how many states the folder holds."""
        return _check(_lib.pw_cache_open(self.handle, os.fsencode(folder), key.encode(), max(0, max_bytes)))

    def cache_save(self) -> int:
        """Write what the context still holds (sequences' cells, host memory's states) to its disk tier, and
        wait for every write; returns how many states it wrote."""
        return _check(_lib.pw_cache_save(self.handle))

    def cache_hold(self, hold: bool) -> None:
        """A test hook: while held, the disk tier's reads wait (its restores with them, not the other
        sequences)."""
        _check(_lib.pw_cache_hold(self.handle, 1 if hold else 0))


def argmax_rows(rows: Sequence[Sequence[float]], n_threads: int = 1) -> list[int]:
    """Greedy sampling's argmax of each row (rows of equal length), as the engine computes it."""
    if not rows:
        return []
    n = len(rows[0])
    if any(len(r) != n for r in rows):
        raise ValueError("rows must have equal lengths")
    bufs = [_ffi.new("float[]", list(r)) for r in rows]
    out = _ffi.new("int32_t[]", len(rows))
    _lib.pw_argmax_rows(_ffi.new("float *[]", bufs), len(rows), n, out, n_threads)
    return list(out)


def _candidates(call: Callable[..., int], logits: Sequence[float], k: int, *args: object) -> list[tuple[int, float]]:
    k = max(0, min(k, len(logits)))
    ids, vals = _ffi.new("int32_t[]", max(1, k)), _ffi.new("float[]", max(1, k))
    n = call(_ffi.new("float[]", list(logits)), len(logits), k, *args, ids, vals)
    return [(ids[i], vals[i]) for i in range(n)]


def top_k(logits: Sequence[float], k: int) -> list[tuple[int, float]]:
    """Top-k sampling's candidates as the engine finds them: (token, logit), best first."""
    return _candidates(_lib.pw_top_k, logits, k)


def top_k_penalized(logits: Sequence[float], k: int, history: Sequence[int], last_n: int, repeat: float = 1.0,
                    freq: float = 0.0, present: float = 0.0) -> list[tuple[int, float]]:
    """Top-k candidates after llama.cpp's penalties over the last ``last_n`` of ``history``, as the engine finds them."""
    hist = _ffi.new("int32_t[]", list(history) or [0])
    return _candidates(_lib.pw_top_k_penalized, logits, k, hist, len(history), last_n, repeat, freq, present)


MEDIA_MARKER = _ffi.string(_lib.pw_mtmd_marker()).decode()
E_TOOLONG = int(_lib.PW_E_TOOLONG)


@dataclass(frozen=True, slots=True)
class ProjectorInfo:
    vision: bool
    audio: bool
    non_causal: bool
    mrope: bool
    n_embd: int


class Projector:
    """A multimodal projector (an mmproj GGUF) bound to its text model, through libmtmd."""

    def __init__(self, model: Model, path: str | os.PathLike[str], *, n_threads: int = 0,
                 use_gpu: bool = True) -> None:
        self.model = model
        out = _ffi.new("pw_mtmd **")
        _check(_lib.pw_mtmd_load(model.handle, os.fsencode(path), n_threads, use_gpu, out))
        self._h = _ffi.gc(out[0], _lib.pw_mtmd_free)
        info = _ffi.new("pw_mtmd_info *")
        _check(_lib.pw_mtmd_get_info(self._h, info))
        self.info = ProjectorInfo(bool(info.vision), bool(info.audio), bool(info.non_causal), bool(info.mrope),
                                  int(info.n_embd))

    @property
    def handle(self) -> object:
        if self._h is None:
            raise NativeError("projector is closed")
        return self._h

    def close(self) -> None:
        if self._h is not None:
            h, self._h = self._h, None
            _ffi.release(h)

    def tokenize(self, text: str, media: Sequence[bytes], *, add_special: bool = True) -> "MediaPrompt":
        """Tokenize ``text`` whose ``MEDIA_MARKER``s stand for ``media`` (encoded image files), in order.

        Decoding and preprocessing the images happens here, in the calling thread.
        """
        bufs = [_ffi.from_buffer(m) for m in media]
        data = _ffi.new("unsigned char *[]", bufs) if bufs else _ffi.NULL
        sizes = _ffi.new("size_t[]", [len(m) for m in media]) if bufs else _ffi.NULL
        out = _ffi.new("pw_media **")
        _check(_lib.pw_mtmd_tokenize(self.handle, text.encode("utf-8", "surrogatepass"), data, sizes, len(media),
                                     add_special, out))
        return MediaPrompt(_ffi.gc(out[0], _lib.pw_media_free))


class MediaPrompt:
    """A prompt tokenized with its media; ``tokens`` shows each media chunk as a run of negative ids."""

    def __init__(self, handle: object) -> None:
        self.handle = handle
        n = _lib.pw_media_n_tokens(handle)
        buf = _ffi.new("int32_t[]", max(n, 1))
        _check(_lib.pw_media_tokens(handle, buf, n))
        self.tokens: list[int] = list(_ffi.unpack(buf, n))
        self.n_media = int(_lib.pw_media_n_chunks(handle))

    def __len__(self) -> int:
        return len(self.tokens)


def load_vocab(path: str | os.PathLike[str]) -> Model:
    """Load only a model's vocabulary (tokenizer tests, token counting)."""
    return Model(path, vocab_only=True, use_mmap=True)
