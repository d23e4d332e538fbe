"""Reranking through the real engine: a tiny BERT cross-encoder with llama.cpp's rank pooling.

The scores are held to a plain numpy forward pass of the same GGUF (the BERT graph llama.cpp builds:
post-norm layers, CLS pooling, the tanh ``cls`` layer and ``cls.output``), so they are the model's, not
just numbers; the batched call must give each document the score it gets alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from power.engine import Engine, LoadOptions
from power.errors import InvalidRequest
from tests.tinymodels import write_bert_reranker, write_llama

QUERY = "what is the capital of france"
DOCS = ["paris is the capital of france", "the cat sat on the mat", "berlin is in germany", "", "france " * 30]
RERANK_TEMPLATE = "<|im_start|>judge\nquery: {query}\ndoc: {document}<|im_end|>"


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bert_reranker(tmp_path_factory.mktemp("rerank") / "rr.gguf", seed=7)


@pytest.fixture(scope="module")
def reranker(reranker_path: Path):
    eng = Engine(str(reranker_path), LoadOptions(num_ctx=512))
    yield eng
    eng.close()


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def reference_score(path: Path, tokens: list[int], n_head: int = 2) -> float:
    """The cross-encoder's score for one token sequence, computed in float64 numpy from the GGUF's tensors."""
    t = {r.name: np.asarray(r.data, dtype=np.float64) for r in GGUFReader(str(path)).tensors}
    x = t["token_embd.weight"][tokens] + t["token_types.weight"][0] + t["position_embd.weight"][:len(tokens)]
    x = _layer_norm(x, t["token_embd_norm.weight"], t["token_embd_norm.bias"])
    n, d = x.shape
    hd = d // n_head
    for i in range(sum(1 for k in t if k.endswith("attn_q.weight"))):
        def lin(name: str, v: np.ndarray) -> np.ndarray:
            return v @ t[f"blk.{i}.{name}.weight"].T + t[f"blk.{i}.{name}.bias"]
        q, k, v = (lin(p, x).reshape(n, n_head, hd).transpose(1, 0, 2) for p in ("attn_q", "attn_k", "attn_v"))
        att = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        out = (att @ v).transpose(1, 0, 2).reshape(n, d)
        x = _layer_norm(lin("attn_output", out) + x, t[f"blk.{i}.attn_output_norm.weight"],
                        t[f"blk.{i}.attn_output_norm.bias"])
        ff = lin("ffn_down", _gelu(lin("ffn_up", x)))
        x = _layer_norm(ff + x, t[f"blk.{i}.layer_output_norm.weight"], t[f"blk.{i}.layer_output_norm.bias"])
    pooled = np.tanh(t["cls.weight"] @ x[0] + t["cls.bias"])
    return float((t["cls.output.weight"] @ pooled + t["cls.output.bias"])[0])


def test_pair_layout_is_bos_query_eos_sep_document_eos(reranker: Engine) -> None:
    info = reranker.info
    assert reranker.reranker and reranker.embedding_only and info.n_cls_out == 1
    assert info.add_bos and info.add_eos and info.add_sep and info.token_sep == info.token_eos
    q = reranker.tokenize(QUERY, add_special=False)
    d = reranker.tokenize(DOCS[0], add_special=False)
    eos = info.token_eos
    assert reranker.vocab.rank_pair(QUERY, DOCS[0]) == [info.token_bos, *q, eos, eos, *d, eos]


def test_scores_are_the_models_own(reranker: Engine, reranker_path: Path) -> None:
    res = reranker.rank(QUERY, DOCS)
    pairs = [reranker.vocab.rank_pair(QUERY, doc) for doc in DOCS]
    assert res.prompt_eval_count == sum(len(p) for p in pairs)
    want = [reference_score(reranker_path, p) for p in pairs]
    assert res.scores == pytest.approx(want, rel=2e-2, abs=2e-2)
    assert len(set(round(s, 4) for s in res.scores)) == len(DOCS)  # the documents are told apart


def test_a_batch_scores_each_document_as_it_would_alone(reranker: Engine) -> None:
    """Documents pooled in one decode do not see each other (within the f16 noise of llama.cpp's kernels)."""
    together = reranker.rank(QUERY, DOCS).scores
    alone = [reranker.rank(QUERY, [doc]).scores[0] for doc in DOCS]
    assert together == pytest.approx(alone, rel=1e-2, abs=2e-2)
    assert reranker.rank(QUERY, DOCS[::-1]).scores == pytest.approx(together[::-1], rel=1e-2, abs=2e-2)
    many = reranker.rank(QUERY, DOCS * 8)  # more documents than one decode pools
    assert many.scores == pytest.approx(together * 8, rel=1e-2, abs=2e-2)


def test_long_pairs_are_cut_or_refused(reranker: Engine) -> None:
    long_doc = "word " * 2000
    assert len(reranker.rank(QUERY, [long_doc]).scores) == 1
    with pytest.raises(InvalidRequest, match="exceeds the context length"):
        reranker.rank(QUERY, [long_doc], truncate=False)


def test_a_rerank_template_lays_out_the_pair(tmp_path: Path) -> None:
    path = write_bert_reranker(tmp_path / "tpl.gguf", seed=7, rerank_template=RERANK_TEMPLATE)
    with Engine(str(path), LoadOptions(num_ctx=512)) as eng:
        pair = eng.vocab.rank_pair("a? {document}", "b")
        text = "<|im_start|>judge\nquery: a? {document}\ndoc: b<|im_end|>"  # the query's text stays as it is
        assert pair == eng.tokenize(text, add_special=False, parse_special=True)
        assert eng.tokenize("<|im_start|>", add_special=False)[0] == pair[0]  # a control token, not its text
        ranked = eng.rank("a? {document}", ["b"])
        assert ranked.prompt_eval_count == len(pair)
        assert ranked.scores == pytest.approx([reference_score(path, pair)], rel=2e-2, abs=2e-2)


def test_a_reranker_does_not_embed_and_other_models_do_not_rank(reranker: Engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="reranker"):
        reranker.embed(["x"])
    with pytest.raises(InvalidRequest, match="does not support generate"):
        reranker.submit("x")
    with Engine(str(write_llama(tmp_path / "embed.gguf", pooling=1)), LoadOptions(num_ctx=128)) as embedder:
        with pytest.raises(InvalidRequest, match="does not support reranking"):
            embedder.rank("q", ["d"])
        assert len(embedder.embed(["a", "b"]).embeddings) == 2


QWEN3_TEMPLATE = ("<|im_start|>system\nJudge whether the Document meets the Query. "
                  "Answer \"yes\" or \"no\".<|im_end|>\n"
                  "<|im_start|>user\n<Query>: {query}\n<Document>: {document}<|im_end|>\n<|im_start|>assistant\n")


def test_a_causal_reranker_laid_out_as_qwen3_reranker(tmp_path: Path) -> None:
    """Qwen3-Reranker: a causal model whose "yes"/"no" head is softmaxed on the prompt's last token."""
    path = write_llama(tmp_path / "q3.gguf", seed=9, arch="qwen3", pooling=4, cls_labels=("yes", "no"),
                       rerank_template=QWEN3_TEMPLATE)
    with Engine(str(path), LoadOptions(num_ctx=512)) as eng:
        assert eng.reranker and eng.info.n_cls_out == 2
        pair = eng.vocab.rank_pair(QUERY, DOCS[0])
        text = QWEN3_TEMPLATE.replace("{query}", QUERY).replace("{document}", DOCS[0])
        assert pair == eng.tokenize(text, add_special=False, parse_special=True)
        res = eng.rank(QUERY, DOCS)
        assert all(0.0 < s < 1.0 for s in res.scores) and len(set(round(s, 5) for s in res.scores)) == len(DOCS)
        alone = [eng.rank(QUERY, [doc]).scores[0] for doc in DOCS]
        assert res.scores == pytest.approx(alone, rel=1e-2, abs=1e-3)
        assert res.prompt_eval_count == sum(len(eng.vocab.rank_pair(QUERY, d)) for d in DOCS)


def test_a_bert_embedder_pools_many_inputs_in_one_decode(tmp_path: Path) -> None:
    """Encoders share a decode between inputs (as rerank documents do); each vector is the one it gets alone."""
    path = write_bert_reranker(tmp_path / "bert-embed.gguf", seed=11, pooling=1)
    with Engine(str(path), LoadOptions(num_ctx=512)) as eng:
        assert not eng.reranker
        texts = [doc or "x" for doc in DOCS] * 4
        together = eng.embed(texts).embeddings
        for text, vec in zip(texts, together):
            assert vec == pytest.approx(eng.embed([text]).embeddings[0], abs=2e-3)
            assert sum(v * v for v in vec) == pytest.approx(1.0, abs=1e-4)
        assert eng._embed_ctx is not None and eng._embed_ctx.n_seq > 1
