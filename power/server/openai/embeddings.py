"""OpenAI's ``/v1/embeddings``: floats or base64, optional ``dimensions``."""

from __future__ import annotations

import base64
import struct
from typing import Any, Sequence

import falcon

from power.errors import InvalidRequest
from power.server.body import read_json
from power.server.embeddings import Embedder, cut_dimensions, inputs_of
from power.server.streaming import send_json

__all__ = ["OpenAIEmbeddingsResource"]


def _base64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class OpenAIEmbeddingsResource(Embedder):
    endpoint = "/v1/embeddings"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "EmbeddingRequest")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise InvalidRequest(f"invalid encoding_format {encoding!r}: use float or base64")
        inputs = inputs_of(body.get("input"))
        if not inputs:
            raise InvalidRequest("invalid input: it must be a non-empty string or list of strings")
        name, result, _ = self._embed(req, body["model"], inputs, body, normalize=True)
        vectors = cut_dimensions(result["embeddings"], body.get("dimensions"))
        data = [{"object": "embedding", "embedding": _base64(v) if encoding == "base64" else v, "index": i}
                for i, v in enumerate(vectors)]
        tokens = int(result.get("prompt_eval_count") or 0)
        send_json(resp, {"object": "list", "data": data, "model": name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
