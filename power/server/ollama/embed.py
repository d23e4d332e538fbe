"""Ollama's embedding routes: ``/api/embed`` and the legacy ``/api/embeddings``."""

from __future__ import annotations

from typing import Any

import falcon

from power.server.body import model_field, read_json
from power.server.embeddings import Embedder, cut_dimensions, inputs_of
from power.server.streaming import send_json

__all__ = ["EmbedResource", "LegacyEmbeddingsResource"]


class EmbedResource(Embedder):
    endpoint = "/api/embed"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "EmbedRequest")
        name, result, total = self._embed(req, model_field(body), inputs_of(body.get("input")), body,
                                          normalize=True)
        out: dict[str, Any] = {"model": name,
                               "embeddings": cut_dimensions(result["embeddings"], body.get("dimensions"))}
        if total:
            out["total_duration"] = total
        for key in ("load_duration", "prompt_eval_count"):
            if result.get(key):
                out[key] = int(result[key])
        send_json(resp, out)


class LegacyEmbeddingsResource(Embedder):
    endpoint = "/api/embeddings"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "EmbeddingsRequest")
        _, result, _ = self._embed(req, model_field(body), inputs_of(body.get("prompt")), body, normalize=False)
        vectors = result["embeddings"]
        send_json(resp, {"embedding": [float(x) for x in vectors[0]] if vectors else []})
