"""The HTTP client the CLI uses to reach an a3s-power (or Ollama) server.

Built on ``http.client`` so the CLI needs nothing beyond the standard library to
talk to a server. This is the one seam where HTTP failures become
``power.errors`` exceptions: a status code and ``{"error": ...}`` body become
the matching ``PowerError`` subclass, a refused connection becomes
``ServerUnreachable``, and an ``{"error": ...}`` line inside an NDJSON stream
is raised where the stream is read.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping
from urllib.parse import urlsplit

from power.errors import (
    Busy, Canceled, InvalidRequest, ModelNotFound, NotFound, PowerError,
)

__all__ = ["Client", "ServerUnreachable", "StreamCut", "HTTPStatusError", "error_from_status", "file_digest"]

_CHUNK = 1 << 20


class ServerUnreachable(PowerError):
    """could not connect to a3s-power server, run 'a3s-power serve' to start it"""

    status = 503


class StreamCut(ServerUnreachable):
    """The server's stream ended before its last line (``done`` or ``success``): the server went away."""

    def __init__(self, what: str) -> None:
        super().__init__(f"lost connection to the server before the {what} finished")


class HTTPStatusError(PowerError):
    """The server answered with an error status this client has no better class for."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def error_from_status(status: int, message: str, model: str | None = None) -> PowerError:
    """Map an HTTP error status and message to the PowerError the server raised."""
    if status == 400:
        return InvalidRequest(message)
    if status == 404:
        return ModelNotFound(model, message) if model else NotFound(message)
    if status == 499:
        return Canceled(message)
    if status == 503:
        return Busy(message)
    return HTTPStatusError(message, status)


def _error_message(status: int, reason: str, data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # OpenAI's error object
            err = err.get("message")
        if isinstance(err, str) and err:
            return err
    text = data.decode("utf-8", "replace").strip()
    return text or f"{status} {reason}".strip()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class Client:
    """A small, synchronous client for Ollama's native API."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float | None = None,
                 connect_timeout: float = 5.0) -> None:
        parts = urlsplit(base_url if "://" in base_url else "http://" + base_url)
        self.base_url = base_url.rstrip("/")
        self.scheme = parts.scheme or "http"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    # -- plumbing ----------------------------------------------------------------
    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise ServerUnreachable() from exc
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def request(self, method: str, path: str, body: Any = None, *, data: bytes | BinaryIO | None = None,
                length: int | None = None, timeout: float | None = None,
                model: str | None = None) -> http.client.HTTPResponse:
        """Send one request; return the open response, or raise the mapped error for a status >= 400."""
        headers = {"Accept": "application/json, application/x-ndjson", "User-Agent": "a3s-power-cli"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        payload: bytes | BinaryIO | None = data
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if isinstance(payload, bytes):
            headers["Content-Length"] = str(len(payload))
        elif payload is not None and length is not None:
            headers["Content-Length"] = str(length)
        elif payload is None and method in ("POST", "PUT", "DELETE"):
            headers["Content-Length"] = "0"
        conn = self._connect(timeout if timeout is not None else self.timeout)
        broken: OSError | None = None
        try:
            conn.request(method, self.prefix + path, body=payload, headers=headers)
        except OSError as exc:
            # A server that refuses a body (a full disk) answers and closes before reading all of it: the
            # send breaks ("broken pipe"), but the answer is there to read, and it says why.
            broken = exc
        except http.client.HTTPException as exc:
            conn.close()
            raise ServerUnreachable(f"lost connection to the server: {exc}") from exc
        try:
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            cause = broken or exc
            raise ServerUnreachable(f"lost connection to the server: {_reason(cause)}") from cause
        if resp.status >= 400:
            data_ = resp.read() if method != "HEAD" else b""
            conn.close()
            raise error_from_status(resp.status, _error_message(resp.status, resp.reason, data_), model)
        return resp

    def _json(self, method: str, path: str, body: Any = None, *, model: str | None = None,
              timeout: float | None = None) -> Any:
        resp = self.request(method, path, body, model=model, timeout=timeout)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ServerUnreachable(f"lost connection to the server: {exc}") from exc
        finally:
            resp.close()
        if not data.strip():
            return {}
        try:
            return json.loads(data)
        except ValueError as exc:
            raise PowerError(f"unexpected server response: {data[:200]!r}") from exc

    def stream(self, path: str, body: Mapping[str, Any], *, model: str | None = None) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield each NDJSON object; an ``error`` line raises PowerError.

        Every stream ends with a last line, ``done: true`` (generate, chat) or
        ``status: success`` (create, pull, push); one that stops before it
        (the server died, the connection broke) raises StreamCut, never ends
        as if it had succeeded.
        """
        what = path.rstrip("/").rsplit("/", 1)[-1]
        resp = self.request("POST", path, dict(body), model=model)
        finished = False
        try:
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise StreamCut(what) from exc
                if not line:
                    if not finished:
                        raise StreamCut(what)
                    return
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise PowerError(f"unexpected server response: {line[:200]!r}") from exc
                if isinstance(obj, dict) and obj.get("error"):
                    raise PowerError(str(obj["error"]))
                if isinstance(obj, dict):
                    finished = obj.get("done") is True or obj.get("status") == "success"
                    yield obj
        finally:
            resp.close()

    # -- endpoints -----------------------------------------------------------------
    def heartbeat(self, timeout: float = 2.0) -> bool:
        """True when something answers ``GET /`` at the base URL."""
        saved = self.connect_timeout
        self.connect_timeout = timeout
        try:
            resp = self.request("GET", "/", timeout=timeout)
            resp.read()
            resp.close()
            return True
        except (ServerUnreachable, socket.timeout):
            return False
        except PowerError:
            return True  # an error status still means a server is listening
        finally:
            self.connect_timeout = saved

    def version(self) -> str:
        return str(self._json("GET", "/api/version", timeout=5.0).get("version", ""))

    def tags(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/tags").get("models") or [])

    def ps(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/ps").get("models") or [])

    def show(self, model: str, *, verbose: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model}
        if verbose:
            body["verbose"] = True
        return dict(self._json("POST", "/api/show", body, model=model))

    def copy(self, source: str, destination: str) -> None:
        self._json("POST", "/api/copy", {"source": source, "destination": destination}, model=source)

    def delete(self, model: str) -> None:
        self._json("DELETE", "/api/delete", {"model": model}, model=model)

    def embed(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/api/embed", dict(body), model=body.get("model")))

    def generate(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/generate", body, model=body.get("model"))

    def chat(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/chat", body, model=body.get("model"))

    def create(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/create", body)

    def pull(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/pull", body)

    def push(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/push", body)

    def blob_exists(self, digest: str) -> bool:
        try:
            self.request("HEAD", f"/api/blobs/{digest}").close()
        except NotFound:
            return False
        return True

    def upload_blob(self, digest: str, path: Path) -> None:
        """POST a file's bytes to ``/api/blobs/<digest>`` (streamed, not read into memory)."""
        size = path.stat().st_size
        with open(path, "rb") as f:
            resp = self.request("POST", f"/api/blobs/{digest}", data=f, length=size)
            resp.read()
            resp.close()
