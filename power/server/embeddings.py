"""Embeddings on both APIs: ``/api/embed``, the legacy ``/api/embeddings`` and ``/v1/embeddings``."""

from __future__ import annotations

import base64
import math
import struct
import time
from typing import Any, Sequence

import falcon

from power.errors import InvalidRequest
from power.server.body import model_field, read_json
from power.server.inference import Services, check_keep_alive, lookup, merged_options
from power.server.streaming import send_json
from power.server.usage import UsageRecord

__all__ = ["EmbedResource", "LegacyEmbeddingsResource", "OpenAIEmbeddingsResource", "cut_dimensions"]


def cut_dimensions(vectors: list[list[float]], dimensions: int | None) -> list[list[float]]:
    """Keep the first ``dimensions`` values of each vector and L2-normalise again."""
    if not dimensions:
        return vectors
    out = []
    for v in vectors:
        v = list(v[:dimensions])
        norm = math.sqrt(sum(x * x for x in v))
        out.append([x / norm for x in v] if norm > 0 else v)
    return out


def _inputs(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


class _Embedder:
    endpoint = ""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _embed(self, req: falcon.Request, name: str, inputs: Sequence[str], body: dict[str, Any], *,
               normalize: bool) -> tuple[str, dict[str, Any], int]:
        req.context.model = name
        check_keep_alive(body.get("keep_alive"))
        view = lookup(self.services, name)
        start = time.monotonic()
        if not inputs:
            load_ns = self.services.scheduler.load(view.name, merged_options(view, body.get("options"), []),
                                                   body.get("keep_alive"))
            return view.name, {"embeddings": [], "load_duration": int(load_ns or 0)}, 0
        result = self.services.scheduler.embed(
            view.name, list(inputs), options=merged_options(view, body.get("options"), []),
            keep_alive=body.get("keep_alive"), truncate=body.get("truncate", True), normalize=normalize)
        total = int((time.monotonic() - start) * 1e9)
        if self.services.usage is not None:
            self.services.usage.record(UsageRecord(
                endpoint=self.endpoint, model=view.name, prompt_tokens=int(result.get("prompt_eval_count") or 0),
                completion_tokens=0, total_duration_ns=total,
                load_duration_ns=int(result.get("load_duration") or 0), request_id=req.context.rid))
        return view.name, result, total


class EmbedResource(_Embedder):
    endpoint = "/api/embed"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "EmbedRequest")
        name, result, total = self._embed(req, model_field(body), _inputs(body.get("input")), body,
                                          normalize=True)
        out: dict[str, Any] = {"model": name,
                               "embeddings": cut_dimensions(result["embeddings"], body.get("dimensions"))}
        if total:
            out["total_duration"] = total
        for key in ("load_duration", "prompt_eval_count"):
            if result.get(key):
                out[key] = int(result[key])
        send_json(resp, out)


class LegacyEmbeddingsResource(_Embedder):
    endpoint = "/api/embeddings"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "EmbeddingsRequest")
        _, result, _ = self._embed(req, model_field(body), _inputs(body.get("prompt")), body, normalize=False)
        vectors = result["embeddings"]
        send_json(resp, {"embedding": [float(x) for x in vectors[0]] if vectors else []})


def _base64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class OpenAIEmbeddingsResource(_Embedder):
    endpoint = "/v1/embeddings"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "EmbeddingRequest")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise InvalidRequest(f"invalid encoding_format {encoding!r}: use float or base64")
        inputs = _inputs(body.get("input"))
        if not inputs:
            raise InvalidRequest("invalid input: it must be a non-empty string or list of strings")
        name, result, _ = self._embed(req, body["model"], inputs, body, normalize=True)
        vectors = cut_dimensions(result["embeddings"], body.get("dimensions"))
        data = [{"object": "embedding", "embedding": _base64(v) if encoding == "base64" else v, "index": i}
                for i, v in enumerate(vectors)]
        tokens = int(result.get("prompt_eval_count") or 0)
        send_json(resp, {"object": "list", "data": data, "model": name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
