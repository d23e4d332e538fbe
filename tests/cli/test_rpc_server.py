"""``a3s-power rpc-server``: ggml's RPC server from our own build, loopback unless told otherwise."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from power import native
from power.engine.rpc import probe
from power.errors import NativeError, RpcUnreachable
from tests.rpcservers import ROOT, RpcServerProcess
from tests.runner.procs import wait_for
from tests.server.live import free_port


def test_serves_its_cpu_on_loopback_and_mem_caps_what_it_reports(tmp_path: Path) -> None:
    server = RpcServerProcess(free_port(), tmp_path / "rpc.log", mem_mib=300)
    try:
        assert server.info.devices == ((300 << 20, 300 << 20),)
        assert probe(server.endpoint).devices == server.info.devices  # served one client after another
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Starting RPC server v7" in log and "endpoint       : 127.0.0.1:" in log
    assert "Never expose" not in log


def _answers(endpoint: str) -> bool:
    try:
        return bool(probe(endpoint, timeout=1).devices)
    except RpcUnreachable:
        return False


def test_off_loopback_it_prints_llama_cpp_warning(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "power", "rpc-server", "--host", "0.0.0.0", "--port", str(port),
                             "--threads", "1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        err = b""
        while b"not secure" not in err and time.monotonic() < deadline:
            err += proc.stderr.readline()  # type: ignore[union-attr]
        assert b"WARNING: Host ('0.0.0.0') is != '127.0.0.1'" in err
        assert b"Never expose the RPC server to an open network!" in err
        assert wait_for(lambda: _answers(f"127.0.0.1:{port}"), 30)
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "--port 0: use 1..65535"),
    (["--port", "70000"], "--port 70000: use 1..65535"),
    (["--threads", "0"], "--threads 0: use 1 or more"),
    (["--mem", "0"], "--mem 0: use 1 MiB or more"),
    (["--host", "::1"], "give an IPv4 address or a host name"),
])
def test_bad_arguments_are_one_error_line(args: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, "-m", "power", "rpc-server", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and message in out.stderr, out.stderr


def test_a_port_in_use_is_an_error_not_a_hang(tmp_path: Path) -> None:
    server = RpcServerProcess(free_port(), tmp_path / "rpc.log")
    try:
        port = server.endpoint.rsplit(":", 1)[1]
        out = subprocess.run([sys.executable, "-m", "power", "rpc-server", "--port", port], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and "Error: the RPC server on 127.0.0.1:" in out.stderr, out.stderr
    finally:
        server.stop()


def test_native_entry_points_check_their_endpoint() -> None:
    assert native.supports_rpc()
    with pytest.raises(NativeError, match="host:port"):
        native.rpc_add_server("no-port")
    with pytest.raises(NativeError, match="host:port"):
        native.rpc_serve("no-port", 1)
