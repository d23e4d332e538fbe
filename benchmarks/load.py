"""Many connections at once (issue 14): the control plane under load, queued streams, slow clients, memory.

For each side (a3s-power under gunicorn, then llama-server with the same slots), in one run:

1. ``tags``: with no generation, ``--tags-clients`` keep-alive clients call ``/api/tags`` (llama-server:
   ``/v1/models``) ``--tags-each`` times each: median and p99 latency.
2. ``load``: ``--idle`` idle keep-alive connections are opened and held, then ``--streams`` streaming
   generations start in waves (``--slots`` run, the rest queue), while a poller calls every control route
   in turn: per-route latency percentiles over the whole load, completed / refused (503) / failed streams,
   aggregate tokens/s, and the server's RSS before, at its peak, 2 s after and once the load's threads have
   ended (``settled``).
3. ``slowloris``: ``--slowloris`` connections each send half a request line and stop; the added latency of
   ``/api/version`` (llama-server: ``/health``) against an idle baseline.

Clients are asyncio streams in one thread (so the client side costs little CPU on a 2-core machine).
Writes ``benchmarks/results/load.json`` and ``load.png`` (control-plane latency over time, with the number
of open streams). Targets (a3s-power, 2 cores): control routes p99 < 50 ms under load, ``/api/tags`` p99 <
10 ms without load, slowloris adds < 100 ms, RSS back within 10% of its start.

    python benchmarks/load.py [--model PATH] [--slots 4] [--idle 1000] [--streams 500] [--tokens 8]
                              [--slowloris 1000] [--no-peer] [--only tags]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import logging
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from peer import build_tools  # noqa: E402
from plots import pyplot  # noqa: E402

log = logging.getLogger("benchmarks.load")

OURS_CONTROL = ["/api/tags", "/api/ps", "/api/version", "/health", "/metrics"]
PEER_CONTROL = ["/v1/models", "/health", "/props", "/slots", "/metrics"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not start")


def _status(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kib(pid: int) -> int:
    return _status(pid, "VmRSS")


async def _settled_rss_kib(pid: int, threads: int, limit: float = 60.0) -> tuple[int, float]:
    """RSS once the load's extra threads have ended (a3s-power's idle request threads end after 30 s),
    and the seconds that took (``limit`` at most)."""
    t0 = time.monotonic()
    while _status(pid, "Threads") > threads and time.monotonic() - t0 < limit:
        await asyncio.sleep(0.5)
    await asyncio.sleep(1)
    return _rss_kib(pid), time.monotonic() - t0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


class Side:
    name = ""
    control: list[str] = []
    tags_route = ""
    ping_route = ""
    generate_path = ""
    proc: subprocess.Popen[bytes]
    port = 0

    def server_pid(self) -> int:
        """The process that serves HTTP (gunicorn's worker for us, llama-server itself for the peer)."""
        return self.proc.pid

    def generate_body(self, i: int, tokens: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Ours(Side):
    name = "a3s-power"
    control = OURS_CONTROL
    tags_route = "/api/tags"
    ping_route = "/api/version"
    generate_path = "/api/generate"

    def __init__(self, model: Path, threads: int, ctx: int, slots: int, queue: int) -> None:
        from power.store import ModelStore

        self.home = Path(tempfile.mkdtemp(prefix="a3s-load-"))
        store = ModelStore(self.home / "models")
        for _ in store.create_from_modelfile("bench", f"FROM {model}\n", self.home):
            pass
        self.port = _free_port()
        self.threads = threads
        env = dict(os.environ, A3S_POWER_HOME=str(self.home), OLLAMA_MODELS=str(self.home / "models"),
                   OLLAMA_HOST=f"127.0.0.1:{self.port}", OLLAMA_NUM_PARALLEL=str(slots),
                   OLLAMA_CONTEXT_LENGTH=str(ctx), OLLAMA_KEEP_ALIVE="-1", OLLAMA_MAX_QUEUE=str(queue))
        self.proc = subprocess.Popen([sys.executable, "-m", "power", "serve"], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_http(f"http://127.0.0.1:{self.port}/api/version", "a3s-power")
        body = self.generate_body(0, 1)
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{self.port}/api/generate", body),
                               timeout=120).read()  # load the model

    def server_pid(self) -> int:
        # `a3s-power serve` is gunicorn's master; the worker is its child that is not a runner
        for child in _children(self.proc.pid):
            with open(f"/proc/{child}/cmdline", "rb") as fh:
                if b"power.runner" not in fh.read():
                    return child
        return self.proc.pid

    def generate_body(self, i: int, tokens: int) -> bytes:
        return json.dumps({"model": "bench", "prompt": f"Story number {i}: once upon a time", "raw": True,
                           "options": {"num_predict": tokens, "temperature": 0, "num_thread": self.threads}}
                          ).encode()


class Peer(Side):
    name = "llama-server"
    control = PEER_CONTROL
    tags_route = "/v1/models"
    ping_route = "/health"
    generate_path = "/completion"

    def __init__(self, exe: Path, model: Path, threads: int, ctx: int, slots: int) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [str(exe), "-m", str(model), "-t", str(threads), "-tb", str(threads), "-c", str(ctx * slots),
             "-np", str(slots), "--host", "127.0.0.1", "--port", str(self.port), "--no-webui", "-ngl", "0",
             "--metrics", "--slots"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_http(f"http://127.0.0.1:{self.port}/health", "llama-server")

    def generate_body(self, i: int, tokens: int) -> bytes:
        return json.dumps({"prompt": f"Story number {i}: once upon a time", "n_predict": tokens, "stream": True,
                           "temperature": 0}).encode()


# ---- a small asyncio HTTP/1.1 client -------------------------------------------------------------------
async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return out
            out += await reader.readexactly(size)
            await reader.readline()
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()


class Conn:
    """One keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def get(self, path: str) -> tuple[int, float]:
        if self.writer is None or self.writer.is_closing():
            await self.open()
        assert self.reader is not None and self.writer is not None
        t0 = time.perf_counter()
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
        status, headers = await _read_head(self.reader)
        await _read_body(self.reader, headers)
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        return status, time.perf_counter() - t0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _read_answer(f: Any) -> int:
    """Read one HTTP/1.1 answer from the file ``f``; its status."""
    line = f.readline()
    if not line:
        raise ConnectionError("closed")
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while (h := f.readline()) not in (b"\r\n", b""):
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while (size := int(f.readline().split(b";")[0].strip() or b"0", 16)):
            f.read(size + 2)
        f.readline()
    else:
        f.read(int(headers.get("content-length", "0")))
    if headers.get("connection", "").lower() == "close":
        raise ConnectionAbortedError(status)
    return status


def _poll_routes(port: int, routes: list[str], halt: Any, results: Any) -> None:
    """The control-plane poller, in a process of its own: in the load's client, each answer waited behind
    the stream chunks that client had to read first, which measured the client, not the server."""
    polled: list[tuple[float, str, float]] = []
    failures = {r: 0 for r in routes}
    sock: socket.socket | None = None
    f: Any = None
    while not halt.is_set():
        for route in routes:
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                    f = sock.makefile("rb")
                t = time.perf_counter()
                sock.sendall(f"GET {route} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                try:
                    status = _read_answer(f)
                except ConnectionAbortedError as closed:
                    status = int(closed.args[0])
                    sock.close()
                    sock = None
                took = time.perf_counter() - t
            except (OSError, ValueError, IndexError):
                failures[route] += 1
                if sock is not None:
                    sock.close()
                sock = None
                continue
            if status == 200:
                polled.append((t, route, took))
            else:
                failures[route] += 1
        time.sleep(0.05)
    if sock is not None:
        sock.close()
    results.put((polled, failures))


async def stream_once(port: int, path: str, body: bytes, timeout: float) -> tuple[str, int]:
    """One streaming generation on its own connection: ("done"|"refused"|"failed", pieces received)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "failed", 0
    pieces = 0
    try:
        writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
        status, headers = await asyncio.wait_for(_read_head(reader), timeout)
        if status == 503:
            return "refused", 0
        if status != 200:
            return "failed", 0
        deadline = time.monotonic() + timeout
        while (line := await asyncio.wait_for(reader.readline(), max(1.0, deadline - time.monotonic()))):
            if b'"response"' in line or b'"content"' in line:
                pieces += 1
        return "done", pieces
    except (OSError, asyncio.TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError):
        return "failed", pieces
    finally:
        writer.close()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * len(values))) - 1))]


def _summary(lat_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in lat_s]
    return {"n": len(ms), "median_ms": statistics.median(ms) if ms else float("nan"),
            "p99_ms": _pct(ms, 0.99), "max_ms": max(ms) if ms else float("nan")}


class _Poller(asyncio.Protocol):
    """One keep-alive connection asking ``path`` ``each`` times in a row, in callbacks: the streams-based
    ``Conn`` costs about 250 us of client CPU per answer, more than the server spends on a listing."""

    def __init__(self, request: bytes, each: int, lat: list[float], done: asyncio.Future[None]) -> None:
        self.request, self.left, self.lat, self.done = request, each, lat, done
        self.buf = b""
        self.need = -1
        self.t0 = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._ask()

    def _ask(self) -> None:
        self.t0 = time.perf_counter()
        self.transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
                ok = head.startswith(b"http/1.1 200")
                self.need = end + 4 + length if ok else -2
            if self.need == -2:  # not a 200: stop this client
                self.transport.close()
                return
            if len(self.buf) < self.need:
                return
            self.lat.append(time.perf_counter() - self.t0)
            self.buf, self.need = self.buf[self.need:], -1
            self.left -= 1
            if self.left <= 0:
                self.transport.close()
                return
            self._ask()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def tags_phase(side: Side, clients: int, each: int) -> dict[str, Any]:
    lat: list[float] = []
    loop = asyncio.get_running_loop()
    request = f"GET {side.tags_route} HTTP/1.1\r\nHost: 127.0.0.1:{side.port}\r\n\r\n".encode()
    dones = [loop.create_future() for _ in range(clients)]
    t0 = time.perf_counter()
    for done in dones:
        await loop.create_connection(lambda d=done: _Poller(request, each, lat, d), "127.0.0.1", side.port)
    await asyncio.gather(*dones)
    wall = time.perf_counter() - t0
    return {**_summary(lat), "clients": clients, "answers_per_s": len(lat) / wall}


async def load_phase(side: Side, idle: int, streams: int, tokens: int, wave: int) -> dict[str, Any]:
    pid = side.server_pid()
    rss_before = _rss_kib(pid)
    threads_before = _status(pid, "Threads")
    held: list[asyncio.StreamWriter] = []
    for _ in range(idle):  # idle keep-alive connections: one request each, then held open
        c = Conn(side.port)
        try:
            await c.get(side.ping_route)
        except (OSError, ConnectionError, ValueError, IndexError):
            continue
        if c.writer is not None:
            held.append(c.writer)
    timeline: list[dict[str, Any]] = []
    per_route: dict[str, list[float]] = {r: [] for r in side.control}
    failures = {r: 0 for r in side.control}
    open_streams = 0
    peak_rss = rss_before
    stop = asyncio.Event()

    async def sample() -> None:  # RSS and the open streams, for the poller's timeline
        nonlocal peak_rss
        while not stop.is_set():
            peak_rss = max(peak_rss, _rss_kib(pid))
            counts.append((time.perf_counter() - t0, open_streams))
            await asyncio.sleep(0.1)

    async def one(i: int) -> tuple[str, int]:
        nonlocal open_streams
        open_streams += 1
        try:
            return await stream_once(side.port, side.generate_path, side.generate_body(i, tokens), 900)
        finally:
            open_streams -= 1

    counts: list[tuple[float, int]] = []
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    halt = ctx.Event()
    poller = ctx.Process(target=_poll_routes, args=(side.port, side.control, halt, results), daemon=True)
    poller.start()
    t0 = time.perf_counter()
    poll_offset = t0  # the poller stamps its points with the same monotonic clock (another process)
    sampler = asyncio.create_task(sample())
    tasks = []
    for start in range(0, streams, wave):
        tasks += [asyncio.create_task(one(i)) for i in range(start, min(streams, start + wave))]
        await asyncio.sleep(0.5)
    outcomes = await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    stop.set()
    await sampler
    halt.set()
    polled, failures = await asyncio.get_running_loop().run_in_executor(None, results.get)
    poller.join(10)
    times = [t for t, _ in counts]
    for at, route, took in polled:
        per_route[route].append(took)
        i = bisect.bisect_right(times, at - poll_offset) - 1
        timeline.append({"t": at - poll_offset, "route": route, "ms": took * 1000,
                         "streams": counts[i][1] if i >= 0 else 0})
    alive_idle = 0
    for w in held:
        alive_idle += not w.is_closing()
        w.close()
    await asyncio.sleep(2)
    rss_after = _rss_kib(pid)
    rss_settled, settle_s = await _settled_rss_kib(pid, threads_before)
    outcome = {k: sum(1 for r, _ in outcomes if r == k) for k in ("done", "refused", "failed")}
    pieces = sum(n for r, n in outcomes if r == "done")
    return {"idle_opened": len(held), "streams": streams, **outcome, "wall_s": wall,
            "pieces_per_s": pieces / wall if wall else 0.0,
            "control": {r: {**_summary(v), "failures": failures[r]} for r, v in per_route.items()},
            "control_all": _summary([x for v in per_route.values() for x in v]),
            "rss_kib": {"before": rss_before, "peak": peak_rss, "after": rss_after, "settled": rss_settled},
            "settle_s": settle_s,
            "timeline": timeline}


async def slowloris_phase(side: Side, count: int) -> dict[str, Any]:
    async def baseline(n: int = 20) -> list[float]:
        out = []
        c = Conn(side.port)
        for _ in range(n):
            try:
                status, took = await asyncio.wait_for(c.get(side.ping_route), 60)
                out.append(took)
            except (OSError, ConnectionError, asyncio.TimeoutError, ValueError, IndexError):
                out.append(60.0)
                c.close()
                c = Conn(side.port)
        c.close()
        return out

    before = await baseline()
    writers = []
    for _ in range(count):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", side.port)
        except OSError:
            break
        w.write(b"GET /api/ta")
        writers.append(w)
    await asyncio.sleep(1.0)
    during = await baseline()
    for w in writers:
        w.close()
    return {"connections": len(writers), "before": _summary(before), "during": _summary(during),
            "added_p99_ms": (_pct(during, 0.99) - _pct(before, 0.99)) * 1000}


def run_side(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    asyncio.run(tags_phase(side, args.tags_clients, 10))  # warm-up: connections, caches
    out["tags"] = asyncio.run(tags_phase(side, args.tags_clients, args.tags_each))
    log.info("%s tags: %s", side.name, out["tags"])
    if args.only == "tags":
        return out
    out["load"] = asyncio.run(load_phase(side, args.idle, args.streams, args.tokens, args.wave))
    log.info("%s load: %s", side.name, {k: v for k, v in out["load"].items() if k != "timeline"})
    out["slowloris"] = asyncio.run(slowloris_phase(side, args.slowloris))
    log.info("%s slowloris: %s", side.name, out["slowloris"])
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    sides = list(result["sides"])
    fig, axes = plt.subplots(len(sides), 1, figsize=(10, 4 * len(sides)), squeeze=False)
    for ax, name in zip(axes[:, 0], sides):
        tl = result["sides"][name]["load"]["timeline"]
        for route in sorted({p["route"] for p in tl}):
            pts = [p for p in tl if p["route"] == route]
            ax.plot([p["t"] for p in pts], [p["ms"] for p in pts], ".", markersize=3, label=route)
        ax.set_yscale("log")
        ax.set_ylabel("control-plane latency (ms)")
        ax.set_title(f"{name}: {result['idle']} idle connections + {result['streams']} streams")
        twin = ax.twinx()
        twin.plot([p["t"] for p in tl], [p["streams"] for p in tl], "k-", linewidth=0.8, alpha=0.5)
        twin.set_ylabel("open streams")
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="GGUF (default: Gemma 3 270M from tests/realmodels.py)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ctx", type=int, default=512, help="context per sequence")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--queue", type=int, default=512, help="OLLAMA_MAX_QUEUE for a3s-power")
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--wave", type=int, default=100, help="streams started every half second")
    ap.add_argument("--tokens", type=int, default=8, help="tokens generated per stream")
    ap.add_argument("--tags-clients", type=int, default=50)
    ap.add_argument("--tags-each", type=int, default=200)
    ap.add_argument("--slowloris", type=int, default=1000)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--only", choices=["tags"], help="tags: only the /api/tags phase (no generation)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    if args.model is None:
        from tests.realmodels import gemma3_270m  # tests/ itself is not on sys.path: tests/packaging shadows a module
        args.model = gemma3_270m()
    result: dict[str, Any] = {"model": args.model.name, "threads": args.threads, "slots": args.slots,
                              "idle": args.idle, "streams": args.streams, "tokens": args.tokens, "sides": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "load-tags" if args.only == "tags" else "load"
    ours = Ours(args.model, args.threads, args.ctx, args.slots, args.queue)
    try:
        result["sides"]["a3s-power"] = run_side(ours, args)
    finally:
        ours.close()
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")  # each side as it ends
    if not args.no_peer:
        peer = Peer(build_tools("llama-server")["llama-server"], args.model, args.threads, args.ctx, args.slots)
        try:
            result["sides"]["llama-server"] = run_side(peer, args)
        finally:
            peer.close()
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.only is None:
        plot(result, args.out / "load.png")
    brief = {name: {"tags_median_ms": s["tags"]["median_ms"], "tags_p99_ms": s["tags"]["p99_ms"],
                    "tags_answers_per_s": s["tags"]["answers_per_s"]} | ({} if "load" not in s else {
                    "control_p99_ms": {r: v["p99_ms"] for r, v in s["load"]["control"].items()},
                    "done": s["load"]["done"], "refused": s["load"]["refused"], "failed": s["load"]["failed"],
                    "rss_kib": s["load"]["rss_kib"], "slowloris_added_p99_ms": s["slowloris"]["added_p99_ms"]})
             for name, s in result["sides"].items()}
    log.info("%s", json.dumps(brief, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
