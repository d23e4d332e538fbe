"""The native model-management routes: heartbeat, version, tags, show, ps, create, copy, delete, blobs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import falcon

from power import __version__
from power.api import local_time
from power.errors import ModelNotFound, PowerError
from power.names import parse_name
from power.server.body import body_stream, model_field, read_json
from power.server.inference import Services
from power.server.streaming import JSON, send_json, send_ndjson
from power.store import parse_digest

__all__ = [
    "BlobResource",
    "CopyResource",
    "CreateResource",
    "DeleteResource",
    "PsResource",
    "RootResource",
    "ShowResource",
    "TagsResource",
    "TransferResource",
    "VersionResource",
    "ps_body",
]

log = logging.getLogger(__name__)


# What ``/`` and ``/api/version`` answer (also sent from the worker's fast lane, power/server/fastlane.py).
HEARTBEAT = "Ollama is running"
TEXT = "text/plain; charset=utf-8"


def version_body() -> dict[str, str]:
    return {"version": __version__}


class RootResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = TEXT
        resp.text = HEARTBEAT

    on_head = on_get


class VersionResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, version_body())

    on_head = on_get


class _WithServices:
    def __init__(self, services: Services) -> None:
        self.services = services


class TagsResource(_WithServices):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = JSON
        resp.data = self.services.store.tags_body()

    on_head = on_get


class ShowResource(_WithServices):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "ShowRequest")
        name = model_field(body)
        parse_name(name)
        try:
            shown = self.services.store.show(name, verbose=bool(body.get("verbose")), system=body.get("system"),
                                             options=body.get("options"))
        except ModelNotFound as exc:
            raise ModelNotFound(name, f"model '{name}' not found") from exc
        shown.setdefault("model_info", {})
        send_json(resp, shown)


def _ps_row(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("name", "model", "size", "size_vram", "digest", "details", "expires_at", "context_length",
            "processor", "running", "waiting", "status", "completed", "total")
    out = {k: row[k] for k in keep if k in row}
    expires = out.get("expires_at")
    if isinstance(expires, datetime):
        out["expires_at"] = local_time(expires)
    elif isinstance(expires, (int, float)):
        out["expires_at"] = local_time(float(expires))
    digest = out.get("digest")
    if isinstance(digest, str):
        out["digest"] = digest.removeprefix("sha256:")
    return out


def ps_body(scheduler: Any) -> dict[str, Any]:
    """What ``/api/ps`` answers (also from the worker's fast lane: ``Scheduler.ps`` never blocks)."""
    return {"models": [_ps_row(r) for r in scheduler.ps()]}


class PsResource(_WithServices):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, ps_body(self.services.scheduler))


class CreateResource(_WithServices):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "CreateRequest")
        req.context.model = body.get("model") or body.get("name") or ""
        progress = self.services.store.create(body)
        if body.get("stream", True):
            first = next(progress)  # validation errors keep their status
            send_ndjson(resp, _chain(first, progress), close=getattr(progress, "close", None))
            return
        for _ in progress:
            pass
        send_json(resp, {"status": "success"})


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


class CopyResource(_WithServices):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "CopyRequest")
        parse_name(body["source"])
        parse_name(body["destination"])
        self.services.store.copy(body["source"], body["destination"])
        resp.status = falcon.HTTP_200


class DeleteResource(_WithServices):
    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "DeleteRequest")
        name = model_field(body)
        parse_name(name)
        try:
            self.services.store.delete(name)
        except ModelNotFound as exc:
            raise ModelNotFound(name, f"model '{name}' not found") from exc
        try:
            self.services.scheduler.unload(name)
        except PowerError:
            log.debug("unload after delete failed model=%s", name, exc_info=True)
        resp.status = falcon.HTTP_200

    on_post = on_delete  # some clients POST it


class BlobResource(_WithServices):
    """``HEAD|POST /api/blobs/sha256:<hex>``: check or upload a blob (streamed to disk, hashed on the way)."""

    def on_head(self, req: falcon.Request, resp: falcon.Response, digest: str) -> None:
        parse_digest(digest)
        if not self.services.store.has_blob(digest):
            raise falcon.HTTPNotFound()
        resp.status = falcon.HTTP_200

    def on_get(self, req: falcon.Request, resp: falcon.Response, digest: str) -> None:
        self.on_head(req, resp, digest)
        send_json(resp, {"digest": parse_digest(digest)})

    def on_post(self, req: falcon.Request, resp: falcon.Response, digest: str) -> None:
        digest = parse_digest(digest)
        if self.services.store.has_blob(digest):
            resp.status = falcon.HTTP_200
            return
        created = self.services.store.add_blob(digest, _chunks(body_stream(req)))
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200


def _chunks(stream: Any, size: int = 1 << 20) -> Iterator[bytes]:
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk


class TransferResource(_WithServices):
    """``/api/pull`` and ``/api/push``: registry transfers streamed as Ollama's status lines."""

    def __init__(self, services: Services, what: str) -> None:
        super().__init__(services)
        self.what = what
        self._registry: Any = None

    def registry(self) -> Any:
        if self._registry is None:
            library = getattr(self.services.store, "library", None)
            if library is None:  # a store without a models folder behind it (unit-test fakes)
                raise falcon.HTTPNotImplemented(description=f"{self.what} needs a real model store")
            from power.registry import Registry

            self._registry = Registry.from_settings(self.services.settings, library)
        return self._registry

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "PullRequest" if self.what == "pull" else "PushRequest")
        name = model_field(body)
        req.context.model = name
        registry = self.registry()
        insecure = bool(body.get("insecure"))
        progress = registry.pull(name, insecure) if self.what == "pull" else registry.push(name, insecure)
        if body.get("stream", True):
            first = next(progress)  # a missing model or an unreachable registry keeps its status
            send_ndjson(resp, _chain(first, progress), close=progress.close)
            return
        for _ in progress:
            pass
        send_json(resp, {"status": "success"})
