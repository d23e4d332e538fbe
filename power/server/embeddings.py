"""The embedding job shared by every API family: run the scheduler, record usage, cut dimensions."""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import falcon

from power.errors import InvalidRequest
from power.server.inference import Services, check_keep_alive, lookup, merged_options
from power.server.usage import UsageRecord

__all__ = ["Embedder", "cut_dimensions", "inputs_of", "record_pooled"]


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


def inputs_of(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


class Embedder:
    """Base of the embedding resources: ``_embed`` runs one request through the scheduler."""

    endpoint = ""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _embed(self, req: falcon.Request, name: str, inputs: Sequence[str], body: dict[str, Any], *,
               normalize: bool) -> tuple[str, dict[str, Any], int]:
        req.context.model = name
        check_keep_alive(body.get("keep_alive"))
        view = lookup(self.services, name)
        if "rerank" in view.capabilities:  # refused before its runner is started for nothing
            raise InvalidRequest(f'"{view.name}" is a reranker: it scores documents against a query '
                                 "(/api/rerank), it does not embed")
        start = time.monotonic()
        if not inputs:
            load_ns = self.services.scheduler.load(view.name, merged_options(view, body.get("options"), []),
                                                   body.get("keep_alive"))
            return view.name, {"embeddings": [], "load_duration": int(load_ns or 0)}, 0
        result = self.services.scheduler.embed(
            view.name, list(inputs), options=merged_options(view, body.get("options"), []),
            keep_alive=body.get("keep_alive"), truncate=body.get("truncate", True), normalize=normalize)
        total = int((time.monotonic() - start) * 1e9)
        record_pooled(self.services, req, self.endpoint, view.name, result, total)
        return view.name, result, total


def record_pooled(services: Services, req: falcon.Request, endpoint: str, model: str, result: dict[str, Any],
                  total_ns: int) -> None:
    """Record the usage of an embed or rerank request (its prompt tokens; it generates none)."""
    if services.usage is not None:
        services.usage.record(UsageRecord(
            endpoint=endpoint, model=model, prompt_tokens=int(result.get("prompt_eval_count") or 0),
            completion_tokens=0, total_duration_ns=total_ns, load_duration_ns=int(result.get("load_duration") or 0),
            request_id=req.context.rid))
