"""Tiny llama-architecture GGUF models written with the `gguf` package.

They load and generate in milliseconds through the real engine. The
vocabulary is byte-level BPE (GPT-2 style: the 256 bytes, a few merges, and
control tokens), so any text tokenizes. Weights are random but seeded, and
shaped so the outcome of end-of-generation is chosen by the caller:

* residual stream: embedding column 0 is 1.0 for every token and no
  attention / feed-forward output projection writes to it, so after the final
  norm column 0 is always positive;
* output row of EOS: column 0 is ``eos_bias`` (large and negative: EOS is
  never sampled; large and positive: always sampled first).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import gguf
from gguf import GGUFWriter, LlamaFileType, TokenType

SPECIALS = ["<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("Ġ", "a"), ("o", "n"), ("r", "e")]

CHATML_TOOLS_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- endif %}"
    "{{- '\\n\\n# Tools\\n<tools>' }}{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\nReturn <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (tools and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _byte_unicode() -> list[str]:
    """GPT-2's reversible map from bytes to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = {}
    extra = 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary(extra: Sequence[str] = ()) -> tuple[list[str], list[int]]:
    """The tokens and their types; ``extra`` control tokens (a family's tags) come last."""
    specials = SPECIALS + [t for t in extra if t not in SPECIALS]
    tokens = _byte_unicode() + [a + b for a, b in MERGES] + specials
    types = [int(TokenType.NORMAL)] * (len(tokens) - len(specials)) + [int(TokenType.CONTROL)] * len(specials)
    return tokens, types


def transformer_writer(path: Path, arch: str, name: str, n_ctx_train: int, n_embd: int, n_layer: int, n_ff: int,
                       n_head: int) -> GGUFWriter:
    """A GGUF writer with a transformer's common shape keys written."""
    w = GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    return w


def add_vocabulary(w: GGUFWriter, pre: str = "gpt-2", extra: Sequence[str] = ()) -> None:
    """Write ``vocabulary(extra)`` as a byte-level BPE tokenizer with BOS and EOS (BOS added to every text)."""
    tokens, types = vocabulary(extra)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_bos_token_id(tokens.index("<|bos|>"))
    w.add_eos_token_id(tokens.index("<|eos|>"))
    w.add_add_bos_token(True)


def write_llama(path: str | Path, *, seed: int = 0, n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
                n_head_kv: int = 2, n_ff: int = 128, n_ctx_train: int = 2048, eos_bias: float = -1000.0,
                chat_template: str | None = None, pooling: int | None = None, name: str = "tiny",
                f16: bool = False, arch: str = "llama", cls_labels: tuple[str, ...] = (),
                rerank_template: str | None = None, specials: Sequence[str] = (), favour: tuple[str, ...] = (),
                favour_bias: float = 0.0) -> Path:
    """Write a tiny llama GGUF and return its path.

    ``arch="qwen3"`` adds Qwen3's per-head Q/K norms. ``cls_labels`` adds a classifier head (``cls.output``,
    one row per label) and, with ``pooling=4`` and a ``rerank_template``, makes the model a causal reranker
    laid out as Qwen3-Reranker is (its "yes"/"no" head, softmaxed by llama.cpp on the last token).
    ``specials``: more control tokens, which (unlike the built-in ones) are sampled like
    any other token, so a grammar may write them as one token or spelled out in bytes.
    ``favour``: tokens whose logits get ``favour_bias`` more (through residual column 0), so that the model
    writes mostly those: a small alphabet whose n-grams repeat (for prompt lookup's drafts).
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens, types = vocabulary(specials)
    n_vocab = len(tokens)
    bos, eos = tokens.index("<|bos|>"), tokens.index("<|eos|>")
    head_dim = n_embd // n_head
    dtype = np.float16 if f16 else np.float32

    w = transformer_writer(path, arch, name, n_ctx_train, n_embd, n_layer, n_ff, n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(LlamaFileType.MOSTLY_F16 if f16 else LlamaFileType.ALL_F32)
    if pooling is not None:
        w.add_pooling_type(gguf.PoolingType(pooling))
    add_vocabulary(w, extra=specials)
    if cls_labels:
        w.add_array(f"{arch}.classifier.output_labels", list(cls_labels))
    templates = [{"name": "default", "template": chat_template}] if chat_template is not None else []
    if rerank_template is not None:
        templates.append({"name": "rerank", "template": rerank_template})
    if templates:
        w.add_chat_template(templates)

    def t(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    embd = t(n_vocab, n_embd, scale=0.3)
    embd[:, 0] = 1.0
    w.add_tensor("token_embd.weight", embd.astype(dtype))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    out = t(n_vocab, n_embd, scale=1.0)
    out[:, 0] = 0.0
    # Control tokens are never sampled, except EOS when eos_bias > 0. The bias must dwarf the spread of the
    # other logits, which grows with the width of the model.
    for special in SPECIALS:
        out[tokens.index(special), :] = 0.0
        out[tokens.index(special), 0] = -1000.0
    out[eos, 0] = eos_bias
    for tok in favour:
        out[tokens.index(tok), 0] = favour_bias
    for tok in favour:
        out[tokens.index(tok), 0] = favour_bias
    w.add_tensor("output.weight", out.astype(dtype))
    kv = head_dim * n_head_kv
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", t(n_embd, n_embd, scale=0.3).astype(dtype))
        w.add_tensor(p + "attn_k.weight", t(kv, n_embd, scale=0.3).astype(dtype))
        w.add_tensor(p + "attn_v.weight", t(kv, n_embd, scale=0.3).astype(dtype))
        wo = t(n_embd, n_embd)
        wo[0, :] = 0.0  # no layer writes to residual column 0, so it stays 1.0 and its sign never flips
        w.add_tensor(p + "attn_output.weight", wo.astype(dtype))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", t(n_ff, n_embd, scale=0.3).astype(dtype))
        w.add_tensor(p + "ffn_up.weight", t(n_ff, n_embd, scale=0.3).astype(dtype))
        down = t(n_embd, n_ff)
        down[0, :] = 0.0
        w.add_tensor(p + "ffn_down.weight", down.astype(dtype))
        if arch == "qwen3":
            w.add_tensor(p + "attn_q_norm.weight", np.ones(head_dim, dtype=np.float32))
            w.add_tensor(p + "attn_k_norm.weight", np.ones(head_dim, dtype=np.float32))
    if cls_labels:
        w.add_tensor("cls.output.weight", t(len(cls_labels), n_embd, scale=1.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_bert_reranker(path: str | Path, *, seed: int = 0, n_embd: int = 32, n_layer: int = 2, n_head: int = 2,
                        n_ff: int = 64, n_ctx_train: int = 512, name: str = "tiny-reranker",
                        rerank_template: str | None = None, pooling: int = 4) -> Path:
    """Write a tiny BERT cross-encoder with a classification head (``pooling_type`` rank), as bge-reranker is.

    The vocabulary is the tiny llama's byte-level BPE with RoBERTa's special-token layout (``roberta-bpe``:
    BOS and EOS added, EOS doubling as SEP), so a pair is ``BOS query EOS SEP document EOS``. Non-causal
    attention, CLS pooling, then ``cls`` (tanh) and ``cls.output``: one score per sequence.
    ``rerank_template`` is written as ``tokenizer.chat_template.rerank`` (Qwen3-Reranker's prompt layout).
    Another ``pooling`` (1 mean, 2 CLS) makes it a BERT embedding model instead, the head unused.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens, _ = vocabulary()
    n_vocab = len(tokens)

    w = transformer_writer(path, "bert", name, n_ctx_train, n_embd, n_layer, n_ff, n_head)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType(pooling))
    w.add_file_type(LlamaFileType.ALL_F32)
    add_vocabulary(w, "roberta-bpe")
    w.add_token_type_count(1)
    w.add_sep_token_id(tokens.index("<|eos|>"))
    w.add_add_eos_token(True)
    if rerank_template is not None:
        w.add_chat_template([{"name": "rerank", "template": rerank_template}])

    def t(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def linear(name: str, n_out: int, n_in: int, scale: float = 0.3) -> None:
        w.add_tensor(name + ".weight", t(n_out, n_in, scale=scale))
        w.add_tensor(name + ".bias", t(n_out, scale=0.02 if scale < 1 else 0.1))

    def norm(name: str) -> None:  # LayerNorm, the identity at first
        w.add_tensor(name + ".weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(name + ".bias", np.zeros(n_embd, dtype=np.float32))

    w.add_tensor("token_embd.weight", t(n_vocab, n_embd, scale=1.0))
    w.add_tensor("token_types.weight", t(1, n_embd, scale=0.1))
    w.add_tensor("position_embd.weight", t(n_ctx_train, n_embd, scale=0.1))
    norm("token_embd_norm")
    for i in range(n_layer):
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            linear(f"blk.{i}.{part}", n_embd, n_embd)
        norm(f"blk.{i}.attn_output_norm")
        linear(f"blk.{i}.ffn_up", n_ff, n_embd)
        linear(f"blk.{i}.ffn_down", n_embd, n_ff)
        norm(f"blk.{i}.layer_output_norm")
    linear("cls", n_embd, n_embd)
    linear("cls.output", 1, n_embd, scale=1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_mmproj(path: str | Path, *, n_embd_text: int = 64, seed: int = 1, image_size: int = 28,
                 patch_size: int = 14, n_embd: int = 32, n_layer: int = 2, n_head: int = 2, n_ff: int = 64,
                 n_hidden: int = 64, kind: str = "mlp", merge: int = 2) -> Path:
    """Write a tiny vision projector for ``write_llama``.

    ``kind="mlp"``: LLaVA's (a CLIP ViT with a class embedding and a two-layer MLP); an image becomes
    ``(image_size // patch_size) ** 2`` embeddings of width ``n_embd_text``. As in the text model,
    embedding column 0 is always 1.0 (the MLP's last row is zero with bias 1), so an image never makes
    end-of-generation likely.

    ``kind="gemma3"``: Gemma 3's (a SigLIP ViT, ``merge`` x ``merge`` average pooling, an RMS norm and
    a projection); its image embeddings are decoded with non-causal attention.
    """
    if kind not in ("mlp", "gemma3"):
        raise ValueError(f"unknown projector kind {kind!r}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_patches = (image_size // patch_size) ** 2

    w = GGUFWriter(str(path), "clip")
    w.add_name("tiny-mmproj")
    w.add_file_type(LlamaFileType.ALL_F32)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", kind)
    w.add_bool("clip.use_gelu", True)
    if kind == "gemma3":
        w.add_uint32("clip.vision.projector.scale_factor", merge)
    w.add_uint32("clip.vision.image_size", image_size)
    w.add_uint32("clip.vision.patch_size", patch_size)
    w.add_uint32("clip.vision.embedding_length", n_embd)
    w.add_uint32("clip.vision.feed_forward_length", n_ff)
    w.add_uint32("clip.vision.block_count", n_layer)
    w.add_uint32("clip.vision.attention.head_count", n_head)
    w.add_uint32("clip.vision.projection_dim", n_embd_text)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def t(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    w.add_tensor("v.patch_embd.weight", t(n_embd, 3, patch_size, patch_size, scale=0.1))
    if kind == "mlp":
        w.add_tensor("v.class_embd", t(n_embd))
        w.add_tensor("v.position_embd.weight", t(n_patches + 1, n_embd))
        w.add_tensor("v.pre_ln.weight", ones(n_embd))
        w.add_tensor("v.pre_ln.bias", t(n_embd, scale=0.0))
    else:
        w.add_tensor("v.patch_embd.bias", t(n_embd, scale=0.01))
        w.add_tensor("v.position_embd.weight", t(n_patches, n_embd))
        w.add_tensor("v.post_ln.weight", ones(n_embd))
        w.add_tensor("v.post_ln.bias", t(n_embd, scale=0.0))
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
    if kind == "mlp":
        w.add_tensor("mm.0.weight", t(n_hidden, n_embd))
        w.add_tensor("mm.0.bias", t(n_hidden, scale=0.01))
        out = t(n_embd_text, n_hidden, scale=0.5)
        out[0, :] = 0.0
        bias = t(n_embd_text, scale=0.01)
        bias[0] = 1.0
        w.add_tensor("mm.2.weight", out)
        w.add_tensor("mm.2.bias", bias)
    else:
        w.add_tensor("mm.soft_emb_norm.weight", ones(n_embd))
        # ggml computes transpose(w) @ x: w is [n_embd rows, n_embd_text columns]; column 0 stays small
        proj = t(n_embd, n_embd_text, scale=0.3)
        proj[:, 0] = 1.0 / n_embd
        w.add_tensor("mm.input_projection.weight", proj)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def png(width: int, height: int, rgb: tuple[int, int, int] | None = None, *, seed: int = 0) -> bytes:
    """A PNG image: one colour, or seeded noise when ``rgb`` is None."""
    import struct
    import zlib

    if rgb is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.broadcast_to(np.array(rgb, dtype=np.uint8), (height, width, 3))
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def tiny_engine(folder: Path, *, specials: Sequence[str] = (), seed: int = 3) -> Any:
    """The real engine over a tiny model written in ``folder`` (``specials``: see ``write_llama``)."""
    from power.engine import Engine, LoadOptions

    path = write_llama(Path(folder) / "tiny.gguf", seed=seed, specials=specials)
    return Engine(str(path), LoadOptions(num_ctx=1024, num_parallel=2, num_batch=128))
