"""The fast lane (power/server/fastlane.py) on real gunicorn: answers from the event loop equal the app's.

A query string makes the worker decline the fast lane, so ``GET /api/tags?`` is the
app's own answer to compare with; ``/api/ps`` and ``/health`` are compared with a model
loaded (by a real generation) and without. Listing freshness is checked against every way a
manifest can change: through the API, and behind the server's back (another process
adding, replacing in place or removing a manifest file).
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.store import ModelStore
from power.server.fastlane import QueuedLog, fast_lane_of
from power.server.worker import KeptAlive
from tests.server.conftest import add_model
from tests.server.live import LiveServer, read_all
from tests.tinymodels import write_llama

MANIFESTS = ("models", "manifests", "registry.ollama.ai", "library")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("fast-home")
    gguf = write_llama(home / "tiny.gguf", seed=5)
    add_model(ModelStore(home / "models", noprune=True), "tiny", gguf)
    return home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[LiveServer]:
    live = LiveServer(home)
    yield live
    assert live.stop() == 0


def exchange(server: LiveServer, raw: bytes) -> bytes:
    with server.connect(10) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        return read_all(s)


def split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def get(server: LiveServer, target: str, method: str = "GET", extra: str = "") -> tuple[str, dict[str, str], bytes]:
    raw = (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{extra}"
           "Connection: close\r\n\r\n").encode()
    return split(exchange(server, raw))


def tags(server: LiveServer) -> list[str]:
    with urllib.request.urlopen(server.url + "/api/tags", timeout=10) as r:
        return [m["name"] for m in json.loads(r.read())["models"]]


def same_answer(server: LiveServer, path: str, method: str) -> Any:
    """The fast lane's answer and the app's are equal but for the request id, the date and time-derived
    fields (/health's uptime); the body (JSON for all but "/") comes back."""
    fast = get(server, path, method)
    slow = get(server, path + "?via=app", method)
    assert fast[0] == slow[0] == "HTTP/1.1 200 OK"
    if method == "GET":
        assert int(fast[1]["content-length"]) == len(fast[2]) > 0
    bodies = [answer[2] for answer in (fast, slow)]
    if path == "/health":
        if method == "GET":
            parsed = [json.loads(b) for b in bodies]
            assert 0 <= parsed[1].pop("uptime") - parsed[0].pop("uptime") < 5
            bodies = [json.dumps(p).encode() for p in parsed]
        assert abs(int(fast[1]["content-length"]) - int(slow[1]["content-length"])) <= 4  # uptime's digits
        fast[1]["content-length"] = slow[1]["content-length"]
    assert bodies[0] == bodies[1]
    for headers in (fast[1], slow[1]):
        headers.pop("date")
        assert len(headers.pop("x-request-id")) == 16
    assert fast[1] == slow[1]
    return json.loads(fast[2]) if method == "GET" and path != "/" else None


@pytest.mark.parametrize("path", ["/", "/api/version", "/api/tags", "/api/ps", "/health"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_fast_answers_equal_the_apps(server: LiveServer, path: str, method: str) -> None:
    if method == "HEAD" and path == "/api/ps":
        assert get(server, path, method)[0] == get(server, path + "?via=app", method)[0] == "HTTP/1.1 405 Method Not Allowed"
        return
    same_answer(server, path, method)


def _families(text: bytes) -> list[str]:
    return sorted(line.split()[2] for line in text.decode().splitlines() if line.startswith("# TYPE "))


@pytest.mark.parametrize("loaded", [False, True])
def test_metrics_answered_by_the_worker_equal_the_apps(server: LiveServer, loaded: bool) -> None:
    """/metrics from the worker's metrics thread: the app's headers and families, the counters up to date."""
    if loaded:
        status, _ = server.request("POST", "/api/generate", {"model": "tiny", "prompt": "hi", "stream": False,
                                                            "options": {"num_predict": 2}})
        assert status == 200
    fast, slow = get(server, "/metrics"), get(server, "/metrics?via=app")
    assert fast[0] == slow[0] == "HTTP/1.1 200 OK"
    assert _families(fast[2]) == _families(slow[2]) and len(_families(fast[2])) > 30
    assert (b'a3s_power_model_requests_running{model="tiny:latest"}' in fast[2]) is loaded
    for headers in (fast[1], slow[1]):
        headers.pop("date"), headers.pop("x-request-id"), headers.pop("content-length")
    assert fast[1] == slow[1]
    with server.connect(10) as s:  # kept alive after a metrics answer, and pipelined requests behind one
        s.sendall(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode() * 2 +
                  f"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode())
        answers = read_all(s)
    assert answers.count(b"HTTP/1.1 200 OK") == 3 and answers.endswith(b"}")
    if loaded:
        server.request("POST", "/api/generate", {"model": "tiny", "keep_alive": 0})


def test_ps_and_health_fast_answers_follow_the_scheduler(server: LiveServer) -> None:
    """A generation loads the model: both lanes show it, with the same expiry, and nothing running after."""
    status, body = server.request("POST", "/api/generate", {"model": "tiny", "prompt": "hi", "stream": False,
                                                           "options": {"num_predict": 2}})
    assert status == 200 and json.loads(body)["done"]
    [row] = same_answer(server, "/api/ps", "GET")["models"]
    assert row["name"] == "tiny:latest" and row["running"] == 0 and row["waiting"] == 0
    assert row["expires_at"] and row["context_length"] > 0
    health = same_answer(server, "/health", "GET")
    assert health["models_loaded"] == ["tiny:latest"] and health["running"] == 0 and health["ready"]
    server.request("POST", "/api/generate", {"model": "tiny", "keep_alive": 0})  # unloads
    assert same_answer(server, "/api/ps", "GET") == {"models": []}
    assert same_answer(server, "/health", "GET")["models_loaded"] == []


def test_keep_alive_and_pipelining(server: LiveServer) -> None:
    one = f"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    with server.connect(10) as s:
        for _ in range(200):  # one connection, request after request
            s.sendall(one)
            answer = b""
            while not answer.endswith(b"}"):
                answer += s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: keep-alive" in answer
        s.sendall(one + one + one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))  # pipelined
        answers = read_all(s)
    assert answers.count(b"HTTP/1.1 200 OK") == 3 and answers.endswith(b"}")


def test_request_id_connection_close_and_refusals(server: LiveServer) -> None:
    status, headers, _ = get(server, "/api/tags", extra="X-Request-ID: my-id.1\r\n")
    assert headers["x-request-id"] == "my-id.1" and headers["connection"] == "close"
    raw = "GET /api/tags HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".encode()
    status, _, body = split(exchange(server, raw))
    assert status.startswith("HTTP/1.1 403") and json.loads(body) == {"error": "forbidden"}
    status, headers, _ = get(server, "/api/tags", extra="Origin: http://localhost:3000\r\n")
    assert status.endswith("200 OK") and headers["access-control-allow-origin"] == "http://localhost:3000"
    status, _, body = get(server, "/api/tags", "POST")
    assert status.startswith("HTTP/1.1 405") and "error" in json.loads(body)


def test_fast_answers_are_counted_and_logged(server: LiveServer) -> None:
    def counted() -> float:
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("a3s_power_http_requests_total{") and 'route="/api/version"' in line
                   and 'method="GET"' in line and 'status="200"' in line)

    before = counted()
    for _ in range(5):
        get(server, "/api/version", extra="X-Request-ID: counted-5\r\n")
    assert counted() == before + 5
    line = "rid=counted-5 method=GET path=/api/version status=200 ms="
    deadline = time.monotonic() + 10  # the lane's lines are written by a thread of their own, a moment later
    while server.log.read_text().count(line) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log.read_text().count(line) == 5


def test_listing_follows_every_change(server: LiveServer, home: Path) -> None:
    assert tags(server) == ["tiny:latest"]
    body = json.dumps({"model": "copy-a", "from": "tiny", "stream": False}).encode()
    req = urllib.request.Request(server.url + "/api/create", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.loads(r.read())["status"] == "success"
    assert "copy-a:latest" in tags(server)  # made through the API: listed at once

    folder = home.joinpath(*MANIFESTS)
    shutil.copyfile(folder / "tiny" / "latest", folder / "tiny" / "v2")  # another process adds a tag
    assert "tiny:v2" in tags(server)
    (folder / "other").mkdir()
    shutil.copyfile(folder / "tiny" / "latest", folder / "other" / "latest")  # ... and a model
    assert "other:latest" in tags(server)

    with open(folder / "tiny" / "v2", "r+b") as f:  # rewritten in place with another model's manifest
        f.seek(0)
        f.truncate()
        f.write((folder / "copy-a" / "latest").read_bytes())
    digests = {m["name"]: m["digest"] for m in json.loads(urllib.request.urlopen(
        server.url + "/api/tags", timeout=10).read())["models"]}
    assert digests["tiny:v2"] == digests["copy-a:latest"] != digests["tiny:latest"]

    shutil.rmtree(folder / "other")
    (folder / "tiny" / "v2").unlink()
    req = urllib.request.Request(server.url + "/api/delete", data=json.dumps({"model": "copy-a"}).encode(),
                                 method="DELETE")
    urllib.request.urlopen(req, timeout=30).close()
    assert tags(server) == ["tiny:latest"]


# ---- FastLane.answer itself: what it answers and what it leaves to the app -------------------------
def _lane(make_client, **changes):  # type: ignore[no-untyped-def]
    lane = fast_lane_of(make_client(**changes).app)
    assert lane is not None
    return lane


PLAIN = b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1:11434\r\nAccept: */*\r\n\r\n"


def test_lane_answers_plain_polls(make_client) -> None:  # type: ignore[no-untyped-def]
    lane = _lane(make_client)
    answer = lane.answer(PLAIN, "127.0.0.1")
    assert answer is not None and answer[1] is True
    _, headers, body = split(answer[0])
    assert sorted(m["name"] for m in json.loads(body)["models"]) == ["embedder:latest", "tiny:latest"]
    assert lane.answer(PLAIN.replace(b"/api/tags", b"/api/tags/"), "127.0.0.1") is not None
    closing = lane.answer(PLAIN.replace(b"Accept", b"Connection: close\r\nAccept"), "127.0.0.1")
    assert closing is not None and closing[1] is False and b"Connection: close\r\n" in closing[0]
    head = lane.answer(PLAIN.replace(b"GET", b"HEAD"), "127.0.0.1")
    assert head is not None and head[0].endswith(b"\r\n\r\n") and f"content-length: {len(body)}".encode() in head[0]


@pytest.mark.parametrize("head", [
    PLAIN.replace(b"/api/tags", b"/api/tags?x=1"),
    PLAIN.replace(b"/api/tags", b"/v1/models"),
    PLAIN.replace(b"GET /api/tags", b"HEAD /api/ps"),
    PLAIN.replace(b"GET /api/tags", b"HEAD /metrics"),
    PLAIN.replace(b"GET", b"POST"),
    PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"),
    PLAIN.replace(b"127.0.0.1:11434", b"evil.example"),
    PLAIN.replace(b"Accept", b"Host: 127.0.0.1\r\nAccept"),
    PLAIN.replace(b"Accept", b"Origin: http://localhost\r\nAccept"),
    PLAIN.replace(b"Accept", b"Content-Length: 3\r\nAccept"),
    PLAIN.replace(b"Accept", b"Transfer-Encoding: chunked\r\nAccept"),
    PLAIN.replace(b"Accept", b"Connection: upgrade\r\nUpgrade: h2c\r\nAccept"),
    PLAIN.replace(b"Accept", b" folded\r\nAccept"),
    PLAIN.replace(b"Accept: */*", b"X-Big: " + b"a" * (40 << 10)),
    PLAIN.replace(b"Accept: */*", b"X-Long: " + b"a" * 8200),
    PLAIN.replace(b"Accept: */*", b"\r\n".join(b"X-H%d: v" % i for i in range(100))),
], ids=["query", "other-route", "head-ps", "head-metrics", "post", "http10", "foreign-host", "two-hosts", "origin", "body", "chunked",
        "upgrade", "folded", "huge-head", "long-field", "many-fields"])
def test_lane_declines_what_the_app_must_answer(make_client, head: bytes) -> None:  # type: ignore[no-untyped-def]
    assert _lane(make_client).answer(head, "127.0.0.1") is None


def test_lane_answers_metrics_off_the_loop(make_client) -> None:  # type: ignore[no-untyped-def]
    lane = _lane(make_client)
    head = PLAIN.replace(b"/api/tags", b"/metrics")
    assert lane.threaded(head) and not lane.threaded(PLAIN) and not lane.threaded(head.replace(b"GET", b"POST"))
    answer = lane.answer(head, "127.0.0.1")
    assert answer is not None
    _, headers, body = split(answer[0])
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"\nvllm:num_requests_waiting " in body and int(headers["content-length"]) == len(body)
    lane.metrics_wait = lambda: False  # the scheduler would answer at once: the loop itself answers
    assert not lane.threaded(head) and lane.answer(head, "127.0.0.1") is not None


def test_lane_answers_ps_and_ready_health_only(make_client, scheduler) -> None:  # type: ignore[no-untyped-def]
    lane = _lane(make_client)
    scheduler.loaded["tiny:latest"] = None
    answer = lane.answer(PLAIN.replace(b"/api/tags", b"/api/ps"), "127.0.0.1")
    assert answer is not None
    [row] = json.loads(split(answer[0])[2])["models"]
    assert row["name"] == "tiny:latest" and row["digest"] == "a" * 64
    answer = lane.answer(PLAIN.replace(b"/api/tags", b"/health"), "127.0.0.1")
    assert answer is not None and json.loads(split(answer[0])[2])["models_loaded"] == ["tiny:latest"]
    scheduler.depth = 10 ** 6  # a full queue: not ready, the app answers 503 with Retry-After
    assert lane.answer(PLAIN.replace(b"/api/tags", b"/health"), "127.0.0.1") is None


def test_lane_leaves_api_keys_to_the_app(make_client) -> None:  # type: ignore[no-untyped-def]
    lane = _lane(make_client, api_key="sekrit")
    assert lane.answer(PLAIN, "127.0.0.1") is None
    assert lane.answer(PLAIN.replace(b"/api/tags", b"/"), "127.0.0.1") is not None  # "/" needs no key


def test_kept_alive_connections_leave_in_any_order_and_expire_oldest_first() -> None:
    """The worker's stand-in for gthread's deque: what gthread calls on it, ``remove`` without a scan."""
    kept = KeptAlive()
    for conn in "abcde":
        kept.append(conn)
    kept.remove("c")  # a request arrives on a connection in the middle
    kept.discard("c")
    kept.append("a")  # answered and kept alive again: now the newest
    assert len(kept) == 4 and kept[0] == "b" and list(kept) == ["b", "d", "e", "a"]
    assert [kept.popleft() for _ in range(4)] == ["b", "d", "e", "a"] and not kept
    with pytest.raises(KeyError):
        kept.remove("z")


def test_queued_log_writes_every_line_in_order_through_the_loggers_handlers() -> None:
    logger = logging.getLogger("tests.fastlane.queued")
    logger.propagate = False
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.addHandler(Keep())
    logger.setLevel(logging.WARNING)
    queued = QueuedLog(logger, "n=%d who=%s")
    queued(0, "dropped")  # INFO is off: nothing made
    logger.setLevel(logging.INFO)
    for i in range(500):
        queued(i, "x")
    deadline = time.monotonic() + 10
    while len(lines) < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lines == [f"n={i} who=x" for i in range(500)]
