"""Security defaults: Host check, CORS, API key, body and JSON limits."""

from __future__ import annotations

from typing import Any

from falcon import testing


def test_foreign_host_refused_on_loopback(client: testing.TestClient) -> None:
    assert client.simulate_get("/api/tags", headers={"Host": "evil.example.com"}).status_code == 403
    for host in ("localhost:11434", "127.0.0.1", "[::1]:11434", "192.168.1.5", "box.local", "a.localhost"):
        assert client.simulate_get("/api/tags", headers={"Host": host}).status_code == 200, host
    for host in ("169.254.169.254", "[fe80::1]"):  # link-local: see test_security_host.py
        assert client.simulate_get("/api/tags", headers={"Host": host}).status_code == 403, host


def test_foreign_host_allowed_on_public_bind(make_client: Any) -> None:
    c = make_client(host="0.0.0.0")
    assert c.simulate_get("/api/tags", headers={"Host": "evil.example.com"}).status_code == 200


def test_cors(make_client: Any) -> None:
    c = make_client(origins=("https://app.example.com",))
    r = c.simulate_options("/api/chat", headers={"Origin": "http://localhost:3000",
                                                 "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "x-stainless-os" in r.headers["access-control-allow-headers"]
    r = c.simulate_get("/api/tags", headers={"Origin": "https://app.example.com"})
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    r = c.simulate_get("/api/tags", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in r.headers
    r = c.simulate_options("/api/chat", headers={"Origin": "https://evil.example.com",
                                                 "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403


def test_api_key(make_client: Any) -> None:
    c = make_client(api_key="s3cret")
    assert c.simulate_get("/").status_code == 200
    assert c.simulate_get("/health").status_code == 200
    r = c.simulate_get("/api/tags")
    assert r.status_code == 401 and r.json["error"].startswith("unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = c.simulate_get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json["error"]["code"] == "invalid_api_key"
    assert c.simulate_get("/api/tags", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.simulate_get("/v1/models", headers={"x-api-key": "s3cret"}).status_code == 200


def test_body_cap(make_client: Any) -> None:
    c = make_client(max_body=1000)
    r = c.simulate_post("/api/generate", body=b'{"model":"tiny","prompt":"' + b"x" * 2000 + b'"}')
    assert r.status_code == 413 and "exceeds" in r.json["error"]


def test_header_cap(client: testing.TestClient) -> None:
    r = client.simulate_get("/api/tags", headers={f"X-Pad-{i}": "y" * 1000 for i in range(40)})
    assert r.status_code == 431


def test_hostile_json(client: testing.TestClient) -> None:
    cases = {
        b"": "missing request body",
        b"{": "invalid JSON",
        b'{"model": "tiny", "prompt": NaN}': "NaN",
        b'{"model": "tiny", "options": {"seed": ' + b"9" * 5000 + b"}}": "too long",
        b'{"model": "tiny", "context": ' + b"[" * 100000 + b"]" * 100000 + b"}": "nesting",
        b"[1, 2]": "expected an object",
        b'{"model": "tiny", "prompt": 5}': "'prompt'",
        b'{"model": "tiny", "stream": "yes"}': "'stream'",
        b'{"model": 1e999}': "out of range",
    }
    for raw, needle in cases.items():
        r = client.simulate_post("/api/generate", body=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, raw[:40]
        assert needle in r.json["error"], (raw[:40], r.json)
    r = client.simulate_post("/v1/chat/completions", body=b'{"model": "tiny", "messages": [], "temperature": NaN}')
    assert r.status_code == 400 and "NaN" in r.json["error"]["message"]


def test_request_id_and_unknown_route(client: testing.TestClient) -> None:
    r = client.simulate_get("/api/tags", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(client.simulate_get("/api/tags").headers["x-request-id"]) == 16
    r = client.simulate_get("/api/nothing")
    assert r.status_code == 404 and r.json == {"error": "404 page not found"}
    r = client.simulate_get("/api/generate")
    assert r.status_code == 405 and "error" in r.json
