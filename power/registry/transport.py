"""HTTP for registry transfers over ``http.client``: timeouts, redirects, and where they may go.

One connection per request keeps the code simple and makes every request carry
its own deadline: ``connect_timeout`` to open the socket, ``read_timeout`` for
each read (a stalled stream raises instead of hanging). Redirects are followed
for GET and HEAD only, at most ``max_redirects`` times; the ``Authorization``
header travels only to the host it was issued for; a redirect may not lead to
another scheme than http(s), nor to loopback, link-local or unspecified
addresses unless the registry itself lives on loopback (P10).
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import BinaryIO, Self
from urllib.parse import urljoin, urlsplit

from power import __version__
from power.errors import RegistryError

__all__ = ["Response", "Transport", "Unreachable", "Url", "is_loopback_host", "split_url"]

log = logging.getLogger(__name__)

_REDIRECTS = {301, 302, 303, 307, 308}
USER_AGENT = f"ollama/{__version__} (amd64 linux) a3s-power"


class Unreachable(RegistryError):
    """No connection to the host could be opened (refused, no route, name unknown, connect timeout)."""


@dataclass(frozen=True)
class Url:
    """An absolute http(s) URL split into the parts a connection needs."""

    scheme: str
    host: str
    port: int
    target: str  # path + query

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.target}"


def split_url(url: str) -> Url:
    """Parse an absolute http(s) URL or raise RegistryError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RegistryError(f"invalid URL {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(f"unsupported URL {url!r}: only http and https are allowed")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Url(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), target)


def _address_is_local(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


def is_loopback_host(host: str) -> bool:
    """Whether a host name or literal is loopback, link-local or unspecified (resolving names)."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost") or _address_is_local(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return any(_address_is_local(str(info[4][0])) for info in infos)


class Response:
    """A response whose body is read in pieces; close it (or use ``with``) when done."""

    def __init__(self, url: Url, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.url = url
        self.status = resp.status
        self.reason = resp.reason
        self.headers: Message = resp.headers
        self._conn = conn
        self._resp = resp

    def header(self, name: str, default: str = "") -> str:
        value = self.headers.get(name)
        return value if value is not None else default

    def read(self, n: int = -1) -> bytes:
        try:
            return self._resp.read(n) if n >= 0 else self._resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"read from {self.url.netloc}: {_reason(exc)}") from exc

    def read_capped(self, limit: int, what: str) -> bytes:
        """Read a whole small body, refusing one longer than ``limit`` (an endless body ends here)."""
        data = self.read(limit + 1)
        if len(data) > limit:
            raise RegistryError(f"{what} from {self.url.netloc} is larger than {limit} bytes")
        return data

    def error_text(self) -> str:
        try:
            return self._resp.read(4096).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException):
            return ""

    def close(self) -> None:
        self._resp.close()
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class Transport:
    """Sends requests with deadlines and a redirect policy."""

    def __init__(self, *, connect_timeout: float = 10.0, read_timeout: float = 30.0,
                 max_redirects: int = 5, user_agent: str = USER_AGENT) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_redirects = max_redirects
        self.user_agent = user_agent

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | BinaryIO | None = None, authorization: str | None = None,
                allow_local: bool = False, follow: bool = True,
                read_timeout: float | None = None) -> Response:
        """Send a request; ``authorization`` goes only to the first URL's host.

        ``allow_local``: the registry itself is on loopback, so redirects may stay there.
        """
        target = split_url(url)
        auth_netloc = target.netloc
        for _ in range(self.max_redirects + 1):
            sent = dict(headers or {})
            if authorization and target.netloc == auth_netloc:
                sent["Authorization"] = authorization
            resp = self._send(method, target, sent, body, read_timeout)
            if not (follow and method in ("GET", "HEAD") and resp.status in _REDIRECTS):
                return resp
            location = resp.header("Location")
            resp.close()
            if not location:
                raise RegistryError(f"redirect from {target.netloc} without a Location")
            nxt = split_url(urljoin(str(target), location))
            if not allow_local and nxt.host != target.host and is_loopback_host(nxt.host):
                raise RegistryError(f"refusing redirect to a local address: {nxt.netloc}")
            log.debug("redirect from=%s to=%s", target.netloc, nxt.netloc)
            target = nxt
        raise RegistryError(f"too many redirects (more than {self.max_redirects}) from {url}")

    def _send(self, method: str, url: Url, headers: dict[str, str], body: bytes | BinaryIO | None,
              read_timeout: float | None) -> Response:
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.host, url.port, timeout=self.connect_timeout)
        headers.setdefault("User-Agent", self.user_agent)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise Unreachable(f"{method} {url}: {_reason(exc)}") from exc
        try:
            assert conn.sock is not None
            conn.sock.settimeout(read_timeout or self.read_timeout)
            conn.request(method, url.target, body=body, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise RegistryError(f"{method} {url}: {_reason(exc)}") from exc
        return Response(url, conn, resp)
