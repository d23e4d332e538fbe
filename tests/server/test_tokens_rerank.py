"""``/api/rerank``, ``/api/tokenize`` and ``/api/detokenize`` (and their /v1 and llama-server paths) through the
real scheduler, runners and tiny models: golden shapes, scores as the engine computes them, vocabulary-only
answers for models that are not loaded, and answers while the model is busy generating."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.engine import Engine, LoadOptions
from power.native import load_vocab
from tests.engine.test_native import VOCAB_DIR, _vocab_cases
from tests.engine.test_rerank import QWEN3_TEMPLATE
from tests.server.realapp import RealApp, real_app
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_bert_reranker, write_llama

QUERY = "which animal purrs"
DOCS = ["dogs bark at night", {"text": "cats purr when happy", "id": "c1"}, "the stock market fell", "a cat"]
TEXTS = [d if isinstance(d, str) else d["text"] for d in DOCS]
RERANK_PATHS = ["/api/rerank", "/v1/rerank", "/v2/rerank", "/rerank", "/v1/reranking"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tokrank-files")
    return {
        "tiny": write_llama(d / "tiny.gguf", seed=1),
        # wide enough that a long stream lasts seconds on a small machine
        "wide": write_llama(d / "wide.gguf", seed=2, n_embd=256, n_layer=4, n_ff=1024, n_head=8, n_head_kv=4),
        "reranker": write_bert_reranker(d / "rr.gguf", seed=3),
        "embedder": write_llama(d / "embed.gguf", seed=4, pooling=1, name="tiny-embed"),
        "qwen2-vocab": VOCAB_DIR / "ggml-vocab-qwen2.gguf",  # no weights at all: only a vocabulary
        # as the real one: a chat template with tools beside the rerank one (which says nothing it can do)
        "qwen3-reranker": write_llama(d / "q3rr.gguf", seed=5, arch="qwen3", pooling=4, cls_labels=("yes", "no"),
                                      rerank_template=QWEN3_TEMPLATE, chat_template=CHATML_TOOLS_TEMPLATE),
    }


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, files: dict[str, Path]) -> Iterator[RealApp]:
    yield from real_app(tmp_path_factory.mktemp("tokrank"), files)


@pytest.fixture(scope="module")
def engine_scores(files: dict[str, Path]) -> list[float]:
    with Engine(str(files["reranker"]), LoadOptions(num_ctx=2048)) as eng:
        return eng.rank(QUERY, TEXTS).scores


def post(real: RealApp, path: str, body: dict[str, Any]) -> Any:
    return real.client.simulate_post(path, json=body)


def loaded(real: RealApp) -> list[str]:
    return [m["name"] for m in post_get(real, "/api/ps")["models"]]


def vocab_id(path: Path, special: str) -> int:
    from tests.tinymodels import vocabulary

    return vocabulary()[0].index(special)


def post_get(real: RealApp, path: str) -> Any:
    r = real.client.simulate_get(path)
    assert r.status_code == 200, r.text
    return r.json


# ---- rerank -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", RERANK_PATHS)
def test_rerank_golden_shape_order_and_scores(real: RealApp, engine_scores: list[float], path: str) -> None:
    r = post(real, path, {"model": "reranker", "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json
    assert set(body) == {"model", "object", "results", "usage"}
    assert body["model"] == "reranker:latest" and body["object"] == "list"
    results = body["results"]
    assert [set(x) for x in results] == [{"index", "relevance_score"}] * len(DOCS)
    order = sorted(range(len(DOCS)), key=lambda i: -engine_scores[i])
    assert [x["index"] for x in results] == order
    assert [x["relevance_score"] for x in results] == pytest.approx(sorted(engine_scores, reverse=True), abs=1e-4)
    n = body["usage"]["total_tokens"]
    assert body["usage"] == {"prompt_tokens": n, "total_tokens": n} and n > sum(len(t.split()) for t in TEXTS)


def test_a_qwen3_layout_reranker_is_served(real: RealApp, files: dict[str, Path]) -> None:
    with Engine(str(files["qwen3-reranker"]), LoadOptions(num_ctx=2048)) as eng:
        want = eng.rank(QUERY, TEXTS).scores
    r = post(real, "/v1/rerank", {"model": "qwen3-reranker", "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    got = {x["index"]: x["relevance_score"] for x in r.json["results"]}
    assert [got[i] for i in range(len(DOCS))] == pytest.approx(want, abs=1e-4)
    assert all(0 < v < 1 for v in got.values())  # the "yes" probability
    assert post(real, "/api/show", {"model": "qwen3-reranker"}).json["capabilities"] == ["rerank"]


def test_rerank_top_n_and_return_documents(real: RealApp, engine_scores: list[float]) -> None:
    r = post(real, "/v1/rerank", {"model": "reranker", "query": QUERY, "documents": DOCS, "top_n": 2,
                                  "return_documents": True})
    assert r.status_code == 200, r.text
    best = sorted(range(len(DOCS)), key=lambda i: -engine_scores[i])[:2]
    assert [x["index"] for x in r.json["results"]] == best
    for x in r.json["results"]:  # a string comes back as {"text"}, an object as it was sent
        assert x["document"] == (DOCS[x["index"]] if isinstance(DOCS[x["index"]], dict)
                                 else {"text": DOCS[x["index"]]})
    more = post(real, "/api/rerank", {"model": "reranker", "query": QUERY, "documents": DOCS, "top_n": 99})
    assert len(more.json["results"]) == len(DOCS)


def test_the_cohere_clients_rerank(real: RealApp, engine_scores: list[float]) -> None:
    cohere = pytest.importorskip("cohere")
    import httpx

    http = httpx.Client(transport=httpx.WSGITransport(app=real.app), headers={"Host": "127.0.0.1:11434"})
    order = sorted(range(len(DOCS)), key=lambda i: -engine_scores[i])
    v1 = cohere.Client(base_url="http://127.0.0.1:11434", api_key="unused", httpx_client=http)
    got = v1.rerank(model="reranker", query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    assert [r.index for r in got.results] == order[:3]
    assert [r.relevance_score for r in got.results] == pytest.approx([engine_scores[i] for i in order[:3]], abs=1e-4)
    assert got.results[0].document.text == TEXTS[order[0]]
    v2 = cohere.ClientV2(base_url="http://127.0.0.1:11434", api_key="unused", httpx_client=http)
    got2 = v2.rerank(model="reranker", query=QUERY, documents=TEXTS)
    assert [r.index for r in got2.results] == order


def test_show_lists_rerank_and_only_rerankers_rerank(real: RealApp) -> None:
    show = post(real, "/api/show", {"model": "reranker"})
    assert show.json["capabilities"] == ["rerank"]
    assert post(real, "/api/show", {"model": "embedder"}).json["capabilities"] == ["embedding"]
    for name in ("tiny", "embedder"):
        r = post(real, "/api/rerank", {"model": name, "query": "q", "documents": ["d"]})
        assert r.status_code == 400 and r.json == {"error": f'"{name}:latest" does not support reranking'}
    oa = post(real, "/v1/rerank", {"model": "tiny", "query": "q", "documents": ["d"]})
    assert oa.status_code == 400 and "does not support reranking" in oa.json["error"]["message"]
    real.scheduler.unload("reranker:latest")
    for path, body in (("/api/embed", {"input": "x"}), ("/v1/embeddings", {"input": "x"})):
        r = post(real, path, {"model": "reranker", **body})
        assert r.status_code == 400 and "is a reranker" in r.text, r.text
    assert "reranker:latest" not in loaded(real)  # refused before a runner was started
    gen = post(real, "/api/generate", {"model": "reranker", "prompt": "x", "stream": False})
    assert gen.status_code == 400 and "does not support generate" in gen.json["error"]


@pytest.mark.parametrize("body,says", [
    ({"query": "q", "documents": []}, "non-empty"),
    ({"query": "q", "documents": ["d"] * 10_001}, "more than 10000"),
    ({"query": "q", "documents": [1]}, "documents.0"),
    ({"query": "q", "documents": [{"title": "x"}]}, "documents.0"),
    ({"query": "q", "documents": ["a", {"text": 3}]}, "documents.1"),
    ({"query": "q", "documents": "just one"}, "documents"),
    ({"documents": ["d"]}, "query is required"),
    ({"query": ["q"], "documents": ["d"]}, "query"),
    ({"query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
    ({"query": "q", "documents": ["d"], "top_n": "2"}, "top_n"),
    ({"query": "q", "documents": ["d"], "keep_alive": "soon"}, "invalid duration"),
])
def test_rerank_bad_input_is_a_400(real: RealApp, body: dict[str, Any], says: str) -> None:
    r = post(real, "/api/rerank", {"model": "reranker", **body})
    assert r.status_code == 400 and says in r.json["error"], r.text


def test_rerank_missing_model(real: RealApp) -> None:
    assert post(real, "/api/rerank", {"query": "q", "documents": ["d"]}).status_code == 400
    r = post(real, "/api/rerank", {"model": "nope", "query": "q", "documents": ["d"]})
    assert r.status_code == 404 and r.json == {"error": "model 'nope' not found"}



def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_text_embeddings_inference_requests_on_rerank(real: RealApp, engine_scores: list[float],
                                                      files: dict[str, Path]) -> None:
    # What TEI clients (Continue's huggingface-tei reranker) send to /rerank: texts, no model, a bare list back.
    order = sorted(range(len(TEXTS)), key=lambda i: -engine_scores[i])
    r = post(real, "/rerank", {"model": "reranker", "query": QUERY, "texts": TEXTS, "raw_scores": False,
                               "return_text": False})
    assert r.status_code == 200, r.text
    assert [set(x) for x in r.json] == [{"index", "score"}] * len(TEXTS)
    assert [x["index"] for x in r.json] == order
    assert [x["score"] for x in r.json] == pytest.approx([_sigmoid(engine_scores[i]) for i in order], abs=1e-4)
    raw = post(real, "/rerank", {"model": "reranker", "query": QUERY, "texts": TEXTS, "raw_scores": True,
                                 "return_text": True}).json
    assert [x["score"] for x in raw] == pytest.approx([engine_scores[i] for i in order], abs=1e-4)
    assert [x["text"] for x in raw] == [TEXTS[i] for i in order]
    with Engine(str(files["qwen3-reranker"]), LoadOptions(num_ctx=2048)) as eng:
        yes = eng.rank(QUERY, TEXTS).scores  # already probabilities: no sigmoid on top
    q3 = post(real, "/rerank", {"model": "qwen3-reranker", "query": QUERY, "texts": TEXTS}).json
    assert [x["score"] for x in sorted(q3, key=lambda x: x["index"])] == pytest.approx(yes, abs=1e-4)
    # Two rerankers are installed here: without a model the request cannot say which.
    many = post(real, "/rerank", {"query": QUERY, "texts": TEXTS})
    assert many.status_code == 400
    assert many.json["error"] == ("model is required to pick a reranker "
                                  "(2 are installed: qwen3-reranker:latest, reranker:latest)")
    for body, says in (({"query": QUERY}, "documents is required (or texts"),
                       ({"query": QUERY, "texts": "one"}, "texts"), ({"query": QUERY, "texts": [1]}, "texts"),
                       ({"query": QUERY, "texts": TEXTS, "raw_scores": "yes"}, "raw_scores"),
                       ({"query": QUERY, "documents": TEXTS}, "model is required")):
        bad = post(real, "/rerank", body)
        assert bad.status_code == 400 and says in bad.json["error"], (body, bad.text)
    # The other paths keep their one shape: texts mean nothing there.
    assert post(real, "/v1/rerank", {"model": "reranker", "query": QUERY, "texts": TEXTS}).status_code == 400


def test_a_tei_request_without_model_uses_the_one_reranker(tmp_path: Path, files: dict[str, Path],
                                                           engine_scores: list[float]) -> None:
    for app in real_app(tmp_path, {"tiny": files["tiny"], "bge": files["reranker"]}):
        r = app.client.simulate_post("/rerank", json={"query": QUERY, "texts": TEXTS})
        assert r.status_code == 200, r.text
        assert [x["index"] for x in r.json] == sorted(range(len(TEXTS)), key=lambda i: -engine_scores[i])
        assert [m["name"] for m in app.client.simulate_get("/api/ps").json["models"]] == ["bge:latest"]

# ---- tokenize / detokenize ------------------------------------------------------------------------------------

def test_tokenize_round_trip_without_loading_the_model(real: RealApp, files: dict[str, Path]) -> None:
    real.scheduler.unload("tiny:latest")
    text = "the cat <|im_start|> héllo"
    vocab = load_vocab(files["tiny"])
    try:
        want = vocab.tokenize(text, add_special=False, parse_special=True)
        with_bos = vocab.tokenize(text, add_special=True, parse_special=True)
    finally:
        vocab.close()
    for path in ("/api/tokenize", "/tokenize"):
        r = post(real, path, {"model": "tiny", "content": text})
        assert r.status_code == 200 and r.json == {"model": "tiny:latest", "tokens": want}, r.text
    bos = post(real, "/api/tokenize", {"model": "tiny", "prompt": text, "add_special": True})
    assert bos.json["tokens"] == with_bos
    assert vocab_id(files["tiny"], "<|im_start|>") in want  # parse_special: a control token, not its text
    for path in ("/api/detokenize", "/detokenize"):
        r = post(real, path, {"model": "tiny", "tokens": want})
        assert r.status_code == 200 and r.json == {"model": "tiny:latest", "content": text}, r.text
    assert "tiny:latest" not in loaded(real)  # answered from the vocabulary: nothing was loaded


def test_with_pieces(real: RealApp) -> None:
    r = post(real, "/api/tokenize", {"model": "tiny", "content": "the cat é", "with_pieces": True})
    pieces = r.json["tokens"]
    assert all(set(p) == {"id", "piece"} for p in pieces)
    whole = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces)
    assert whole.decode() == "the cat é"
    assert any(isinstance(p["piece"], list) for p in pieces)  # é is two byte tokens: neither is whole UTF-8
    ids = post(real, "/api/tokenize", {"model": "tiny", "content": "the cat é"}).json["tokens"]
    assert [p["id"] for p in pieces] == ids


def test_a_vocabulary_only_gguf_tokenizes_as_llama_cpp_expects(real: RealApp) -> None:
    """A model file with no weights at all can never load: its vocabulary answers."""
    cases = _vocab_cases("qwen2")[:12]
    assert cases
    for text, expected in cases:
        r = post(real, "/api/tokenize", {"model": "qwen2-vocab", "content": text, "parse_special": False})
        assert r.status_code == 200 and r.json["tokens"] == expected, (text, r.text)
        back = post(real, "/api/detokenize", {"model": "qwen2-vocab", "tokens": expected})
        assert back.json["content"] == text
    assert "qwen2-vocab:latest" not in loaded(real)


def test_tokenize_answers_while_the_model_is_busy_generating(real: RealApp) -> None:
    stream = real.scheduler.generate("wide:latest", "once upon a time", options={"num_predict": 100000})
    try:
        first = next(stream)  # generating now
        assert not first.get("done")
        started = time.monotonic()
        r = post(real, "/api/tokenize", {"model": "wide", "content": "hello world"})
        back = post(real, "/api/detokenize", {"model": "wide", "tokens": r.json["tokens"]})
        took = time.monotonic() - started
        assert r.status_code == 200 and back.json["content"] == "hello world"
        assert not stream.finished, "the answer waited for the generation to end"
        rows = {m["name"]: m for m in real.scheduler.ps()}
        assert rows["wide:latest"]["in_flight"] == 1  # tokenizing took no slot
        assert took < 5.0
    finally:
        stream.close()


def test_vocab_runner_is_not_a_loaded_model(real: RealApp) -> None:
    before = real.scheduler.ps()
    for name in ("tiny", "embedder", "reranker", "qwen2-vocab"):
        assert post(real, "/api/tokenize", {"model": name, "content": "abc"}).status_code == 200
    after = real.scheduler.ps()
    assert [m["name"] for m in after] == [m["name"] for m in before]
    assert {m["pid"] for m in after} == {m["pid"] for m in before}


@pytest.mark.parametrize("model", ["tiny", "wide"])
def test_bad_token_ids_are_a_400(real: RealApp, model: str) -> None:
    if model == "wide":
        real.scheduler.load("wide:latest")  # answered by its runner, not by the vocab runner
    r = post(real, "/api/detokenize", {"model": model, "tokens": [1, 10 ** 6]})
    assert r.status_code == 400 and "not in the model's vocabulary" in r.json["error"], r.text
    for bad in ([-1], ["a"], [1.5], "12", [2 ** 40]):
        r = post(real, "/api/detokenize", {"model": model, "tokens": bad})
        assert r.status_code == 400 and "tokens" in r.json["error"], (bad, r.text)


def test_tokenize_bad_input(real: RealApp) -> None:
    assert post(real, "/api/tokenize", {"model": "nope", "content": "x"}).status_code == 404
    assert post(real, "/api/detokenize", {"model": "nope", "tokens": [1]}).status_code == 404
    r = post(real, "/api/tokenize", {"model": "tiny"})
    assert r.status_code == 400 and r.json == {"error": "content is required"}
    r = post(real, "/api/tokenize", {"content": "x"})
    assert r.status_code == 400 and "model is required" in r.json["error"]
    r = post(real, "/tokenize", {"model": "tiny", "content": 5})
    assert r.status_code == 400 and "content" in r.json["error"]
    assert post(real, "/api/detokenize", {"model": "tiny"}).json == {"model": "tiny:latest", "content": ""}


def test_answers_too_big_for_a_runner_frame_are_refused_and_the_runner_lives(real: RealApp) -> None:
    """4 MiB of text with pieces would be a frame past the protocol's bound (and kill the model's runner)."""
    real.scheduler.load("tiny:latest")
    [pid] = [m["pid"] for m in real.scheduler.ps() if m["name"] == "tiny:latest"]
    r = post(real, "/api/tokenize", {"model": "tiny", "content": "\u00e9" * (3 << 20), "with_pieces": True})
    assert r.status_code == 400 and "too long to tokenize" in r.json["error"]
    r = post(real, "/api/detokenize", {"model": "tiny", "tokens": [1] * ((1 << 20) + 1)})
    assert r.status_code == 400 and "more than" in r.json["error"]
    big = post(real, "/api/tokenize", {"model": "tiny", "content": "ab " * 200_000, "with_pieces": True})
    assert big.status_code == 200 and len(big.json["tokens"]) >= 200_000
    assert [m["pid"] for m in real.scheduler.ps() if m["name"] == "tiny:latest"] == [pid]
