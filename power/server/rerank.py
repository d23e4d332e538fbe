"""Reranking: ``/api/rerank``, ``/v1/rerank`` and llama-server's ``/rerank`` and ``/v1/reranking``.

The request is the one Jina, Cohere and llama-server share: ``model``,
``query``, ``documents`` (strings, or objects whose ``text`` is scored),
``top_n`` and ``return_documents``. The answer lists ``{"index",
"relevance_score"}`` best first (equal scores in the documents' order), with
``document`` (``{"text": ...}``, or the object as sent) when asked, and the
tokens evaluated under ``usage``. Scores are the model's classifier output as
llama-server gives them: a raw logit for BERT-style rerankers, the "yes"
probability for Qwen3-Reranker. One rank call scores every document.

``/rerank`` also takes Hugging Face text-embeddings-inference's request (what
TEI clients such as Continue's ``huggingface-tei`` reranker send): ``query``,
``texts``, ``raw_scores``, ``return_text``, ``truncate``, no ``model`` (the one
installed reranker serves it; ``model`` picks among several). It is answered as
TEI does: a bare list of ``{"index", "score"}`` (``text`` when asked), best
first, a classifier's logit squashed by a sigmoid into (0, 1) unless
``raw_scores`` (Qwen3-Reranker's score already is a probability and stays so).
"""

from __future__ import annotations

import math
import time
from typing import Any

import falcon

from power.errors import InvalidRequest, PowerError
from power.server.body import read_json
from power.server.embeddings import record_pooled
from power.server.inference import Services, check_keep_alive, lookup, merged_options, require_capability
from power.server.streaming import send_json

__all__ = ["RerankResource", "document_texts", "MAX_DOCUMENTS"]

# The paths that also take text-embeddings-inference's request.
TEI_PATHS = ("/rerank",)

# Bounded work (a rank call cannot be cancelled midway): ten times what Cohere takes in one request.
MAX_DOCUMENTS = 10_000


def document_texts(documents: list[Any]) -> list[str]:
    """The text of each document: a string, or an object's ``text``; a 400 naming the first bad one."""
    if not documents:
        raise InvalidRequest("documents must be a non-empty list")
    if len(documents) > MAX_DOCUMENTS:
        raise InvalidRequest(f"documents has more than {MAX_DOCUMENTS} items")
    texts = []
    for i, doc in enumerate(documents):
        text = doc if isinstance(doc, str) else doc.get("text") if isinstance(doc, dict) else None
        if not isinstance(text, str):
            raise InvalidRequest(f"documents.{i} must be a string or an object with a string 'text'")
        texts.append(text)
    return texts


class RerankResource:
    def __init__(self, services: Services, endpoint: str = "/api/rerank") -> None:
        self.services = services
        self.endpoint = endpoint
        self.tei = endpoint in TEI_PATHS

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "RerankOrTeiRequest" if self.tei else "RerankRequest")
        tei = self.tei and "texts" in body and "documents" not in body
        if self.tei and not tei and "documents" not in body:
            raise InvalidRequest("documents is required (or texts, as text-embeddings-inference takes them)")
        name = body.get("model") or (self._only_reranker() if tei else "")
        if not name:
            raise InvalidRequest("model is required")
        req.context.model = name
        check_keep_alive(body.get("keep_alive"))
        view = lookup(self.services, name)
        require_capability(view, "rerank", "reranking")
        documents = body["texts"] if tei else body["documents"]
        texts = document_texts(documents)
        start = time.monotonic()
        result = self.services.scheduler.rerank(
            view.name, body["query"], texts, options=merged_options(view, body.get("options"), []),
            keep_alive=body.get("keep_alive"), truncate=body.get("truncate", True))
        total = int((time.monotonic() - start) * 1e9)
        record_pooled(self.services, req, self.endpoint, view.name, result, total)
        scores = [float(s) for s in result["scores"]]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        if tei:
            # A reranker laid out as Qwen3-Reranker scores with its yes/no head: already a probability.
            raw = bool(body.get("raw_scores")) or "tokenizer.chat_template.rerank" in view.metadata
            send_json(resp, tei_results(order, scores, texts, raw=raw, with_text=bool(body.get("return_text"))))
            return
        top_n = body.get("top_n")
        results = []
        for i in order[:top_n] if top_n is not None else order:
            item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if body.get("return_documents"):
                item["document"] = documents[i] if isinstance(documents[i], dict) else {"text": texts[i]}
            results.append(item)
        n = int(result.get("prompt_eval_count") or 0)
        send_json(resp, {"model": view.name, "object": "list", "results": results,
                         "usage": {"prompt_tokens": n, "total_tokens": n}})

    def _only_reranker(self) -> str:
        """The model a TEI request without ``model`` means: the one installed reranker."""
        names = []
        for row in self.services.store.list():
            try:
                if "rerank" in self.services.store.model(row["name"]).capabilities:
                    names.append(row["name"])
            except PowerError:  # removed or damaged meanwhile: not a candidate
                continue
        if len(names) != 1:
            which = f"{len(names)} are installed: {', '.join(sorted(names))}" if names else "none is installed"
            raise InvalidRequest(f"model is required to pick a reranker ({which})")
        return names[0]


def tei_results(order: list[int], scores: list[float], texts: list[str], *, raw: bool,
                with_text: bool) -> list[dict[str, Any]]:
    """text-embeddings-inference's answer: ``[{"index", "score"[, "text"]}]``, best first; unless ``raw``,
    a classifier's logit goes through a sigmoid as TEI does."""
    out = []
    for i in order:
        score = scores[i] if raw else _sigmoid(scores[i])
        item: dict[str, Any] = {"index": i, "score": score}
        if with_text:
            item["text"] = texts[i]
        out.append(item)
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
