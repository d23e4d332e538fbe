"""Falcon middleware for the security defaults: Host check, CORS, API key, header cap, request ids, access log.

- While bound to loopback, a ``Host`` that is not loopback (``localhost``, 127.0.0.0/8, ``::1``) is
  refused with 403 (DNS rebinding).
- CORS allows ``OLLAMA_ORIGINS`` plus Ollama's defaults, patterns as in Ollama (``http://localhost:*``).
  A listed origin is echoed with credentials; one that only a wildcard (``*``, ``https://*``) lets in
  gets ``*`` without credentials; ``null`` is never allowed.
- With an API key set, every route but ``/`` and ``/health`` needs ``Authorization: Bearer <key>``
  (or ``x-api-key``), compared in constant time; 401 in the shape of the route's API.
- Requests carry an id (the client's ``X-Request-ID`` when sane) and are logged without bodies.
"""

from __future__ import annotations

import fnmatch
import functools
import hmac
import ipaddress
import json
import logging
import re
import socket
import time
import uuid
from typing import Any, Sequence

import falcon

from power.server.errors import error_body

__all__ = ["SecurityMiddleware", "DEFAULT_ORIGINS", "is_loopback_bind", "host_allowed", "ALLOWED_HEADERS",
           "access_log", "request_id"]

log = logging.getLogger("power.server.access")

DEFAULT_ORIGINS = (
    "http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
    "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
    "http://0.0.0.0", "https://0.0.0.0", "http://0.0.0.0:*", "https://0.0.0.0:*",
    "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
)
ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With", "OpenAI-Beta",
    "x-stainless-arch", "x-stainless-async", "x-stainless-custom-poll-interval", "x-stainless-helper-method",
    "x-stainless-lang", "x-stainless-os", "x-stainless-package-version", "x-stainless-poll-helper",
    "x-stainless-retry-count", "x-stainless-runtime", "x-stainless-runtime-version", "x-stainless-timeout",
    "X-Request-ID", "x-api-key", "anthropic-version", "anthropic-beta", "anthropic-dangerous-direct-browser-access",
    "x-stainless-read-timeout",
)
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
OPEN_ROUTES = frozenset({"/", "/health"})
MAX_HEADER_BYTES = 32 << 10
_RID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def is_loopback_bind(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_PORT = re.compile(r"[0-9]{1,5}")


def request_id(given: str | None) -> str | None:
    """The client's ``X-Request-ID`` when it is sane (kept in logs and answers), else None."""
    return given if given and _RID.fullmatch(given) else None


ACCESS_LINE = "rid=%s method=%s path=%s status=%s ms=%.1f model=%s stream=%d client=%s"
access_logger = log  # the worker's fast lane writes the same lines (power/server/fastlane.py)


def access_log(rid: Any, method: str, path: str, status: Any, ms: float, model: str, stream: bool,
               client: Any) -> None:
    """One line per request, without bodies."""
    log.info(ACCESS_LINE, rid, method, path, status, ms, model, int(stream), client)


def _split_host(header: str) -> str | None:
    """The host of a ``Host`` value (``name``, ``name:port``, ``[v6]``, ``[v6]:port``); None if malformed."""
    h = header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        host, rest = h[1:end], h[end + 1:]
        if end < 0 or not (rest == "" or rest.startswith(":") and _PORT.fullmatch(rest[1:])):
            return None
        return host
    host, sep, port = h.partition(":")
    if sep and not _PORT.fullmatch(port):
        return None  # a bare IPv6 address, an empty or non-numeric port
    return host


@functools.lru_cache(maxsize=256)  # clients send the same few values; the check parses an address
def host_allowed(header: str | None) -> bool:
    """Whether a loopback bind answers a request with this ``Host`` (the DNS-rebinding check).

    A rebinding page makes the browser send the attacker's own name; what Ollama
    accepts cannot be such a name, so it is accepted here too: ``localhost``
    and ``*.localhost`` (RFC 6761), this machine's name, ``*.local`` (mDNS) and
    ``*.internal``, and address literals that are loopback, private or
    unspecified (also IPv4-mapped), with an optional port, or no Host at all
    (HTTP/1.0). Link-local addresses (169.254.0.0/16 with the cloud metadata
    service, fe80::/10) are refused, as are public addresses, multicast and
    every other name.
    """
    if not header:
        return True
    host = _split_host(header)
    if host is None:
        return False
    host = host[:-1] if host.endswith(".") else host  # the absolute form of a name
    host = host.lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")) or host == _hostname():
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_link_local or addr.is_multicast:
        return False
    return addr.is_loopback or addr.is_unspecified or any(addr in net for net in _PRIVATE)


# Go's net.IP.IsPrivate, which Ollama's check uses (RFC 1918 and RFC 4193).
_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))


def _hostname() -> str:
    return socket.gethostname().lower()


def _origin_allowed(origin: str, patterns: Sequence[str]) -> bool:
    return any(p == origin or ("*" in p and fnmatch.fnmatchcase(origin, p)) for p in patterns)


def _is_wildcard(pattern: str) -> bool:
    """A pattern that lets any web page in (``*``, ``http://*``, ``*://*:*``): answered ``*``, never with credentials."""
    scheme, sep, rest = pattern.partition("://")
    if not sep:
        return pattern.strip("*") == ""
    host = rest.rsplit(":", 1)[0] if not rest.startswith("[") else rest
    web = any(fnmatch.fnmatchcase(s, scheme) for s in ("http", "https"))
    return web and host.strip("*") == ""


class SecurityMiddleware:
    """One middleware for the checks every request goes through, in order."""

    def __init__(self, *, bind_host: str, origins: Sequence[str] = (), api_key: str | None = None,
                 max_body: int, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.check_host = is_loopback_bind(bind_host)
        self.origins = tuple(o for o in origins if not _is_wildcard(o)) + DEFAULT_ORIGINS
        self.wildcards = tuple(o for o in origins if _is_wildcard(o))
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.rid = request_id(req.get_header("X-Request-ID")) or uuid.uuid4().hex[:16]
        req.context.start = time.monotonic()
        req.context.max_body = self.max_body
        resp.set_header("X-Request-ID", req.context.rid)
        if sum(len(k) + len(v) for k, v in req.headers.items()) > self.max_header_bytes:
            self._refuse(req, resp, 431, "request header fields too large")
            return
        if self.check_host and not host_allowed(req.get_header("Host")):
            self._refuse(req, resp, 403, "forbidden")
            return
        origin = req.get_header("Origin")
        if origin:
            allowed = self._allow_origin(origin, resp)
            if req.method == "OPTIONS" and req.get_header("Access-Control-Request-Method"):
                if not allowed:
                    self._refuse(req, resp, 403, "origin not allowed")
                    return
                resp.set_header("Access-Control-Allow-Methods", ALLOWED_METHODS)
                resp.set_header("Access-Control-Allow-Headers", ", ".join(ALLOWED_HEADERS))
                resp.set_header("Access-Control-Max-Age", "43200")
                resp.status = falcon.HTTP_204
                resp.complete = True
                return
        if self.api_key is not None and req.path not in OPEN_ROUTES and not self._authorized(req):
            resp.set_header("WWW-Authenticate", 'Bearer realm="a3s-power"')
            self._refuse(req, resp, 401, "unauthorized: missing or invalid API key",
                         code="invalid_api_key")

    def _allow_origin(self, origin: str, resp: falcon.Response) -> bool:
        """Set the CORS answer for ``origin``: itself with credentials when listed, ``*`` under a wildcard.

        ``null`` (sandboxed frames, ``data:`` and file pages) is never allowed:
        any page can make itself ``null``.
        """
        resp.set_header("Vary", "Origin")
        if origin.strip().lower() == "null":
            return False
        if _origin_allowed(origin, self.origins):
            resp.set_header("Access-Control-Allow-Origin", origin)
            resp.set_header("Access-Control-Allow-Credentials", "true")
            return True
        if _origin_allowed(origin, self.wildcards):
            resp.set_header("Access-Control-Allow-Origin", "*")
            return True
        return False

    def _authorized(self, req: falcon.Request) -> bool:
        assert self.api_key is not None
        given = req.get_header("x-api-key") or ""
        auth = req.get_header("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.api_key)

    @staticmethod
    def _refuse(req: falcon.Request, resp: falcon.Response, status: int, message: str,
                code: str | None = None) -> None:
        resp.status = falcon.code_to_http_status(status)
        resp.content_type = "application/json; charset=utf-8"
        resp.text = json.dumps(error_body(req.path, status, message, code))
        resp.complete = True

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        start = req.context.get("start")
        elapsed = (time.monotonic() - start) * 1000 if start else 0.0
        model = req.context.get("model", "")
        status = resp.status.split(" ", 1)[0] if isinstance(resp.status, str) else resp.status
        access_log(req.context.get("rid"), req.method, req.path, status, elapsed, model, resp.stream is not None,
                   req.remote_addr)
