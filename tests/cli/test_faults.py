"""The CLI after faults (issue 12 item 8): a cut stream is a failure, and a full disk says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from power.cli.private import free_port
from power.client import Client
from tests.cli.conftest import CLI
from tests.cli.test_integration import serving
from tests.registry.servers import Scripted
from tests.tinymodels import write_llama
from tests.tmpfs import small_tmpfs

ROOT = Path(__file__).resolve().parents[2]
Cut = Callable[[BaseHTTPRequestHandler, list[bytes]], None]


def close_delimited(req: BaseHTTPRequestHandler, lines: list[bytes]) -> None:
    """An HTTP/1.0-style body that ends when the connection does: a clean EOF after the lines."""
    req.send_response(200)
    req.send_header("Content-Type", "application/x-ndjson")
    req.send_header("Connection", "close")
    req.end_headers()
    req.wfile.write(b"".join(lines))
    req.close_connection = True


def chunked_then_gone(req: BaseHTTPRequestHandler, lines: list[bytes]) -> None:
    """A chunked body whose last chunk never comes (a killed server's worker)."""
    req.send_response(200)
    req.send_header("Content-Type", "application/x-ndjson")
    req.send_header("Transfer-Encoding", "chunked")
    req.end_headers()
    for line in lines:
        req.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
    req.wfile.flush()
    req.close_connection = True


def whole(req: BaseHTTPRequestHandler, lines: list[bytes]) -> None:
    data = b"".join(lines)
    req.send_response(200)
    req.send_header("Content-Type", "application/x-ndjson")
    req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    req.wfile.write(data)


def dying(cut: Cut, last: dict[str, Any] | None = None) -> Scripted:
    """A server whose create, pull and push streams stop after some progress, as a dying server's do."""
    def handle(req: BaseHTTPRequestHandler) -> None:
        if req.command == "GET":
            whole(req, [b"Ollama is running"])
        elif req.command == "HEAD":  # every blob is already there
            req.send_response(200)
            req.send_header("Content-Length", "0")
            req.end_headers()
        else:
            req.rfile.read(int(req.headers.get("Content-Length") or 0))
            lines = [{"status": "parsing GGUF"},
                     {"status": "pulling abc", "digest": "sha256:" + "a" * 64, "total": 100, "completed": 50}]
            cut(req, [json.dumps(x).encode() + b"\n" for x in [*lines, *([last] if last else [])]])
    return Scripted(handle)


COMMANDS = [("create", ["create", "tiny", "-f"]), ("pull", ["pull", "some/model"]), ("push", ["push", "some/model"])]


@pytest.mark.parametrize("cut", [close_delimited, chunked_then_gone, whole])
@pytest.mark.parametrize("what,argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_stream_that_stops_before_success_fails(tmp_path: Path, modelfile: Path, cut: Cut, what: str,
                                                  argv: list[str]) -> None:
    server = dying(cut)
    try:
        r = CLI(tmp_path / "home", server.port)(*argv, *([str(modelfile)] if what == "create" else []))
    finally:
        server.close()
    assert any(p.startswith("POST /api/") for p in server.paths), "the command never reached the server"
    assert r.code == 1
    errors = [line for line in r.err.splitlines() if line.startswith("Error")]
    assert errors == [f"Error: lost connection to the server before the {what} finished"]
    assert r.err.endswith(errors[0] + "\n") and "Traceback" not in r.err and "success" not in r.err


@pytest.mark.parametrize("what,argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_the_same_stream_with_its_success_line_passes(tmp_path: Path, modelfile: Path, what: str,
                                                      argv: list[str]) -> None:
    server = dying(close_delimited, last={"status": "success"})
    try:
        r = CLI(tmp_path / "home", server.port)(*argv, *([str(modelfile)] if what == "create" else []))
    finally:
        server.close()
    assert r.code == 0, r.err
    assert "success" in r.err.splitlines() and "Error" not in r.err


def test_generation_cut_before_done_is_an_error(tmp_path: Path) -> None:
    server = dying(chunked_then_gone)
    try:
        with pytest.raises(Exception, match="lost connection to the server before the generate finished"):
            list(Client(server.url).generate({"model": "m", "prompt": "hi"}))
    finally:
        server.close()


# -- the real server on a full disk ----------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 160 MiB tmpfs; the server keeps 100 MiB free (its disk reserve), so about 60 MiB fit."""
    with small_tmpfs(tmp_path / "disk") as mount:
        yield mount


@pytest.fixture
def served_on(small_disk: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``a3s-power serve`` with its models folder on the small disk."""
    port = free_port()
    env = {**os.environ, "A3S_POWER_HOME": str(tmp_path / "home"), "OLLAMA_MODELS": str(small_disk / "models"),
           "OLLAMA_HOST": f"127.0.0.1:{port}", "PYTHONPATH": str(ROOT)}
    with serving(env, tmp_path / "serve.log"):
        yield env


def cli_create(env: dict[str, str], modelfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "power", "create", "big", "-f", str(modelfile)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def padded_model(folder: Path, mib: int) -> Path:
    """A valid tiny GGUF made ``mib`` MiB long by padding after its data."""
    path = write_llama(folder / "big.gguf")
    with open(path, "ab") as f:
        f.write(b"\0" * (mib << 20))
    (folder / "Modelfile").write_text("FROM ./big.gguf\nSYSTEM be brief\n")
    return folder / "Modelfile"


@pytest.mark.parametrize("mib,stage", [(200, "upload"), (62, "create")])
def test_full_disk_reaches_the_user_and_leaves_no_blob(served_on: dict[str, str], small_disk: Path,
                                                       tmp_path: Path, mib: int, stage: str) -> None:
    """The upload is refused midway (200 MiB), or fits and the create after it finds the disk full (62 MiB)."""
    src = tmp_path / "src"
    src.mkdir()
    r = cli_create(served_on, padded_model(src, mib))
    assert r.returncode == 1, r.stderr
    assert r.stderr.endswith("Error: no space left on device: the disk reserve would be used\n"), r.stderr
    assert "Broken pipe" not in r.stderr and "Traceback" not in r.stderr
    if stage == "create":
        assert "copying file" in r.stderr and "100%" in r.stderr  # the upload itself went through
    blobs = small_disk / "models" / "blobs"
    assert not blobs.is_dir() or sorted(p.name for p in blobs.iterdir()) == []  # no orphan, no temp file
    client = Client(f"http://{served_on['OLLAMA_HOST']}")
    assert client.tags() == []  # and the server keeps serving
