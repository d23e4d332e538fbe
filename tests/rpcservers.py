"""Real ``a3s-power rpc-server`` processes on loopback, for the RPC split tests and the benchmark."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from power.engine.rpc import RpcServer, probe
from power.errors import RpcUnreachable
from tests.server.live import free_port

ROOT = Path(__file__).resolve().parents[1]


class RpcServerProcess:
    """``python -m power rpc-server --port PORT`` until ``stop()``; its output goes to ``log``.

    With ``peer`` (the path of llama.cpp's own ``ggml-rpc-server``), that server instead, on the same terms.
    """

    def __init__(self, port: int, log: Path, *, threads: int = 1, mem_mib: int | None = None,
                 peer: Path | None = None) -> None:
        self.endpoint = f"127.0.0.1:{port}"
        self.log = log
        if peer is not None:
            cmd = [str(peer), "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)]
        else:
            cmd = [sys.executable, "-m", "power", "rpc-server", "--port", str(port), "--threads", str(threads)]
        if mem_mib:
            cmd += ["--mem", str(mem_mib)]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.info = self._wait()

    def _wait(self, timeout: float = 30.0) -> RpcServer:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return probe(self.endpoint, timeout=1.0)
            except RpcUnreachable:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rpc-server did not start:\n{self.log.read_text()}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def running_servers(folder: Path, count: int = 2) -> Iterator[list[RpcServerProcess]]:
    """``count`` servers on free loopback ports (logs in ``folder``), stopped when the generator ends: a fixture body."""
    servers: list[RpcServerProcess] = []
    try:
        for i in range(count):
            servers.append(RpcServerProcess(free_port(), folder / f"rpc{i}.log"))
        yield servers
    finally:
        for s in servers:
            s.stop()
