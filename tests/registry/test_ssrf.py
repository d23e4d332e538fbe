"""Pulls never reach internal addresses (issue 12 item 6, P13): checked on the connected address, on every hop."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from power.config import Settings, load_settings
from power.registry import Destinations, Refused, Registry
from power.registry.transport import Transport, forbidden_kind
from power.server.app import create_app
from power.server.storeport import StorePort
from power.store import ModelStore
from tests.registry.conftest import FAST
from tests.registry.servers import Scripted, free_port
from tests.registry.test_hostile import send

# A second loopback address stands in for "a public host": tests allow it alone, so 127.0.0.1 stays forbidden.
PUBLIC = "127.0.0.2"
ONLY_PUBLIC = Destinations(allowed=(ipaddress.ip_network(f"{PUBLIC}/32"),))
GGUF = b"GGUF" + bytes(range(256)) * 16


def serve_file(req: Any) -> None:
    send(req, 200, GGUF, {"ETag": '"v1"'})


@pytest.fixture
def internal() -> Iterator[Scripted]:
    """A real HTTP server on 127.0.0.1 that must never be asked anything."""
    server = Scripted(serve_file)
    yield server
    server.close()


def fake_resolver(*answers: str) -> Any:
    """getaddrinfo answering each call with the next address (the last one repeats), counting calls."""
    calls: list[str] = []

    def resolve(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        addr = answers[min(len(calls), len(answers) - 1)]
        calls.append(host)
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (addr, port))]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def store_files(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.root.rglob("*") if p.is_file())


def test_default_pull_refuses_a_real_loopback_server(store: ModelStore, internal: Scripted) -> None:
    registry = Registry(store, options=FAST, connect_timeout=2.0)
    with pytest.raises(Refused, match=r"refusing to connect to 127\.0\.0\.1: 127\.0\.0\.1 is a loopback address"):
        next(registry.pull(f"{internal.url}/tiny.gguf"))
    with pytest.raises(Refused, match="A3S_POWER_ALLOW_PRIVATE_PULLS"):
        next(registry.pull(f"http://localhost:{internal.port}/tiny.gguf"))
    assert internal.paths == [] and store_files(store) == []


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "LOCALHOST", socket.gethostname(),  # a name /etc/hosts maps to loopback
    "2130706433", "0177.0.0.1", "0x7f000001", "127.1", "017700000001", "0x7f.1",  # decimal, octal, hex, short
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",  # IPv4-mapped IPv6
])
def test_every_spelling_of_loopback_is_refused(host: str, internal: Scripted) -> None:
    if host == socket.gethostname() and forbidden_kind(ipaddress.ip_address(socket.gethostbyname(host))) is None:
        pytest.skip("this machine's name resolves to a public address")
    transport = Transport(connect_timeout=2.0)
    with pytest.raises(Refused, match="is a loopback address"):
        transport.request("GET", f"http://{host}:{internal.port}/tiny.gguf")
    assert internal.paths == []


@pytest.mark.parametrize("host,kind", [
    ("169.254.169.254", "link-local"), ("[fe80::1]", "link-local"), ("[fe80::1%25lo]", "link-local"),
    ("[::ffff:169.254.169.254]", "link-local"), ("[64:ff9b::a9fe:a9fe]", "link-local"),  # mapped, NAT64
    ("[2002:a9fe:a9fe::1]", "link-local"),  # 6to4 around the metadata address
    ("[::1]", "loopback"), ("[2002:7f00:1::1]", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"), ("[fd00::1]", "private"),
    ("[::ffff:10.1.2.3]", "private"), ("100.64.0.1", "shared"), ("[fec0::1]", "site-local"),
    ("0.0.0.0", "unspecified"), ("[::]", "unspecified"), ("0", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("[ff02::1]", "multicast"),
    ("240.0.0.1", "private"), ("255.255.255.255", "private"), ("192.0.2.1", "private"),
])
def test_internal_addresses_are_refused_before_connecting(host: str, kind: str) -> None:
    start = time.monotonic()
    with pytest.raises(Refused, match=f"is a {kind} address"):
        Transport(connect_timeout=5.0).request("GET", f"http://{host}:{free_port()}/x.gguf")
    assert time.monotonic() - start < 1.0  # refused, not a connect attempt that timed out


def test_public_addresses_are_not_forbidden() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"):
        assert forbidden_kind(ipaddress.ip_address(text)) is None, text


def test_redirect_from_an_allowed_host_to_an_internal_one_is_refused(store: ModelStore,
                                                                     internal: Scripted) -> None:
    targets = [f"{internal.url}/tiny.gguf", "http://169.254.169.254/latest/meta-data/",
               f"http://localhost:{internal.port}/x", f"http://[::1]:{internal.port}/x", "http://2130706433/x"]
    hop = 0

    def redirect(req: Any) -> None:
        send(req, 302, headers={"Location": targets[hop]})

    public = Scripted(redirect, host=PUBLIC)
    try:
        transport = Transport(connect_timeout=2.0, destinations=ONLY_PUBLIC)
        for hop in range(len(targets)):
            with pytest.raises(Refused, match="refusing to connect"):
                transport.request("GET", f"{public.url}/tiny.gguf")
        registry = Registry(store, options=FAST, connect_timeout=2.0, destinations=ONLY_PUBLIC)
        hop = 0
        with pytest.raises(Refused):  # the HEAD that sizes the file follows the redirect too
            next(registry.pull(f"{public.url}/tiny.gguf"))
    finally:
        public.close()
    assert internal.paths == [] and store_files(store) == []


def test_a_redirect_in_the_middle_of_a_download_is_refused(store: ModelStore, internal: Scripted) -> None:
    """The HEAD is answered, then each GET is sent on to loopback: the pull fails, nothing is left."""
    def head_then_redirect(req: Any) -> None:
        if req.command == "HEAD":
            send(req, 200, GGUF, {"ETag": '"v1"'})
        else:
            send(req, 307, headers={"Location": f"{internal.url}/tiny.gguf"})

    public = Scripted(head_then_redirect, host=PUBLIC)
    try:
        registry = Registry(store, options=FAST, connect_timeout=2.0, destinations=ONLY_PUBLIC)
        events = registry.pull(f"{public.url}/tiny.gguf")
        with pytest.raises(Refused):
            list(events)
    finally:
        public.close()
    assert internal.paths == []
    assert not [f for f in store_files(store) if f.startswith("sha256-")]


def test_dns_rebinding_cannot_pass(internal: Scripted) -> None:
    """Each connection resolves once and connects to the very address it checked."""
    hosts: list[str] = []
    public = Scripted(lambda r: (hosts.append(r.headers.get("Host", "")), serve_file(r)), host=PUBLIC)
    try:
        # A name that resolves to a forbidden address and an allowed one: only the allowed one is dialled.
        two = fake_resolver("127.0.0.1")
        mixed = Destinations(allowed=ONLY_PUBLIC.allowed, resolve=lambda h, p, *a: (
            two(h, p) + [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, p))]))
        with Transport(destinations=mixed).request("GET", f"http://rebind.test:{public.port}/x") as resp:
            assert resp.read() == GGUF
        # A name that is public for the check and internal a moment later: the next connection re-checks.
        flip = fake_resolver(PUBLIC, "127.0.0.1")
        transport = Transport(destinations=Destinations(allowed=ONLY_PUBLIC.allowed, resolve=flip))
        with transport.request("GET", f"http://rebind.test:{public.port}/x") as resp:
            assert resp.read() == GGUF
        with pytest.raises(Refused, match="rebind.test: 127.0.0.1 is a loopback address"):
            transport.request("GET", f"http://rebind.test:{internal.port}/x")
        assert flip.calls == ["rebind.test", "rebind.test"]  # once per connection, never twice
    finally:
        public.close()
    assert hosts == [f"rebind.test:{public.port}"] * 2  # the name, not the address, in Host
    assert internal.paths == []


def test_credentials_never_follow_a_redirect_to_another_origin() -> None:
    seen: list[dict[str, str]] = []
    sink = Scripted(lambda r: (seen.append({k: r.headers.get(k, "") for k in ("Authorization", "Cookie",
                                                                               "Proxy-Authorization")}),
                               send(r, 200, b"ok")), host=PUBLIC)
    to_port = Scripted(lambda r: send(r, 302, headers={"Location": f"{sink.url}/same-host-other-port"}),
                       host=PUBLIC)
    try:
        transport = Transport(destinations=ONLY_PUBLIC)
        with transport.request("GET", f"{to_port.url}/x", authorization="Bearer registry-token",
                               headers={"Cookie": "session=1", "Proxy-Authorization": "Basic eA==",
                                        "Authorization": "signed"}) as resp:
            assert resp.read() == b"ok"
        with transport.request("GET", f"{sink.url}/direct", authorization="Bearer registry-token") as resp:
            resp.read()
    finally:
        sink.close()
        to_port.close()
    assert seen[0] == {"Authorization": "", "Cookie": "", "Proxy-Authorization": ""}
    assert seen[1]["Authorization"] == "Bearer registry-token"  # to its own origin it still goes


def test_the_setting_allows_a_local_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           internal: Scripted) -> None:
    assert load_settings({"A3S_POWER_HOME": str(tmp_path)}).allow_private_pulls is False
    assert load_settings({"A3S_POWER_HOME": str(tmp_path), "A3S_POWER_ALLOW_PRIVATE_PULLS": "1"}).allow_private_pulls
    (tmp_path / "config.toml").write_text("[registry]\nallow_private = true\n")
    assert load_settings({"A3S_POWER_HOME": str(tmp_path)}).allow_private_pulls
    assert not load_settings({"A3S_POWER_HOME": str(tmp_path), "A3S_POWER_ALLOW_PRIVATE_PULLS": "0"}
                             ).allow_private_pulls
    monkeypatch.setenv("A3S_POWER_ALLOW_PRIVATE_PULLS", "1")
    settings = load_settings()
    store = ModelStore(settings.models)
    # the served bytes are not a model, so the create at the end fails; the download itself went through
    with pytest.raises(Exception, match="GGUF"):
        list(Registry.from_settings(settings, store).pull(f"{internal.url}/tiny.gguf"))
    assert internal.paths[:2] == ["HEAD /tiny.gguf", "GET /tiny.gguf"]


def test_api_pull_of_an_internal_url_is_a_403(tmp_path: Path, store: ModelStore, internal: Scripted) -> None:
    class NoScheduler:
        def ps(self) -> list[Any]:
            return []

    client = testing.TestClient(create_app(Settings(home=tmp_path, models=store.root), StorePort(store),
                                           NoScheduler()),  # type: ignore[arg-type]
                                headers={"Host": "127.0.0.1:11434"})
    for url in (f"{internal.url}/tiny.gguf", "http://169.254.169.254/latest/x.gguf", "http://[::1]:1/x.gguf"):
        r = client.simulate_post("/api/pull", json={"model": url})
        assert r.status_code == 403, r.text
        assert r.json["error"].startswith("refusing to connect")
    assert internal.paths == []
    assert json.loads(client.simulate_get("/api/tags").text) == {"models": []}


def test_registry_hop_to_an_internal_host_is_refused(store: ModelStore, internal: Scripted) -> None:
    """A registry (host table) mapped to loopback needs the setting too: manifests and tokens alike."""
    registry = Registry(store, hosts={"reg.test": internal.url}, options=FAST, connect_timeout=2.0)
    with pytest.raises(Refused):
        next(registry.pull("reg.test/team/x"))
    with pytest.raises(Refused):
        next(Registry(store, hf_endpoint=internal.url, options=FAST).pull("hf.co/someone/Tiny-GGUF"))
    assert internal.paths == []


def test_the_registry_token_stays_with_the_registry() -> None:
    """An upload location on another origin gets no token, and its challenge earns it none."""
    from power.registry import RegistryClient, TokenSource

    seen: list[str] = []
    elsewhere = Scripted(lambda r: (seen.append(r.headers.get("Authorization", "")),
                                    send(r, 401, headers={"WWW-Authenticate": 'Bearer realm="x"'})), host=PUBLIC)
    registry = Scripted(lambda r: (seen.append(r.headers.get("Authorization", "")), send(r, 202)), host=PUBLIC)
    try:
        transport = Transport(destinations=ONLY_PUBLIC)
        client = RegistryClient(registry.url, "team/x", transport, TokenSource(transport), push=True)
        client._authorization = "Bearer registry-token"
        with client.send("PATCH", f"{registry.url}/v2/team/x/blobs/uploads/1", body=b"") as resp:
            assert resp.status == 202
        with client.send("PATCH", f"{elsewhere.url}/upload/1", body=b"") as resp:
            assert resp.status == 401
    finally:
        elsewhere.close()
        registry.close()
    assert seen == ["Bearer registry-token", ""]


def test_https_connects_to_the_checked_address_with_the_name_in_sni(tmp_path: Path) -> None:
    """TLS goes through the same checked connect, and still names the host (SNI) for its certificate."""
    import shutil
    import ssl
    import subprocess
    import threading

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=registry.test", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,return-value]
    listener = socket.create_server((PUBLIC, 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            server_ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass  # the client does not trust this certificate, and says so
        finally:
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    resolve = fake_resolver(PUBLIC)
    transport = Transport(connect_timeout=5.0, destinations=Destinations(allowed=ONLY_PUBLIC.allowed,
                                                                         resolve=resolve))
    try:
        with pytest.raises(Exception, match="certificate verify failed"):
            transport.request("GET", f"https://registry.test:{port}/v2/")
    finally:
        thread.join(5)
        listener.close()
    assert names == ["registry.test"] and resolve.calls == ["registry.test"]
    with pytest.raises(Refused, match="loopback"):
        Transport().request("GET", f"https://localhost:{port}/v2/")
