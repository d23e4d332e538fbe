"""A tiny Qwen2-VL pair (``qwen2vl`` text model, ``qwen2vl_merger`` projector) written with ``gguf``.

Qwen2-VL decodes with M-RoPE: each position has four components (time, height, width, unused) and an image
of ``nx`` x ``ny`` merged patches takes ``nx * ny`` KV cells but only ``max(nx, ny)`` positions. These models
exercise that path in milliseconds through the real engine.

They follow the conventions of ``tests.tinymodels`` (same byte-level vocabulary, embedding column 0 is 1.0 and
nothing writes to it, control tokens are never sampled and EOS only when asked), plus the two control tokens
libmtmd wraps around a Qwen2-VL image, ``<|vision_start|>`` and ``<|vision_end|>``.

The projector's images: libmtmd resizes each to a multiple of ``patch_size * 2`` per side holding at least
8 merged patches (its Qwen2-VL minimum), so with ``patch_size=14`` a 56x112 picture is 2x4 = 8 image tokens
over 4 positions, and a 112x56 one 4x2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gguf import GGUFWriter, LlamaFileType, TokenType
from tests.tinymodels import MERGES, SPECIALS, vocabulary

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>"]


def qwen2vl_vocabulary() -> tuple[list[str], list[int]]:
    """The tiny vocabulary with Qwen2-VL's image delimiters appended as control tokens."""
    tokens, types = vocabulary()
    return tokens + VISION_TOKENS, types + [int(TokenType.CONTROL)] * len(VISION_TOKENS)


def write_qwen2vl_text(path: str | Path, *, seed: int = 0, n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
                       n_head_kv: int = 2, n_ff: int = 128, n_ctx_train: int = 2048,
                       rope_sections: tuple[int, int, int, int] = (2, 3, 3, 0),
                       eos_bias: float = -1000.0) -> Path:
    """Write a tiny ``qwen2vl`` text model and return its path.

    ``rope_sections`` splits a head's rotary pairs (``n_embd // n_head // 2`` of them) between the time,
    height and width components of a position; height and width must be non-zero for M-RoPE.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens, types = qwen2vl_vocabulary()
    n_vocab = len(tokens)
    bos, eos = tokens.index("<|bos|>"), tokens.index("<|eos|>")
    head_dim = n_embd // n_head
    if sum(rope_sections) != head_dim // 2:
        raise ValueError(f"rope sections {rope_sections} must split the {head_dim // 2} rotary pairs of a head")

    w = GGUFWriter(str(path), "qwen2vl")
    w.add_name("tiny-qwen2vl")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_dimension_sections(list(rope_sections))
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(n_vocab)
    w.add_file_type(LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(True)

    def t(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    embd = t(n_vocab, n_embd, scale=0.3)
    embd[:, 0] = 1.0
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    out = t(n_vocab, n_embd, scale=1.0)
    out[:, 0] = 0.0
    for special in SPECIALS + VISION_TOKENS:
        out[tokens.index(special), :] = 0.0
        out[tokens.index(special), 0] = -1000.0
    out[eos, 0] = eos_bias
    w.add_tensor("output.weight", out)
    kv = head_dim * n_head_kv
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", t(n_embd, n_embd, scale=0.3))
        w.add_tensor(p + "attn_q.bias", t(n_embd, scale=0.1))
        w.add_tensor(p + "attn_k.weight", t(kv, n_embd, scale=0.3))
        w.add_tensor(p + "attn_k.bias", t(kv, scale=0.1))
        w.add_tensor(p + "attn_v.weight", t(kv, n_embd, scale=0.3))
        w.add_tensor(p + "attn_v.bias", t(kv, scale=0.1))
        wo = t(n_embd, n_embd, scale=0.3)
        wo[0, :] = 0.0  # residual column 0 stays 1.0
        w.add_tensor(p + "attn_output.weight", wo)
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", t(n_ff, n_embd, scale=0.3))
        w.add_tensor(p + "ffn_up.weight", t(n_ff, n_embd, scale=0.3))
        down = t(n_embd, n_ff)
        down[0, :] = 0.0
        w.add_tensor(p + "ffn_down.weight", down)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_qwen2vl_mmproj(path: str | Path, *, n_embd_text: int = 64, seed: int = 1, patch_size: int = 14,
                         n_embd: int = 32, n_layer: int = 2, n_head: int = 2, n_ff: int = 64,
                         n_hidden: int = 64) -> Path:
    """Write a tiny ``qwen2vl_merger`` projector for ``write_qwen2vl_text``.

    A ViT over ``patch_size`` patches (two patch convolutions, one per frame of a video pair, summed), 2-D
    M-RoPE in its attention, then 2x2 neighbouring patches concatenated and projected by a two-layer MLP to
    ``n_embd_text``. The MLP's last row is zero with bias 1, so image embeddings keep column 0 at 1.0.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    if n_embd % n_head or (n_embd // n_head) % 4:
        raise ValueError("the vision head size must be a multiple of 4 (four M-RoPE sections)")
    if n_ff == n_embd:
        raise ValueError("n_ff must differ from n_embd: llama.cpp takes equal sizes for swapped legacy FFNs")

    w = GGUFWriter(str(path), "clip")
    w.add_name("tiny-qwen2vl-mmproj")
    w.add_file_type(LlamaFileType.ALL_F32)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "qwen2vl_merger")
    w.add_uint32("clip.vision.image_size", 56)  # unused by the dynamic-size preprocessor; required key
    w.add_uint32("clip.vision.patch_size", patch_size)
    w.add_uint32("clip.vision.embedding_length", n_embd)
    w.add_uint32("clip.vision.feed_forward_length", n_ff)
    w.add_uint32("clip.vision.block_count", n_layer)
    w.add_uint32("clip.vision.attention.head_count", n_head)
    w.add_uint32("clip.vision.projection_dim", n_embd_text)
    w.add_uint32("clip.vision.spatial_merge_size", 2)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    w.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])

    def t(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    w.add_tensor("v.patch_embd.weight", t(n_embd, 3, patch_size, patch_size, scale=0.1))
    w.add_tensor("v.patch_embd.weight.1", t(n_embd, 3, patch_size, patch_size, scale=0.1))
    for i in range(n_layer):
        p = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(p + name + ".weight", t(n_embd, n_embd))
            w.add_tensor(p + name + ".bias", t(n_embd, scale=0.01))
        for name in ("ln1", "ln2"):
            w.add_tensor(p + name + ".weight", ones(n_embd))
            w.add_tensor(p + name + ".bias", t(n_embd, scale=0.0))
        w.add_tensor(p + "ffn_up.weight", t(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.bias", t(n_ff, scale=0.01))
        w.add_tensor(p + "ffn_down.weight", t(n_embd, n_ff))
        w.add_tensor(p + "ffn_down.bias", t(n_embd, scale=0.01))
    w.add_tensor("v.post_ln.weight", ones(n_embd))  # the merger's ln_q
    w.add_tensor("v.post_ln.bias", t(n_embd, scale=0.0))
    w.add_tensor("mm.0.weight", t(n_hidden, 4 * n_embd))
    w.add_tensor("mm.0.bias", t(n_hidden, scale=0.01))
    proj = t(n_embd_text, n_hidden, scale=0.5)
    proj[0, :] = 0.0
    bias = t(n_embd_text, scale=0.01)
    bias[0] = 1.0
    w.add_tensor("mm.2.weight", proj)
    w.add_tensor("mm.2.bias", bias)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
