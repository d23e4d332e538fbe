"""URL pulls from nginx: resume after SIGKILL, restart when Range is ignored, and crash safety (P1, P3, P4)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.store import ModelStore
from tests.registry.conftest import make_registry
from tests.registry.servers import Nginx, Scripted, nginx
from tests.tinymodels import write_llama

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def big_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("big") / "Big-Model.Q8_0.gguf", n_embd=256, n_ff=512)


@pytest.fixture
def slow_web(tmp_path: Path) -> Iterator[Nginx]:
    yield from nginx(tmp_path / "nginx", limit_rate="256k")


def final_blobs_match_names(store: ModelStore) -> None:
    for path in store.blobs.root.glob("sha256-*"):
        if path.name.endswith("partial") or "-partial" in path.name:
            continue
        assert "sha256-" + hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def completed(store: ModelStore) -> int:
    total = 0
    for path in store.blobs.root.glob("*-partial-*"):
        try:
            total += json.loads(path.read_bytes())["Completed"]
        except (OSError, ValueError):
            pass
    return total


def test_url_pull_names_model_after_file(web: Nginx, store: ModelStore, tiny_gguf: Path) -> None:
    (web.root / "Tiny-Chat.Q8_0.gguf").write_bytes(tiny_gguf.read_bytes())
    events = list(make_registry(store).pull(f"{web.url}/Tiny-Chat.Q8_0.gguf"))
    assert events[0] == {"status": "pulling manifest"}
    bars = [e for e in events if e.get("digest") == "Tiny-Chat.Q8_0.gguf"]
    assert bars[-1]["completed"] == bars[-1]["total"] == tiny_gguf.stat().st_size
    assert events[-1] == {"status": "success"}
    record = store.get("tiny-chat.q8_0")
    assert record.model_path is not None and record.model_path.read_bytes() == tiny_gguf.read_bytes()


def settled_log_count(web: Nginx) -> int:
    """The number of access-log lines once nginx has stopped adding to it (up to 5 s)."""
    count, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 5
    while time.monotonic() < deadline:
        now = len(web.bytes_sent())
        if now != count:
            count, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 0.5:
            break
        time.sleep(0.05)
    return count


def test_killed_pull_resumes_with_fewer_bytes(slow_web: Nginx, tmp_path: Path, big_gguf: Path) -> None:
    (slow_web.root / big_gguf.name).write_bytes(big_gguf.read_bytes())
    url = f"{slow_web.url}/{big_gguf.name}"
    models = tmp_path / "models"
    proc = subprocess.Popen([sys.executable, "-m", "tests.registry.pullproc", str(models), url], cwd=ROOT)
    store = ModelStore(models)
    deadline = time.monotonic() + 20
    while completed(store) < 400_000 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = sum(slow_web.bytes_sent()) if slow_web.bytes_sent() else 0
    done = completed(store)
    size = big_gguf.stat().st_size
    assert 0 < done < size
    final_blobs_match_names(store)
    assert store.list() == []

    logged_before = settled_log_count(slow_web)  # nginx logs the cut connections a little later
    events = list(make_registry(store).pull(url))
    assert events[-1] == {"status": "success"}
    time.sleep(0.2)
    second = sum(slow_web.bytes_sent()[logged_before:])
    assert second <= size - done + 1024, (first, done, second, size)
    assert second < size
    record = store.get("big-model.q8_0")
    assert record.model_path is not None and record.model_path.read_bytes() == big_gguf.read_bytes()
    assert not [p for p in store.blobs.root.iterdir() if "partial" in p.name]


def test_server_ignoring_range_restarts_from_zero(store: ModelStore, tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    served: list[str] = []

    def whole(req: Any) -> None:
        served.append(req.headers.get("Range", ""))
        req.send_response(200)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if req.command == "GET":
            req.wfile.write(data)

    server = Scripted(whole)
    try:
        events = list(make_registry(store).pull(f"{server.url}/x.gguf"))
    finally:
        server.close()
    assert events[-1] == {"status": "success"}
    assert "" in served  # fell back to one unranged stream
    assert store.get("x").model_path.read_bytes() == data  # type: ignore[union-attr]


def test_changed_remote_file_restarts_cleanly(web: Nginx, store: ModelStore, tiny_gguf: Path,
                                              big_gguf: Path) -> None:
    """Saved part state from a different file version (size or ETag) is thrown away, not mixed in."""
    path = web.root / "m.gguf"
    path.write_bytes(big_gguf.read_bytes())
    registry = make_registry(store)
    pull = registry.pull(f"{web.url}/m.gguf")
    next(pull)
    next(pull)
    pull.close()  # a client that went away: state kept
    path.write_bytes(tiny_gguf.read_bytes())
    assert list(registry.pull(f"{web.url}/m.gguf"))[-1] == {"status": "success"}
    assert store.get("m").model_path.read_bytes() == tiny_gguf.read_bytes()  # type: ignore[union-attr]
