"""What the worker's event loop does before a request may take a thread: read its head (and a small body).

A connection costs a thread only once its request is whole: the request line,
the headers and, when ``Content-Length`` announces a small body, the body too.
Until then its bytes are collected in the worker's main loop by non-blocking
reads (``Arrival``), so idle keep-alive connections, clients trickling their
headers and slow senders of small bodies hold no thread (P14). The deadlines
are those of ``worker.ReceiveGuard``: ``header_timeout`` from the head's first
byte, then the body's minimum rate after its grace period.

Cheap read-only routes (``CONTROL_ROUTES``) are told apart from the request
line, so the worker can run them on threads of their own that no stream holds.

The pure parts (where a head ends, what it announces) are plain functions over
bytes, tested without sockets.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Arrival", "CONTROL_ROUTES", "HEAD_TIMEOUT_ANSWER", "MAX_PREREAD_BODY", "error_response", "head_end", "is_control",
           "announced_body", "request_path"]

# GET/HEAD routes that answer from memory or the model folder, never from a runner.
CONTROL_ROUTES = frozenset({"/", "/api/tags", "/api/ps", "/api/version", "/health", "/metrics", "/v1/models",
                            "/openapi.json"})
# Bodies up to this size are read in the event loop; larger ones (blob uploads) stream through a thread.
MAX_PREREAD_BODY = 1 << 20
# A head this long without its blank line is handed to the parser, which refuses it with 431 or 414.
MAX_HEAD = 64 << 10

_LINE = re.compile(rb"([A-Z]{1,16}) (\S{1,8190}) HTTP/1\.[01]\r?\n")
_LENGTH = re.compile(rb"\r?\ncontent-length:[ \t]*(\d{1,19})[ \t]*\r?\n", re.IGNORECASE)
_CODING = re.compile(rb"\r?\ntransfer-encoding:", re.IGNORECASE)
_CONTINUE = re.compile(rb"\r?\nexpect:[ \t]*100-continue", re.IGNORECASE)


def head_end(buf: bytes | bytearray, start: int = 0) -> int:
    """The index just past the blank line that ends the first head in ``buf``, or -1."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = buf.find(sep, max(0, start - len(sep)))
        if i >= 0:
            return i + len(sep)
    return -1


def announced_body(head: bytes) -> int | None:
    """Bytes of body that ``head`` announces by Content-Length; None when unknown (chunked, Expect, absent)."""
    if _CODING.search(head) or _CONTINUE.search(head):
        return None
    m = _LENGTH.search(head)
    return int(m.group(1)) if m else 0


def _path(line: re.Match[bytes]) -> str:
    return (line.group(2).split(b"?", 1)[0].rstrip(b"/") or b"/").decode("latin-1")


def request_path(head: bytes) -> str:
    """The path of the request line (no query string, no trailing slash); "" where there is no request line."""
    m = _LINE.match(head)
    return "" if m is None else _path(m)


def is_control(head: bytes) -> bool:
    """Whether the request line asks a control-plane route (GET or HEAD, any query string)."""
    m = _LINE.match(head)
    return m is not None and m.group(1) in (b"GET", b"HEAD") and _path(m) in CONTROL_ROUTES


def error_response(status: int, reason: str, message: str, *, error: Any = None,
                   headers: Mapping[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 answer with Ollama's error shape (or the object ``error``), closing the connection."""
    body = json.dumps({"error": message} if error is None else error, ensure_ascii=False).encode("utf-8")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1") + body


# Also what a thread's GuardedSocket answers when a head it reads itself runs out of time.
HEAD_TIMEOUT_ANSWER = error_response(408, "Request Timeout", "request header not received in time")


@dataclass
class Arrival:
    """The bytes of one request collected so far, and when it stops being allowed to wait."""

    idle_timeout: float  # before its first byte (a kept-alive or fresh connection)
    header_timeout: float
    body_min_rate: int
    body_grace: float
    buf: bytearray = field(default_factory=bytearray)
    first_byte: float | None = None
    head_len: int = -1
    body_len: int | None = None
    body_started: float = 0.0
    opened: float = field(default_factory=time.monotonic)

    def add(self, data: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.first_byte is None and data:
            self.first_byte = now
        scanned = len(self.buf)
        self.buf += data
        if self.head_len < 0:
            end = head_end(self.buf, scanned)
            if end >= 0:
                self.head_len = end
                self.body_len = announced_body(bytes(self.buf[:end]))
                self.body_started = now

    @property
    def complete(self) -> bool:
        """Ready for a thread: the head is whole and so is any small body it announced (or the head is too long)."""
        if self.head_len < 0:
            return len(self.buf) > MAX_HEAD
        if self.body_len is None or self.body_len > MAX_PREREAD_BODY:
            return True  # chunked, 100-continue or large: the thread reads it, under the same deadlines
        return len(self.buf) - self.head_len >= self.body_len

    @property
    def control(self) -> bool:
        return self.head_len >= 0 and is_control(bytes(self.buf[:self.head_len]))

    @property
    def path(self) -> str:
        return request_path(bytes(self.buf[:self.head_len])) if self.head_len >= 0 else ""

    def deadline(self) -> float:
        """When this arrival has waited too long (monotonic seconds)."""
        if self.first_byte is None:
            return self.opened + self.idle_timeout
        if self.head_len < 0:
            return self.first_byte + self.header_timeout if self.header_timeout > 0 else float("inf")
        if self.body_min_rate <= 0:
            return float("inf")
        received = len(self.buf) - self.head_len
        return self.body_started + self.body_grace + received / self.body_min_rate

    def expiry_answer(self) -> bytes | None:
        """What to tell a client whose time ran out: nothing for an idle connection, else a 408."""
        if self.first_byte is None:
            return None
        if self.head_len < 0:
            return HEAD_TIMEOUT_ANSWER
        return error_response(408, "Request Timeout",
                              f"request body not received in time (at least {self.body_min_rate} bytes/s "
                              f"after {self.body_grace:g}s)")
