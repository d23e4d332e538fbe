"""Bounded input against real gunicorn (P6): slow headers, slow bodies and oversized headers, over plain sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.live import LiveServer, parse_status, read_all

HEADER_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("slow-home"), {
        "A3S_POWER_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "A3S_POWER_BODY_GRACE": "1",
        "A3S_POWER_BODY_MIN_RATE": "200"})
    yield live
    assert live.stop() == 0


def _trickle(s: socket.socket, data: bytes, every: float, stop: threading.Event) -> None:
    for i in range(len(data)):
        if stop.is_set():
            return
        try:
            s.sendall(data[i:i + 1])
        except OSError:
            return
        time.sleep(every)


def _slow_answer(s: socket.socket, data: bytes, every: float = 1.0) -> tuple[bytes, float]:
    """Send ``data`` a byte at a time; return what the server answered and when the connection ended."""
    stop = threading.Event()
    start = time.monotonic()
    t = threading.Thread(target=_trickle, args=(s, data, every, stop), daemon=True)
    t.start()
    try:
        raw = read_all(s)
    except OSError:
        raw = b""
    stop.set()
    return raw, time.monotonic() - start


def test_headers_sent_a_byte_a_second_get_408(server: LiveServer) -> None:
    head = f"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Slow: {'a' * 40}\r\n\r\n".encode()
    with server.connect() as s:
        raw, took = _slow_answer(s, head)
    assert parse_status(raw) == 408 and b"request header not received in time" in raw
    assert took < HEADER_TIMEOUT + 3


def test_slow_clients_do_not_starve_others(server: LiveServer) -> None:
    head = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n" + "X-Slow: y\r\n" * 20
    slow = [server.connect() for _ in range(20)]  # more than the worker's threads
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda s=s: answers.append(_slow_answer(s, head.encode(), 0.5)[0]))
               for s in slow]
    for t in threads:
        t.start()
    time.sleep(0.5)
    start = time.monotonic()
    status, body = server.request("GET", "/api/version")
    assert status == 200 and b"version" in body
    assert time.monotonic() - start < HEADER_TIMEOUT + 3
    for t in threads:
        t.join(HEADER_TIMEOUT * 3 + 5)
    for s in slow:
        s.close()
    assert len(answers) == 20 and all(parse_status(a) == 408 for a in answers)


def test_body_below_the_minimum_rate_gets_408(server: LiveServer) -> None:
    body = b'{"model": "' + b"x" * 300 + b'"}'
    head = (f"POST /api/show HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\n\r\n").encode()
    with server.connect() as s:
        s.sendall(head + body[:5])
        raw, took = _slow_answer(s, body[5:], 0.2)
    assert parse_status(raw) == 408 and b"request body not received in time" in raw
    assert took < 6
    status, _ = server.request("POST", "/api/show", {"model": "missing"})
    assert status == 404  # a normal body is fine


def test_slow_blob_upload_gets_408_and_leaves_no_blob(server: LiveServer) -> None:
    digest = "sha256:" + "0" * 64
    head = (f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: 100000\r\n"
            "\r\n").encode()
    with server.connect() as s:
        s.sendall(head + b"z" * 100)
        raw, _ = _slow_answer(s, b"z" * 50, 0.2)
    assert parse_status(raw) == 408
    blobs = Path(server.home) / "models" / "blobs"
    assert not blobs.exists() or list(blobs.iterdir()) == []  # no blob, no temporary file


@pytest.mark.parametrize("headers", [
    "".join(f"X-H{i}: v\r\n" for i in range(200)),  # too many fields (gunicorn's limit)
    "X-Big: " + "b" * 20000 + "\r\n",  # one field too large (gunicorn's limit)
    "".join(f"X-H{i}: {'c' * 1000}\r\n" for i in range(40)),  # too many bytes in all (the app's cap)
])
def test_oversized_headers_get_431(server: LiveServer, headers: str) -> None:
    with server.connect() as s:
        s.sendall(f"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{headers}"
                  "Connection: close\r\n\r\n".encode())
        raw = read_all(s)
    assert parse_status(raw) == 431


def test_clients_that_never_close_after_a_closing_answer_stall_nobody(server: LiveServer) -> None:
    """A thread's answer with ``Connection: close`` ends with our FIN; gthread then waited up to 2 s in its
    event loop for the client's (each), so 4 clients that read their answer and keep the socket open held
    every other connection for 8 s. Now the drain waits in the poller, and the connection is closed after it."""
    held = []
    for _ in range(4):
        s = server.connect()
        s.sendall(f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode())
        held.append(s)
    try:
        time.sleep(0.5)  # answered, and their drains begin
        with server.connect(timeout=3) as other:  # would wait for 4 x 2 s behind the graceful closes
            other.sendall(f"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                          "Connection: close\r\n\r\n".encode())
            assert parse_status(read_all(other)) == 200
        for s in held:  # the answer, then the server's FIN: b"" while our side stays open
            assert parse_status(read_all(s)) == 200
    finally:
        for s in held:
            s.close()
