"""Two real gunicorn replicas behind a real nginx, configured by the shipped ``deploy/nginx.conf``.

20 streaming clients (each its own X-Session-Id), one replica killed midway: the streams it was serving
end cut or with an error line, every other stream completes, and new requests all go to the survivor.
The same with the replica stopped by SIGTERM (a rolling update): none of its streams is cut.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from power.store import ModelStore
from tests.registry.servers import need, nginx_conf, stop, wait_port
from tests.server.conftest import add_model
from tests.server.live import ROOT, LiveServer, free_port
from tests.tinymodels import write_llama

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIENTS = 20
TOKENS = 400  # long enough that the kill lands mid-stream


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[LiveServer]]:
    models = tmp_path / "models"  # one store, shared
    add_model(ModelStore(models, noprune=True), "tiny", write_llama(tmp_path / "tiny.gguf"))
    # A short grace period after SIGTERM, so that a stopped replica's streams outlive it.
    env = {"OLLAMA_MODELS": str(models), "OLLAMA_NUM_PARALLEL": "4", "OLLAMA_KEEP_ALIVE": "-1",
           "A3S_POWER_SHUTDOWN_TIMEOUT": "2"}
    servers = []
    for i in range(2):
        (tmp_path / f"r{i}").mkdir()
        servers.append(LiveServer(tmp_path / f"r{i}", env))
    yield servers
    for s in servers:
        s.stop()


def nginx_front(tmp: Path, replicas: list[LiveServer]) -> tuple[subprocess.Popen[bytes], str]:
    """Start nginx with the shipped site config, its replica and listen addresses replaced."""
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("127.0.0.1:11435", f"127.0.0.1:{replicas[0].port}")
    site = site.replace("127.0.0.1:11436", f"127.0.0.1:{replicas[1].port}")
    port = free_port()
    site = site.replace("listen 127.0.0.1:11434;", f"listen 127.0.0.1:{port};")
    (tmp / "site.conf").write_text(site)
    (tmp / "nginx.conf").write_text(nginx_conf(tmp, f"  access_log {tmp}/access.log;\n  include {tmp}/site.conf;",
                                               connections=256))
    with open(tmp / "nginx.out", "wb") as out:
        proc = subprocess.Popen([need("nginx"), "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                                stdout=out, stderr=out)
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def kill_replica(live: LiveServer) -> None:
    """SIGKILL the replica's master, worker and runners at once, as a machine going down."""
    for pid in {live.proc.pid, *live.children()}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    live.proc.wait(10)


@pytest.fixture
def front(tmp_path: Path, replicas: list[LiveServer]) -> Iterator[str]:
    """nginx before the replicas, the model loaded on each before the clients come: its URL."""
    proc, url = nginx_front(tmp_path, replicas)
    try:
        for r in replicas:
            assert requests.post(f"{r.url}/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                                                "options": {"num_predict": 1}}).ok
        yield url
    finally:
        stop(proc)


def addr(live: LiveServer) -> str:
    return f"127.0.0.1:{live.port}"


def stream_clients(url: str) -> tuple[list[dict[str, Any]], threading.Semaphore, list[threading.Thread]]:
    """CLIENTS streaming clients through ``url``, each its own session: how each ended, a count of first lines."""
    results: list[dict[str, Any]] = [{} for _ in range(CLIENTS)]
    started = threading.Semaphore(0)

    def client(i: int) -> None:
        out = results[i]
        out["lines"] = 0
        try:
            with requests.post(f"{url}/api/generate", stream=True, timeout=300,
                               headers={"X-Session-Id": f"conversation-{i}"},
                               json={"model": "tiny", "prompt": f"story number {i}",
                                     "options": {"num_predict": TOKENS, "temperature": 0}}) as resp:
                out["status"] = resp.status_code
                out["by"] = resp.headers.get("X-Served-By", "")
                for raw in resp.iter_lines():
                    if not raw:
                        continue
                    try:
                        line = json.loads(raw)
                    except ValueError:  # not NDJSON: nginx's own error page
                        out["end"] = f"not json: {raw[:80]!r}"
                        break
                    out["lines"] += 1
                    if out["lines"] == 1:
                        started.release()
                    if "error" in line:
                        out["end"] = "error"
                    elif line.get("done"):
                        out["end"] = "done"
                        out["eval_count"] = line.get("eval_count")
        except requests.RequestException as exc:  # the stream was cut mid-body
            out["end"] = out.get("end") or f"cut: {type(exc).__name__}: {str(exc)[:120]}"
        out.setdefault("end", "cut: no final line")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for _ in range(8):  # both replicas are streaming (4 slots each)
        assert started.acquire(timeout=60)
    return results, started, threads


def new_requests(url: str, survivor_addr: str, n: int = 6) -> list[str]:
    """``n`` requests at once, whatever their session: each answered in full by the survivor; their X-Served-By."""
    served: list[str] = [""] * n

    def one(i: int) -> None:
        resp = requests.post(f"{url}/api/generate", headers={"X-Session-Id": f"conversation-{i}"}, timeout=300,
                             json={"model": "tiny", "prompt": "again", "stream": False,
                                   "options": {"num_predict": 4}})
        assert resp.status_code == 200 and resp.json()["done"], resp.text
        served[i] = resp.headers["X-Served-By"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all(re.search(re.escape(survivor_addr) + r"$", by) for by in served), served
    return served


def test_twenty_streams_one_replica_killed_midway(front: str, replicas: list[LiveServer]) -> None:
    results, _, threads = stream_clients(front)
    victim, survivor = replicas
    victim_addr, survivor_addr = addr(victim), addr(survivor)
    kill_replica(victim)
    t_kill = time.monotonic()
    for t in threads:
        t.join(300)
    ended = time.monotonic() - t_kill

    done = [r for r in results if r["end"] == "done"]
    failed = [r for r in results if r["end"] != "done"]
    print(f"\nreplicas: {len(done)} streams completed, {len(failed)} ended early "
          f"({sorted({r['end'] for r in failed})}), all ended {ended:.1f}s after the kill")
    assert all(r.get("status") == 200 for r in results), [r for r in results if r.get("status") != 200]
    assert all(r["eval_count"] == TOKENS for r in done)
    # Only the killed replica's streams failed, and it had some: the kill was mid-stream.
    assert failed and all(victim_addr in r["by"] for r in failed), failed
    assert all(re.search(re.escape(survivor_addr) + r"$", r["by"]) for r in done if victim_addr not in r["by"])
    assert any(survivor_addr in r["by"] for r in done)
    # New requests, whatever their session, go to the survivor and succeed.
    new_requests(front, survivor_addr)
    health = requests.get(f"{front}/health", timeout=10)
    assert health.status_code == 200 and health.json()["ready"] is True


def test_a_replica_stopped_midway_ends_its_streams_with_an_error_line(front: str,
                                                                      replicas: list[LiveServer]) -> None:
    """A rolling update: SIGTERM, not kill -9. Nothing is cut: the stopped replica's streams that outlive its
    grace period end with an error line, and requests sent while it drains are answered by the other."""
    results, _, threads = stream_clients(front)
    victim, survivor = replicas
    os.kill(victim.proc.pid, signal.SIGTERM)
    time.sleep(0.3)
    served = new_requests(front, addr(survivor))  # the victim refuses them with 503: nginx retries them
    for t in threads:
        t.join(300)
    assert victim.proc.wait(60) == 0

    ends = [r["end"] for r in results]
    print(f"\nrolling stop: {ends.count('done')} streams completed, {ends.count('error')} ended with an error "
          f"line, {len(ends) - ends.count('done') - ends.count('error')} cut; new requests served by {served}")
    assert all(r.get("status") == 200 for r in results), [r for r in results if r.get("status") != 200]
    assert all(end in ("done", "error") for end in ends), results
    errored = [r for r in results if r["end"] == "error"]
    assert errored and all(addr(victim) in r["by"] for r in errored), errored
    assert all(r["eval_count"] == TOKENS for r in results if r["end"] == "done")
