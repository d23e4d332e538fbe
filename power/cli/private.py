"""A private server for ``run`` when nothing answers at OLLAMA_HOST.

The CLI starts the same server it would reach over HTTP (``python -m power
serve``) on a free loopback port, in its own process group, waits until it
answers, uses it, and ends it (and the runners it started) at exit. The
settings travel through the inherited environment; only the address differs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from power import python_command
from power.client import Client
from power.config import Settings
from power.errors import PowerError

__all__ = ["PrivateServer", "free_port", "is_loopback"]

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    """True for addresses that can only mean this machine (a private server may stand in)."""
    h = host.strip("[]").lower()
    return h in ("localhost", "0.0.0.0", "::", "::1", "") or h.startswith("127.")


class PrivateServer:
    """Context manager: a background server for this CLI process only; yields its Client."""

    def __init__(self, settings: Settings, *, start_timeout: float = START_TIMEOUT) -> None:
        self.settings = settings
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def __enter__(self) -> Client:
        port = free_port()
        fd, name = tempfile.mkstemp(prefix="a3s-power-private-", suffix=".log")
        self.log_path = Path(name)
        cmd = [*python_command("power"), "serve", "--listen", f"127.0.0.1:{port}"]
        with os.fdopen(fd, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         start_new_session=True)
        client = Client(f"http://127.0.0.1:{port}", api_key=self.settings.api_key)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self._log_tail()
                self._cleanup()
                raise PowerError("could not start a private server" + (f": {tail}" if tail else ""))
            if client.heartbeat(timeout=0.5):
                log.info("private server ready port=%d pid=%d", port, self.proc.pid)
                return client
            time.sleep(0.1)
        self.stop()
        raise PowerError(f"the private server did not answer within {self.start_timeout:.0f}s")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _log_tail(self) -> str:
        if self.log_path is None:
            return ""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        errors = [ln for ln in lines if ln.startswith("Error:")]
        return (errors[-1].removeprefix("Error:").strip() if errors
                else "\n".join(lines[-5:]))

    def stop(self) -> None:
        """End the server's process group (gunicorn and the runners it spawned)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)
        if proc is not None:
            # Runners live in the same session; make sure none outlives the server.
            self._signal(proc, signal.SIGKILL)
        self._cleanup()

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _cleanup(self) -> None:
        self.proc = None
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
