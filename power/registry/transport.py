"""HTTP for registry transfers over ``http.client``: timeouts, redirects, and where they may go.

One connection per request keeps the code simple and makes every request carry
its own deadline: ``connect_timeout`` to open the socket, ``read_timeout`` for
each read (a stalled stream raises instead of hanging). Redirects are followed
for GET and HEAD only, at most ``max_redirects`` times, and only to http(s);
credentials (``Authorization``, cookies) travel only to the origin they were
given for (P10).

Where a connection may go is ``Destinations``' decision (P13): the host name
is resolved once, each address is checked, and the socket connects to the
checked address itself (the ``Host`` header and TLS SNI still carry the name),
so a name that resolves elsewhere a moment later (DNS rebinding) gains
nothing. Loopback, link-local (169.254.169.254, the cloud metadata service),
private, shared, multicast, reserved and unspecified addresses are refused,
also in their IPv4-mapped, 6to4 and NAT64 IPv6 forms and whatever spelling
the resolver accepts (``2130706433``, ``0177.0.0.1``), on the first request
and on every redirect, unless ``allow_private`` is set for a local registry
or mirror (``A3S_POWER_ALLOW_PRIVATE_PULLS``).
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any, BinaryIO, Self
from urllib.parse import urljoin, urlsplit

from power import __version__
from power.errors import RegistryError

__all__ = ["Destinations", "Refused", "Response", "Transport", "Unreachable", "Url", "forbidden_kind",
           "is_loopback_host", "split_url"]

log = logging.getLogger(__name__)

_REDIRECTS = {301, 302, 303, 307, 308}
# Headers that identify the user: sent to the first origin only, never after a redirect elsewhere.
_CREDENTIALS = ("authorization", "cookie", "proxy-authorization")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not global, not "private" in 3.11
USER_AGENT = f"ollama/{__version__} (amd64 linux) a3s-power"


class Unreachable(RegistryError):
    """No connection to the host could be opened (refused, no route, name unknown, connect timeout)."""


class Refused(RegistryError):
    """The destination is an address outbound transfers may not reach (loopback, private, ...)."""

    status = 403


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, NAT64), which is where it really leads."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_kind(ip: Address) -> str | None:
    """What kind of non-public address ``ip`` is ("loopback", "link-local", ...), or None when public."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return forbidden_kind(inner)
    for kind, hit in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                      ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                      ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
                      ("shared", ip in _SHARED), ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if hit:
            return kind
    return None if ip.is_global else "non-global"


Resolver = Callable[..., "list[tuple[Any, ...]]"]


@dataclass(frozen=True)
class Destinations:
    """Which addresses outbound transfers may connect to, and the one connect that enforces it.

    ``allowed`` lists networks let through anyway (a mirror on a private
    address; tests use it to allow one loopback address and not another).
    ``resolve`` is ``socket.getaddrinfo``'s signature, replaceable in tests.
    """

    allow_private: bool = False
    allowed: Sequence[Network] = ()
    resolve: Resolver = socket.getaddrinfo

    def refusal(self, ip: Address) -> str | None:
        """Why ``ip`` may not be reached, or None when it may."""
        if self.allow_private or any(ip in net for net in self.allowed if net.version == ip.version):
            return None
        return forbidden_kind(ip)

    def connect(self, address: tuple[str, int], timeout: float | None = None,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        """Resolve once, then connect to the first permitted address (``socket.create_connection``'s shape)."""
        host, port = address
        infos = self.resolve(host, port, 0, socket.SOCK_STREAM)
        refused: list[str] = []
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            why = self.refusal(ip)
            if why is not None:
                refused.append(f"{ip} is a {why} address")
                continue
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)  # the very address checked above
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if error is not None:
            raise error
        if refused:
            raise Refused(f"refusing to connect to {host}: {'; '.join(dict.fromkeys(refused))} "
                          "(set A3S_POWER_ALLOW_PRIVATE_PULLS=1 to pull from local or private networks)")
        raise OSError(f"no address for {host}")


@dataclass(frozen=True)
class Url:
    """An absolute http(s) URL split into the parts a connection needs."""

    scheme: str
    host: str
    port: int
    target: str  # path + query

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host.lower(), self.port

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
    host = parts.hostname.replace("%25", "%", 1)  # an IPv6 zone, escaped as RFC 6874 has it
    return Url(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), target)


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
                 max_redirects: int = 5, user_agent: str = USER_AGENT,
                 destinations: Destinations = Destinations()) -> None:
        self.destinations = destinations
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_redirects = max_redirects
        self.user_agent = user_agent

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | BinaryIO | None = None, authorization: str | None = None,
                follow: bool = True, read_timeout: float | None = None) -> Response:
        """Send a request; ``authorization`` and credential headers go only to the first URL's origin."""
        target = split_url(url)
        origin = target.origin
        for _ in range(self.max_redirects + 1):
            sent = dict(headers or {})
            if target.origin != origin:
                sent = {k: v for k, v in sent.items() if k.lower() not in _CREDENTIALS}
            elif authorization:
                sent["Authorization"] = authorization
            resp = self._send(method, target, sent, body, read_timeout)
            if not (follow and method in ("GET", "HEAD") and resp.status in _REDIRECTS):
                return resp
            location = resp.header("Location")
            resp.close()
            if not location:
                raise RegistryError(f"redirect from {target.netloc} without a Location")
            nxt = split_url(urljoin(str(target), location))
            log.debug("redirect from=%s to=%s", target.netloc, nxt.netloc)
            target = nxt
        raise RegistryError(f"too many redirects (more than {self.max_redirects}) from {url}")

    def _send(self, method: str, url: Url, headers: dict[str, str], body: bytes | BinaryIO | None,
              read_timeout: float | None) -> Response:
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.host, url.port, timeout=self.connect_timeout)
        # http.client opens its socket through this hook, for plain and TLS connections alike (the
        # TLS layer then wraps it with the host name for SNI): every connect is a checked one.
        conn._create_connection = self.destinations.connect  # type: ignore[attr-defined]
        headers.setdefault("User-Agent", self.user_agent)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise Unreachable(f"{method} {url}: {_reason(exc)}") from exc
        except Refused:
            conn.close()
            raise
        try:
            assert conn.sock is not None
            conn.sock.settimeout(read_timeout or self.read_timeout)
            conn.request(method, url.target, body=body, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise RegistryError(f"{method} {url}: {_reason(exc)}") from exc
        return Response(url, conn, resp)
