"""Reranking: ``/api/rerank``, ``/v1/rerank`` and llama-server's ``/rerank`` and ``/v1/reranking``.

The request is the one Jina, Cohere and llama-server share: ``model``,
``query``, ``documents`` (strings, or objects whose ``text`` is scored),
``top_n`` and ``return_documents``. The answer lists ``{"index",
"relevance_score"}`` best first (equal scores in the documents' order), with
``document`` (``{"text": ...}``, or the object as sent) when asked, and the
tokens evaluated under ``usage``. Scores are the model's classifier output as
llama-server gives them: a raw logit for BERT-style rerankers, the "yes"
probability for Qwen3-Reranker. One rank call scores every document.
"""

from __future__ import annotations

import time
from typing import Any

import falcon

from power.errors import InvalidRequest
from power.server.body import read_json
from power.server.embeddings import record_pooled
from power.server.inference import Services, check_keep_alive, lookup, merged_options, require_capability
from power.server.streaming import send_json

__all__ = ["RerankResource", "document_texts", "MAX_DOCUMENTS"]

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

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "RerankRequest")
        name = body["model"]
        req.context.model = name
        check_keep_alive(body.get("keep_alive"))
        view = lookup(self.services, name)
        require_capability(view, "rerank", "reranking")
        documents = body["documents"]
        texts = document_texts(documents)
        start = time.monotonic()
        result = self.services.scheduler.rerank(
            view.name, body["query"], texts, options=merged_options(view, body.get("options"), []),
            keep_alive=body.get("keep_alive"), truncate=body.get("truncate", True))
        total = int((time.monotonic() - start) * 1e9)
        record_pooled(self.services, req, self.endpoint, view.name, result, total)
        scores = [float(s) for s in result["scores"]]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
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
