"""The HTTP client against a scripted HTTP server: status mapping, NDJSON streams, blob upload."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from power.cli.private import free_port
from power.client import Client, HTTPStatusError, ServerUnreachable, file_digest
from power.errors import Busy, InvalidRequest, ModelNotFound, NotFound, PowerError


class _Handler(BaseHTTPRequestHandler):
    blobs: dict[str, bytes] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def do_GET(self) -> None:
        if self.path == "/":
            self._send(200, b"Ollama is running", "text/plain")
        elif self.path == "/api/version":
            self._send(200, {"version": "0.9.0"})
        elif self.path == "/api/tags":
            self._send(200, {"models": [{"name": "a:latest"}]})
        else:
            self._send(404, b"404 page not found", "text/plain")

    def do_HEAD(self) -> None:
        digest = self.path.rsplit("/", 1)[-1]
        self.send_response(200 if digest in self.blobs else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_DELETE(self) -> None:
        self._body()
        self._send(404, {"error": "model 'gone' not found"})

    def do_POST(self) -> None:
        raw = self._body()
        if self.path.startswith("/api/blobs/"):
            self.blobs[self.path.rsplit("/", 1)[-1]] = raw
            self._send(201, b"", "text/plain")
            return
        body = json.loads(raw or b"{}")
        if self.path == "/api/show":
            self._send(400, {"error": "invalid model name"} if body["model"] == "bad/" else {"model_info": {}})
        elif self.path == "/api/pull":
            self._send(501, {"error": "pull is not available yet in this build"})
        elif self.path == "/api/copy":
            self._send(503, {"error": "server busy, please try again.  maximum pending requests exceeded"})
        elif self.path == "/api/generate":
            lines = [{"response": "hi", "done": False}, {"response": " there", "done": False}]
            if body.get("prompt") == "fail":
                lines.append({"error": "runner died"})
            else:
                lines.append({"response": "", "done": True, "eval_count": 2})
            data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
            self._send(200, data, "application/x-ndjson")


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Client(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_heartbeat_and_json(client: Client) -> None:
    assert client.heartbeat()
    assert client.version() == "0.9.0"
    assert client.tags() == [{"name": "a:latest"}]


def test_statuses_become_power_errors(client: Client) -> None:
    with pytest.raises(InvalidRequest, match="invalid model name"):
        client.show("bad/")
    with pytest.raises(ModelNotFound, match="model 'gone' not found"):
        client.delete("gone")
    with pytest.raises(Busy):
        client.copy("a", "b")
    with pytest.raises(HTTPStatusError) as exc:
        list(client.pull({"model": "x"}))
    assert exc.value.status == 501 and "not available" in str(exc.value)
    with pytest.raises(NotFound, match="404 page not found"):
        client._json("GET", "/nowhere")


def test_stream_yields_objects_and_raises_error_lines(client: Client) -> None:
    chunks = list(client.generate({"model": "m", "prompt": "x"}))
    assert "".join(c["response"] for c in chunks) == "hi there" and chunks[-1]["done"]
    seen = []
    with pytest.raises(PowerError, match="runner died"):
        for c in client.generate({"model": "m", "prompt": "fail"}):
            seen.append(c)
    assert len(seen) == 2


def test_blob_upload(client: Client, tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights" * 1000)
    digest = file_digest(f)
    assert not client.blob_exists(digest)
    client.upload_blob(digest, f)
    assert client.blob_exists(digest)
    assert _Handler.blobs[digest] == f.read_bytes()


def test_unreachable() -> None:
    c = Client(f"http://127.0.0.1:{free_port()}")
    assert not c.heartbeat(timeout=0.5)
    with pytest.raises(ServerUnreachable, match="could not connect"):
        c.tags()
