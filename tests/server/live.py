"""A real gunicorn server on a free loopback port, for tests that need real sockets, signals and runners."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``gunicorn -c power/server/gunicorn_conf.py 'power.server.app:get_app()'`` over ``home``."""

    def __init__(self, home: Path, env: Mapping[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "server.log"
        full = {**os.environ, "A3S_POWER_HOME": str(home), "OLLAMA_MODELS": str(home / "models"),
                "OLLAMA_HOST": f"127.0.0.1:{self.port}", "OLLAMA_CONTEXT_LENGTH": "2048", **(env or {})}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "power/server/gunicorn_conf.py",
                                          "power.server.app:get_app()"], cwd=ROOT, env=full,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start:\n{self.log.read_text()}") from None
                time.sleep(0.2)

    def connect(self, timeout: float = 30.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
        """One plain HTTP/1.1 request on a fresh connection; the status and the whole body."""
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n").encode()
        with self.connect(timeout) as s:
            s.sendall(head + data)
            raw = read_all(s)
        return parse_status(raw), raw.split(b"\r\n\r\n", 1)[-1]

    def stream_lines(self, path: str, body: Any, timeout: float = 60.0) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield the NDJSON lines of the answer as they come (chunked transfer decoded)."""
        data = json.dumps(body).encode()
        s = self.connect(timeout)
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: {len(data)}\r\n"
                   "Connection: close\r\n\r\n").encode() + data)
        f = s.makefile("rb")
        try:
            status = f.readline()
            assert b" 200 " in status, status
            chunked = False
            while (line := f.readline()) not in (b"\r\n", b""):
                chunked |= line.lower().startswith(b"transfer-encoding: chunked")
            buf = b""
            while True:
                if chunked:
                    size = int(f.readline().strip() or b"0", 16)
                    if size == 0:
                        break
                    buf += f.read(size)
                    f.readline()
                else:
                    piece = f.readline()
                    if not piece:
                        break
                    buf += piece
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            f.close()
            s.close()

    def children(self) -> set[int]:
        """Every process descended from the gunicorn master (the worker and its runners)."""
        return descendants(self.proc.pid)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def parse_status(raw: bytes) -> int:
    parts = raw.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def descendants(pid: int) -> set[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if stat[0] != "Z":
            parents.setdefault(int(stat[1]), []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def runner_pids(pids: set[int]) -> set[int]:
    """Those of ``pids`` that are runner processes."""
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            # started by power.python_command("power.runner"): the module name inside -c, then --fd, --model, ...
            if any(b"'power.runner'" in a for a in argv) and b"--model" in argv:
                found.add(pid)
        except OSError:
            continue
    return found
