"""llama.cpp RPC servers: asking one, before anything relies on it, whether it answers and what it offers.

ggml's RPC client aborts the whole process when a server refuses the connection or the handshake, and
waits without a bound on one that accepts but never answers (an ``rpc-server`` serves one client at a
time: a second client queues behind the first). So both the scheduler (to count remote memory, and to
choose a local load) and the runner (right before it hands the endpoint to llama.cpp) ask each server
themselves, over the same wire protocol, with a deadline: HELLO, then the device count and each device's
memory. Pure Python; the API server uses it without loading llama.cpp.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from power.errors import RpcUnreachable

__all__ = ["PROTO_MAJOR", "RpcServer", "RpcUnreachable", "parse_endpoints", "probe", "probe_all"]

PROTO_MAJOR = 7  # RPC_PROTO_MAJOR_VERSION at the pinned commit (ggml-rpc.h)
_CMD_GET_DEVICE_MEMORY = 11
_CMD_HELLO = 14
_CMD_DEVICE_COUNT = 15
_CAPS = 24  # RPC_CONN_CAPS_SIZE: transport capabilities; all zero asks for plain TCP
_MAX_DEVICES = 16


@dataclass(frozen=True)
class RpcServer:
    """An RPC server that answered: its endpoint and (free, total) bytes of each device it serves."""

    endpoint: str
    devices: tuple[tuple[int, int], ...]

    @property
    def free(self) -> int:
        return sum(f for f, _ in self.devices)

    @property
    def total(self) -> int:
        return sum(t for _, t in self.devices)


def parse_endpoints(raw: str | Iterable[str]) -> tuple[str, ...]:
    """``host:port`` entries of a comma-separated list (or an iterable), in order, without repeats.

    Raises ``ValueError`` naming the first entry that is not ``host:port`` with a port in 1..65535.
    """
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out: list[str] = []
    for item in items:
        entry = item.strip().strip("'\"")
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or ":" in host:
            raise ValueError(f"RPC server '{entry}' is not host:port")
        if entry not in out:
            out.append(entry)
    return tuple(out)


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("the server closed the connection")
        buf += part
    return buf


def _call(sock: socket.socket, cmd: int, payload: bytes, answer: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    (size,) = struct.unpack("<Q", _recv(sock, 8))
    if size != answer:
        raise ConnectionError(f"unexpected answer of {size} bytes to command {cmd}")
    return _recv(sock, size)


def probe(endpoint: str, timeout: float = 3.0) -> RpcServer:
    """Handshake with the RPC server at ``endpoint`` and read its devices' memory, within ``timeout`` seconds."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            hello = _call(sock, _CMD_HELLO, bytes(_CAPS), 4 + _CAPS)
            major, minor, patch = hello[:3]
            if major != PROTO_MAJOR:
                raise RpcUnreachable(f"RPC server {endpoint} speaks protocol {major}.{minor}.{patch}, "
                                     f"this build {PROTO_MAJOR}.x: run the same llama.cpp version on both")
            (count,) = struct.unpack("<I", _call(sock, _CMD_DEVICE_COUNT, b"", 4))
            devices = []
            for i in range(min(count, _MAX_DEVICES)):
                devices.append(struct.unpack("<QQ", _call(sock, _CMD_GET_DEVICE_MEMORY, struct.pack("<I", i), 16)))
    except TimeoutError:
        raise RpcUnreachable(f"RPC server {endpoint} did not answer within {timeout:g}s "
                             "(down, or serving another client)") from None
    except (OSError, ValueError) as exc:
        raise RpcUnreachable(f"RPC server {endpoint} is unreachable: {exc.strerror or exc}"
                             if isinstance(exc, OSError) else f"RPC server {endpoint}: {exc}") from exc
    if not devices:
        raise RpcUnreachable(f"RPC server {endpoint} offers no device")
    return RpcServer(endpoint, tuple((int(f), int(t)) for f, t in devices))


def probe_all(endpoints: Sequence[str], timeout: float = 3.0) -> tuple[list[RpcServer], list[RpcUnreachable]]:
    """Probe every endpoint: the servers that answered, and the errors of those that did not."""
    up: list[RpcServer] = []
    down: list[RpcUnreachable] = []
    for endpoint in endpoints:
        try:
            up.append(probe(endpoint, timeout))
        except RpcUnreachable as exc:
            down.append(exc)
    return up, down
