"""OpenAI's model listing: ``/v1/models`` and ``/v1/models/{model}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import falcon

from power.server.inference import Services, lookup
from power.server.streaming import send_json

__all__ = ["ModelResource", "ModelsResource"]


def _model_object(entry: dict[str, Any]) -> dict[str, Any]:
    name = entry.get("model") or entry.get("name") or ""
    ns = name.split("/")[-2] if name.count("/") >= 1 else "library"
    modified = entry.get("modified_at") or ""
    try:
        created = int(datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp())
    except ValueError:
        created = 0
    return {"id": name, "object": "model", "created": created, "owned_by": ns}


class ModelsResource:
    def __init__(self, services: Services) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        data = [_model_object(m) for m in self.services.store.list()]
        send_json(resp, {"object": "list", "data": data or None})


class ModelResource:
    def __init__(self, services: Services) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str) -> None:
        view = lookup(self.services, model)
        ns = view.namespace
        send_json(resp, {"id": view.name, "object": "model", "created": int(view.modified_at), "owned_by": ns})
