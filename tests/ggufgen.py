"""Small GGUF files for store tests, written with the ``gguf`` package.

The loadable tiny llama lives in ``tests.tinymodels.write_llama``; this module
adds what the store needs beside it: any-metadata files (``write_gguf``), a LoRA
adapter and a vision projector for the tiny llama. Other suites may import these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import gguf
import numpy as np

__all__ = ["write_gguf", "write_tiny_adapter", "write_tiny_projector"]


def write_gguf(path: Path | str, arch: str, metadata: Mapping[str, Any] | None = None,
               tensors: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a GGUF with the given metadata (typed from the Python values) and tensors."""
    path = Path(path)
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in (metadata or {}).items():
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
    for name, data in (tensors or {"dummy.weight": np.zeros((32,), dtype=np.float32)}).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_adapter(path: Path | str, *, n_embd: int = 64, rank: int = 4, seed: int = 1) -> Path:
    """Write a LoRA adapter (``general.type = adapter``) for the tiny llama."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(2):
        tensors[f"blk.{i}.attn_q.weight.lora_a"] = rng.standard_normal((rank, n_embd), dtype=np.float32)
        tensors[f"blk.{i}.attn_q.weight.lora_b"] = rng.standard_normal((n_embd, rank), dtype=np.float32)
    meta = {"general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": float(rank)}
    return write_gguf(path, "llama", meta, tensors)


def write_tiny_projector(path: Path | str, *, n_embd: int = 32, seed: int = 2) -> Path:
    """Write a small CLIP vision projector (``general.type = mmproj``)."""
    rng = np.random.default_rng(seed)
    meta = {"general.type": "mmproj", "clip.has_vision_encoder": True, "clip.vision.block_count": 1,
            "clip.vision.embedding_length": n_embd, "clip.projector_type": "mlp"}
    tensors = {"v.patch_embd.weight": rng.standard_normal((n_embd, n_embd), dtype=np.float32),
               "mm.0.weight": rng.standard_normal((n_embd, n_embd), dtype=np.float32)}
    return write_gguf(path, "clip", meta, tensors)
