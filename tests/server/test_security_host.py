"""Host and CORS checks (issue 12 item 7): Ollama's local Hosts but never link-local; wildcards never carry credentials."""

from __future__ import annotations

from typing import Any

import socket

import pytest
from falcon import testing

from power.server.security import host_allowed

LOCAL = ["localhost", "LOCALHOST:11434", "localhost.", "app.localhost:8080", "127.0.0.1", "127.0.0.1:11434",
         "127.1.2.3:80", "127.255.255.254", "[::1]", "[::1]:11434", "[::ffff:127.0.0.1]:11434", "",
         # what Ollama also accepts on a loopback bind: private and unspecified literals, mDNS and .internal names
         "10.0.0.1", "192.168.1.5:11434", "172.16.0.1", "[fd00::1]", "[::ffff:10.0.0.1]", "0.0.0.0", "0.0.0.0:11434",
         "[::]", "box.local", "metadata.google.internal", socket.gethostname()]
FOREIGN = [
    "169.254.169.254", "169.254.169.254:80", "169.254.0.1:11434",  # link-local (cloud metadata)
    "[fe80::1]", "[fe80::1%eth0]:11434", "[fe80::abcd]:11434",  # IPv6 link-local
    "[::ffff:169.254.169.254]", "[::ffff:7f00:1]:1:2",  # mapped link-local, malformed
    "100.64.0.1", "224.0.0.1", "[ff02::1]", "255.255.255.255",  # shared, multicast, broadcast
    "8.8.8.8", "[2001:4860:4860::8888]", "evil.example.com", "evil.example.com:11434",
    "localhost.evil.com", "127.0.0.1.nip.io", "127.0.0.1.evil.com", "local.evil.com",
    "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "::1", "localhost:", "localhost:abc",
    "localhost:11434:1", "[::1", "[::1]x", "loc alhost",
]


@pytest.mark.parametrize("host", LOCAL)
def test_loopback_names_are_local(host: str) -> None:
    assert host_allowed(host)


@pytest.mark.parametrize("host", FOREIGN)
def test_every_other_host_is_foreign(host: str) -> None:
    assert not host_allowed(host)


@pytest.mark.parametrize("host", ["169.254.169.254", "[fe80::1]:11434", "8.8.8.8", "evil.example.com:11434"])
def test_foreign_host_gets_403_on_a_loopback_bind(client: testing.TestClient, host: str) -> None:
    r = client.simulate_get("/api/tags", headers={"Host": host})
    assert r.status_code == 403 and r.json == {"error": "forbidden"}
    assert client.simulate_get("/api/tags", headers={"Host": "127.0.0.1:11434"}).status_code == 200


@pytest.mark.parametrize("bind", ["::1", "127.0.0.2", "localhost"])
def test_every_loopback_bind_checks_host(make_client: Any, bind: str) -> None:
    assert make_client(host=bind).simulate_get("/api/tags", headers={"Host": "169.254.169.254"}).status_code == 403


def preflight(c: testing.TestClient, origin: str) -> testing.Result:
    return c.simulate_options("/api/chat", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})


@pytest.mark.parametrize("wildcard", ["*", "https://*", "*://*", "http*://*"])
def test_wildcard_origin_answers_star_without_credentials(make_client: Any, wildcard: str) -> None:
    c = make_client(origins=(wildcard,))
    for r in (c.simulate_get("/api/tags", headers={"Origin": "https://any.example.com"}),
              preflight(c, "https://any.example.com")):
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers


def test_listed_origin_keeps_credentials_beside_a_wildcard(make_client: Any) -> None:
    c = make_client(origins=("*", "https://app.example.com"))
    for origin in ("https://app.example.com", "http://localhost:3000"):  # listed, and one of the defaults
        r = c.simulate_get("/api/tags", headers={"Origin": origin})
        assert r.headers["access-control-allow-origin"] == origin
        assert r.headers["access-control-allow-credentials"] == "true"
        assert "Origin" in r.headers["vary"]


def test_scheme_wildcard_lets_in_only_its_scheme(make_client: Any) -> None:
    c = make_client(origins=("https://*",))
    assert c.simulate_get("/api/tags", headers={"Origin": "https://a.example"}).headers[
        "access-control-allow-origin"] == "*"
    r = c.simulate_get("/api/tags", headers={"Origin": "http://a.example"})
    assert "access-control-allow-origin" not in r.headers
    assert preflight(c, "http://a.example").status_code == 403


@pytest.mark.parametrize("origins", [(), ("*",), ("null",), ("*", "null"), ("*://*",)])
@pytest.mark.parametrize("origin", ["null", "NULL", " null "])
def test_null_origin_is_never_allowed(make_client: Any, origins: tuple[str, ...], origin: str) -> None:
    c = make_client(origins=origins)
    r = c.simulate_get("/api/tags", headers={"Origin": origin})
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-credentials" not in r.headers
    assert preflight(c, origin).status_code == 403


def test_unlisted_origin_without_wildcard_is_refused(make_client: Any) -> None:
    c = make_client(origins=("https://app.example.com",))
    r = c.simulate_get("/api/tags", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in r.headers and "access-control-allow-credentials" not in r.headers
    assert preflight(c, "https://evil.example.com").status_code == 403
