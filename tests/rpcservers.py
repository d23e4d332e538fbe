"""Real ``a3s-power rpc-server`` processes on loopback, for the RPC split tests and the benchmark."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from power.engine.rpc import RpcServer, probe
from power.errors import RpcUnreachable

ROOT = Path(__file__).resolve().parents[1]


class RpcServerProcess:
    """``python -m power rpc-server --port PORT`` until ``stop()``; its output goes to ``log``."""

    def __init__(self, port: int, log: Path, *, threads: int = 1, mem_mib: int | None = None) -> None:
        self.endpoint = f"127.0.0.1:{port}"
        self.log = log
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
