"""Tiny GGUF files for tests, written with the ``gguf`` package.

``write_tiny_llama`` makes a llama-architecture model (2 layers, 64-wide, a
small SentencePiece-style vocabulary, random weights) that is small enough to
write in milliseconds; ``write_tiny_adapter`` and ``write_tiny_projector`` make
a LoRA adapter and a vision projector for it. Other test suites may import these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import gguf
import numpy as np

__all__ = ["TINY_VOCAB", "write_tiny_llama", "write_tiny_adapter", "write_tiny_projector"]

TINY_VOCAB = ["<unk>", "<s>", "</s>"] + [
    "▁", "▁the", "▁a", "▁hello", "▁world", "▁is", "▁of", "e", "t", "a", "o", "i", "n", "s", "h",
    "r", "d", "l", "u", ".", ",", "!", "?", "▁I", "▁you", "▁to", "▁and", "▁in", "▁it", "▁on",
]

_DTYPES = {"F32": (np.float32, gguf.LlamaFileType.ALL_F32),
           "F16": (np.float16, gguf.LlamaFileType.MOSTLY_F16)}


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_tiny_llama(
    path: Path | str,
    *,
    n_layers: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_ff: int = 128,
    context_length: int = 256,
    dtype: str = "F32",
    chat_template: str | None = None,
    pooling: bool = False,
    name: str = "tiny-llama",
    extra: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Write a small llama GGUF (random weights) and return its path."""
    path = Path(path)
    np_type, ftype = _DTYPES[dtype]
    rng = np.random.default_rng(seed)
    n_vocab = len(TINY_VOCAB)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_type("model")
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(ftype)
    w.add_tokenizer_model("llama")
    w.add_token_list(TINY_VOCAB)
    w.add_token_scores([-float(i) for i in range(n_vocab)])
    w.add_token_types([2, 3, 3] + [1] * (n_vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    if pooling:
        w.add_pooling_type(gguf.PoolingType.MEAN)
    for key, value in (extra or {}).items():
        _add(w, key, value)

    def tensor(name: str, *shape: int, norm: bool = False) -> None:
        data = np.ones(shape, dtype=np.float32) if norm else rng.standard_normal(shape, dtype=np.float32) * 0.02
        # Norm weights stay F32, as llama.cpp's converter keeps 1-D tensors.
        w.add_tensor(name, data if norm else data.astype(np_type))

    tensor("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layers):
        tensor(f"blk.{i}.attn_norm.weight", n_embd, norm=True)
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{i}.{t}.weight", n_embd, n_embd)
        tensor(f"blk.{i}.ffn_norm.weight", n_embd, norm=True)
        tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    tensor("output_norm.weight", n_embd, norm=True)
    tensor("output.weight", n_vocab, n_embd)
    _finish(w)
    return path


def write_tiny_adapter(path: Path | str, *, n_embd: int = 64, rank: int = 4, seed: int = 1) -> Path:
    """Write a LoRA adapter (``general.type = adapter``) for the tiny llama."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    for i in range(2):
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_a", rng.standard_normal((rank, n_embd), dtype=np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_b", rng.standard_normal((n_embd, rank), dtype=np.float32))
    _finish(w)
    return path


def write_tiny_projector(path: Path | str, *, n_embd: int = 32, seed: int = 2) -> Path:
    """Write a small CLIP vision projector (``general.type = mmproj``)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_type("mmproj")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_uint32("clip.vision.block_count", 1)
    w.add_uint32("clip.vision.embedding_length", n_embd)
    w.add_string("clip.projector_type", "mlp")
    w.add_tensor("v.patch_embd.weight", rng.standard_normal((n_embd, n_embd), dtype=np.float32))
    w.add_tensor("mm.0.weight", rng.standard_normal((n_embd, n_embd), dtype=np.float32))
    _finish(w)
    return path


def _add(w: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value) if value >= 0 else w.add_int32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    else:
        w.add_array(key, list(value))
