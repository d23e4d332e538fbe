"""What crosses the wire between a llama.cpp RPC client and its server: commands, bytes and round trips per token.

A TCP proxy in front of one RPC server counts every request the client sends (ggml-rpc's requests are
``| cmd (1 byte) | size (8 bytes) | payload |``, so the client-to-server stream parses on its own) and the
bytes coming back, and marks each ``GRAPH_COMPUTE`` (a whole graph sent) apart from ``GRAPH_RECOMPUTE``
(the server runs the graph it holds again: llama.cpp reused its graph). Run for both sides of
benchmarks/rpc.py's generation measure (a3s-power's engine and ``llama-bench --rpc``), against the same
server, it shows what each sends per generated token, and the CPU time each client and the server spend
per token (the difference between a short and a long run, so that loading cancels). CPU time, unlike
wall time, is not moved much by a busy machine; on loopback the client's CPU is taken from the server's
cores. The proxy's own latency makes wall times meaningless, so it reports none.

    python benchmarks/rpctrace.py [--model PATH] [--threads N] [--tokens 136]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from peer import build_tools  # noqa: E402

from tests.rpcservers import RpcServerProcess  # noqa: E402
from tests.server.live import free_port  # noqa: E402

# rpc_cmd at the pinned commit (ggml-rpc.cpp), by value
COMMANDS = ("ALLOC_BUFFER", "GET_ALIGNMENT", "GET_MAX_SIZE", "BUFFER_GET_BASE", "FREE_BUFFER", "BUFFER_CLEAR",
            "SET_TENSOR", "SET_TENSOR_HASH", "GET_TENSOR", "COPY_TENSOR", "GRAPH_COMPUTE", "GET_DEVICE_MEMORY",
            "INIT_TENSOR", "GET_ALLOC_SIZE", "HELLO", "DEVICE_COUNT", "GRAPH_RECOMPUTE", "MEMSET_TENSOR")


class Tally:
    """Requests by command (count, payload bytes) and bytes answered, since the last ``mark``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cmds: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.answered = 0

    def mark(self) -> dict[str, Any]:
        with self.lock:
            out = {"commands": dict(self.cmds), "request_bytes": dict(self.sent), "answered_bytes": self.answered}
            self.cmds, self.sent, self.answered = Counter(), Counter(), 0
        return out


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError
        buf += part
    return bytes(buf)


def _hang_up(sock: socket.socket) -> None:
    # shutdown, not close: the other relay thread blocked in recv() on this socket wakes only from shutdown,
    # and the server (one client at a time) must see this client leave.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _requests(client: socket.socket, server: socket.socket, tally: Tally) -> None:
    try:
        while True:
            head = _exact(client, 9)
            cmd, size = struct.unpack("<BQ", head)
            payload = _exact(client, size)
            name = COMMANDS[cmd] if cmd < len(COMMANDS) else f"cmd{cmd}"
            with tally.lock:
                tally.cmds[name] += 1
                tally.sent[name] += 9 + size
            server.sendall(head + payload)
    except (ConnectionError, OSError):
        pass
    finally:
        _hang_up(server)


def _answers(server: socket.socket, client: socket.socket, tally: Tally) -> None:
    try:
        while part := server.recv(1 << 16):
            with tally.lock:
                tally.answered += len(part)
            client.sendall(part)
    except OSError:
        pass
    finally:
        _hang_up(client)


class Proxy:
    """Listens on a free loopback port, relays each connection to ``target`` and counts into ``tally``."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.tally = Tally()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_requests, args=(client, server, self.tally), daemon=True).start()
            threading.Thread(target=_answers, args=(server, client, self.tally), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def per_token(a: dict[str, Any], b: dict[str, Any], tokens: int) -> dict[str, Any]:
    """What run ``b`` (``tokens`` more generated tokens than run ``a``) sent and spent beyond ``a``, per token."""
    names = set(a["commands"]) | set(b["commands"])
    cmds = {n: (b["commands"].get(n, 0) - a["commands"].get(n, 0)) / tokens for n in sorted(names)}
    sent = sum(b["request_bytes"].values()) - sum(a["request_bytes"].values())
    return {"commands": {n: round(v, 3) for n, v in cmds.items() if v},
            "round_trips": round(sum(v for n, v in cmds.items() if n in _ANSWERED), 3),
            "request_bytes": round(sent / tokens),
            "answered_bytes": round((b["answered_bytes"] - a["answered_bytes"]) / tokens),
            "client_cpu_ms": round((b["client_cpu"] - a["client_cpu"]) * 1000 / tokens, 2),
            "server_cpu_ms": round((b["server_cpu"] - a["server_cpu"]) * 1000 / tokens, 2)}


# Requests the client waits on an answer for (the rest are sent and not waited on)
_ANSWERED = {"ALLOC_BUFFER", "GET_ALIGNMENT", "GET_MAX_SIZE", "BUFFER_GET_BASE", "SET_TENSOR_HASH", "GET_TENSOR",
             "COPY_TENSOR", "GET_DEVICE_MEMORY", "GET_ALLOC_SIZE", "HELLO", "DEVICE_COUNT"}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def peer_gen(exe: Path, model: Path, threads: int, tokens: int, endpoint: str) -> None:
    subprocess.run([str(exe), "-m", str(model), "-t", str(threads), "-p", "0", "-n", str(tokens), "-r", "1",
                    "--rpc", endpoint, "-ngl", "99", "-o", "json"], check=True, capture_output=True)


def ours_gen(model: Path, threads: int, tokens: int, endpoint: str) -> None:
    subprocess.run([sys.executable, __file__, "--child", str(tokens), "--model", str(model), "--threads",
                    str(threads), "--server", endpoint], check=True, capture_output=True)


def child(args: argparse.Namespace) -> int:
    from engine import PP, TG, random_tokens

    from power.engine import Engine, LoadOptions

    load = LoadOptions(num_ctx=PP + TG + 64, num_batch=PP, num_thread=args.threads)
    with Engine(str(args.model), load, rpc_servers=(args.server,)) as eng:
        # As benchmarks/engine.py's generation measure: a short warm-up, then generation from BOS.
        eng.submit(random_tokens(eng, 32, random.Random(0)), {"temperature": 0, "num_predict": 2}).result()
        eng.clear_cache()
        eng.submit([eng.info.token_bos], {"temperature": 0, "num_predict": args.child}, ignore_eos=True).result()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=136, help="the longer run's generated tokens (the shorter: 8)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--server", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if args.model is None:
        from tests.realmodels import gemma3_270m

        args.model = gemma3_270m()
    if args.child:
        return child(args)
    tools = build_tools("llama-bench")
    logs = Path(tempfile.mkdtemp(prefix="rpc-trace-"))
    server = RpcServerProcess(free_port(), logs / "server.log", threads=args.threads)
    proxy = Proxy(server.endpoint)
    result: dict[str, Any] = {"model": args.model.name, "threads": args.threads, "tokens": args.tokens}
    try:
        runs = {"llama.cpp": lambda n: peer_gen(tools["llama-bench"], args.model, args.threads, n, proxy.endpoint),
                "a3s-power": lambda n: ours_gen(args.model, args.threads, n, proxy.endpoint)}
        for side, run in runs.items():
            counted = []
            for n in (8, args.tokens):  # the difference between two lengths: start-up and warm-up cancel
                proxy.tally.mark()
                client, srv = _children_cpu(), _process_cpu(server.proc.pid)
                run(n)
                counted.append({**proxy.tally.mark(), "client_cpu": _children_cpu() - client,
                                "server_cpu": _process_cpu(server.proc.pid) - srv})
            result[side] = per_token(counted[0], counted[1], args.tokens - 8)
    finally:
        proxy.close()
        server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rpctrace.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
