"""``/openapi.json`` against the app itself: every route and method Falcon serves is described, with the schemas
the handlers validate with, every status they answer, and ``Allow`` headers that say the same as the document."""

from __future__ import annotations

import re
from typing import Any

import falcon.inspect
import pytest
import schemathesis
from falcon import testing
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from power.api import SCHEMAS
from power.api.schemas import REQUESTS, RESPONSES
from power.errors import Busy, InvalidDigest
from power.server.app import PATHS, ROUTES
from power.server.errors import is_anthropic_path, is_openai_path
from power.server.observability import openapi_document
from power.store import parse_digest
from tests.server.conftest import FakeScheduler
from tests.server.openapi_check import conformance_problems

# Operations that answer a bare status with no body, as Ollama does.
NO_CONTENT = {("/api/copy", "post"), ("/api/delete", "delete"), ("/api/delete", "post"),
              ("/api/blobs/{digest}", "head"), ("/api/blobs/{digest}", "post")}
WRONG = [12345, "text", [1], {"x": 1}, True, None, 1.5]


@pytest.fixture
def doc(client: testing.TestClient) -> dict[str, Any]:
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    return result.json


def test_every_served_method_is_documented_and_nothing_else(client: testing.TestClient, doc: dict[str, Any]) -> None:
    routes = falcon.inspect.inspect_routes(client.app)
    served = {r.path: {m.method for m in r.methods if not m.internal} for r in routes}
    documented = {path: {m.upper() for m in item if m != "parameters"} - {"OPTIONS"}
                  for path, item in doc["paths"].items()}
    assert served == documented
    assert all("options" in item for item in doc["paths"].values())
    assert {"GET", "HEAD", "POST"} <= documented["/api/blobs/{digest}"]
    assert documented["/api/delete"] == {"DELETE", "POST"}


def test_every_operation_names_its_schemas() -> None:
    """A route added without a request schema (or a response one) fails here."""
    for route in ROUTES:
        for method, op in route.operations.items():
            where = f"{method.upper()} {route.path}"
            if method in ("post", "put", "patch") or (method == "delete" and op.request):
                assert op.request in REQUESTS or op.raw_body, f"{where} has no request schema"
            if method != "head" and (route.path, method) not in NO_CONTENT:
                assert op.response in RESPONSES or op.text, f"{where} has no response schema"
            if op.stream is not None:
                assert op.stream in RESPONSES, where


def test_document_loads_in_schemathesis_and_references_resolve(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1") and doc["components"]["schemas"] == SCHEMAS
    for schema in SCHEMAS.values():
        Draft202012Validator.check_schema(schema)
    loaded = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == sum(len([m for m in item if m != "parameters"]) for item in doc["paths"].values())
    refs = set(re.findall(r'"#/components/schemas/([A-Za-z]+)"', str(doc).replace("'", '"')))
    assert refs <= set(SCHEMAS)


def test_statuses_and_media_types(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            codes = set(op["responses"])
            assert "500" not in codes, f"{method} {path}"
            assert {"403", "431"} <= codes, f"{method} {path}"
            if method != "options":
                assert "405" in codes and "Allow" in op["responses"]["405"]["headers"]
                assert ("401" in codes) == (path not in ("/", "/health")), f"{method} {path}"
            if "requestBody" in op:
                assert {"400", "408", "413"} <= codes, f"{method} {path}"
            if "503" in codes:
                assert op["responses"]["503"]["headers"]["Retry-After"]["required"]
            if method != "head" and "content" in op["responses"].get("400", {}):
                shape = op["responses"]["404" if "404" in codes else "403"]["content"]["application/json"]["schema"]
                want = ("AnthropicError" if is_anthropic_path(path) else "OpenAIError" if is_openai_path(path)
                        else "Error")
                assert shape == {"$ref": f"#/components/schemas/{want}"}, f"{method} {path}"
    ok = {p: doc["paths"][p]["post"]["responses"]["200"]["content"] for p in (
        "/api/generate", "/api/chat", "/api/create", "/api/pull", "/v1/chat/completions", "/v1/completions")}
    assert set(ok["/api/generate"]) == {"application/json", "application/x-ndjson"}
    assert set(ok["/api/pull"]) == {"application/json", "application/x-ndjson"}
    assert set(ok["/v1/chat/completions"]) == {"application/json", "text/event-stream"}
    for path in ("/api/generate", "/api/chat", "/api/embed", "/v1/chat/completions", "/v1/embeddings"):
        assert {"404", "503"} <= set(doc["paths"][path]["post"]["responses"]), path


def _required_of(schema: dict[str, Any]) -> dict[str, Any]:
    """A smallest body that passes ``required`` (and ``model`` or ``name``), to isolate one bad field."""
    body: dict[str, Any] = {}
    names = list(schema.get("required", ())) + [c["required"][0] for c in schema.get("anyOf", ())[:1]]
    for name in names:
        prop = schema["properties"][name]
        body[name] = [{"role": "user", "content": "x"}] if prop.get("type") == "array" else "tiny"
    return body


@pytest.mark.parametrize("path,method", [(p, m) for p, ops in PATHS.items() for m, op in ops.items() if op.request])
def test_handlers_validate_with_the_documented_schema(client: testing.TestClient, doc: dict[str, Any], path: str,
                                                     method: str) -> None:
    """Each documented property, sent with a type its schema refuses, is a 400 naming it: the handler checks
    the very schema the document shows."""
    schema = REQUESTS[PATHS[path][method].request or ""]
    base = _required_of(schema)
    missing = client.simulate_request(method.upper(), path, json={})
    assert missing.status_code == 400 and "required" in str(missing.json), missing.text
    for name, prop in schema["properties"].items():
        wrong = next((w for w in WRONG if not Draft202012Validator(prop).is_valid(w)), None)
        if wrong is None:
            continue
        result = client.simulate_request(method.upper(), path, json={**base, name: wrong})
        assert result.status_code == 400, (path, name, wrong, result.text)
        message = result.json["error"]["message"] if is_openai_path(path) else result.json["error"]
        assert name in message, (path, name, message)
        assert not conformance_problems(doc, path, method, 400, result.headers, result.content)


def test_405_and_options_allow_what_the_document_lists(client: testing.TestClient, doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        methods = {m.upper() for m in item if m != "parameters"}
        allow = ", ".join(sorted(methods))
        url = re.sub(r"\{digest\}", "sha256:" + "0" * 64, re.sub(r"\{[a-z_]+\}", "x", path))
        other = next(m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in methods)
        result = client.simulate_request(other, url)
        assert result.status_code == 405, (other, path)
        assert result.headers["allow"] == allow
        message = result.json["error"]["message"] if is_openai_path(path) else result.json["error"]
        assert message == f"method {other} not allowed for {path}; allowed: {allow}"
        assert not conformance_problems(doc, path, "get" if "get" in item else next(iter(item)), 405,
                                        result.headers, result.content)
        options = client.simulate_options(url)
        assert options.status_code == 200 and options.headers["allow"] == allow
        assert item["options"]["responses"]["200"]["headers"]["Allow"]["schema"]["const"] == allow


def test_busy_is_a_documented_503_with_retry_after(client: testing.TestClient, doc: dict[str, Any],
                                                   scheduler: FakeScheduler) -> None:
    scheduler.script = [Busy(), Busy()]
    for path, body in (("/api/generate", {"model": "tiny", "prompt": "x"}),
                       ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}]})):
        result = client.simulate_post(path, json=body)
        assert result.status_code == 503 and result.headers["retry-after"] == "1"
        assert not conformance_problems(doc, path, "post", 503, result.headers, result.content)


def test_success_answers_conform(client: testing.TestClient, doc: dict[str, Any]) -> None:
    chat = [{"role": "user", "content": "hi"}]
    cases = [
        ("get", "/", None), ("get", "/api/version", None), ("get", "/api/tags", None), ("get", "/api/ps", None),
        ("post", "/api/show", {"model": "tiny"}), ("post", "/api/generate", {"model": "tiny", "prompt": "x"}),
        ("post", "/api/generate", {"model": "tiny", "prompt": "x", "stream": False}),
        ("post", "/api/generate", {"model": "tiny"}), ("post", "/api/chat", {"model": "tiny", "messages": chat}),
        ("post", "/api/chat", {"model": "tiny", "messages": chat, "stream": False}),
        ("post", "/api/embed", {"model": "embedder", "input": ["a", "b"]}),
        ("post", "/api/embeddings", {"model": "embedder", "prompt": "a"}),
        ("post", "/api/create", {"model": "t2", "from": "tiny"}),
        ("post", "/api/create", {"model": "t3", "from": "tiny", "stream": False}),
        ("post", "/api/copy", {"source": "tiny", "destination": "t4"}),
        ("delete", "/api/delete", {"model": "t4"}), ("post", "/api/delete", {"model": "t3"}),
        ("post", "/v1/chat/completions", {"model": "tiny", "messages": chat}),
        ("post", "/v1/chat/completions", {"model": "tiny", "messages": chat, "stream": True,
                                          "stream_options": {"include_usage": True}}),
        ("post", "/v1/completions", {"model": "tiny", "prompt": "x"}),
        ("post", "/v1/completions", {"model": "tiny", "prompt": "x", "stream": True}),
        ("post", "/v1/embeddings", {"model": "embedder", "input": "a"}),
        ("post", "/v1/embeddings", {"model": "embedder", "input": "a", "encoding_format": "base64"}),
        ("get", "/v1/models", None), ("get", "/v1/models/tiny", None), ("get", "/v1/models/nope", None),
        ("get", "/v1/usage", None), ("get", "/health", None), ("get", "/metrics", None),
        ("get", "/openapi.json", None), ("post", "/api/show", {"model": "missing"}),
        ("post", "/api/generate", {"model": "missing", "prompt": "x"}),
    ]
    for method, url, body in cases:
        result = client.simulate_request(method.upper(), url, json=body)
        assert result.status_code < 500, (url, result.text)
        template = "/v1/models/{model}" if url.startswith("/v1/models/") else url
        assert not conformance_problems(doc, template, method, result.status_code, result.headers,
                                        result.content), (url, body)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.from_regex(r"sha256[:-][0-9a-fA-F]{60,68}", fullmatch=True)))
def test_digest_pattern_is_the_stores_rule(text: str) -> None:
    """The document's digest pattern refuses exactly what the store refuses (so its 400s are the documented ones)."""
    item = openapi_document({"/api/blobs/{digest}": PATHS["/api/blobs/{digest}"]})["paths"]["/api/blobs/{digest}"]
    pattern = item["get"]["parameters"][0]["schema"]["pattern"].replace("$", r"\Z")  # ECMA's $ is Python's \Z
    try:
        parse_digest(text)
        accepted = True
    except InvalidDigest:
        accepted = False
    assert accepted == bool(re.search(pattern, text))


def test_the_checker_sees_a_stray_stream_item(doc: dict[str, Any]) -> None:
    good = b'{"model":"x","created_at":"t","response":"a","done":false}\n'
    ndjson = {"content-type": "application/x-ndjson"}
    assert not conformance_problems(doc, "/api/generate", "post", 200, ndjson, good)
    assert len(conformance_problems(doc, "/api/generate", "post", 200, ndjson, good + b'{"model": 5}\n')) == 1
    sse = {"content-type": "text/event-stream"}
    assert conformance_problems(doc, "/v1/chat/completions", "post", 200, sse, b'data: {"id": 1}\n\ndata: [DONE]\n\n')
    assert conformance_problems(doc, "/api/tags", "get", 200, {"content-type": "text/html"}, b"<p>")


@pytest.mark.parametrize("message", [
    {"role": "assistant", "content": "", "tool_calls": [None]},
    {"role": "assistant", "content": "", "tool_calls": [{"function": "get_weather"}]},
    {"role": "user", "content": [{"type": "input_audio", "input_audio": "AAAA"}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": 5}]},
])
def test_malformed_openai_message_parts_are_400s(client: testing.TestClient, message: dict[str, Any]) -> None:
    """Found by schemathesis: a null tool call was an AttributeError (500); the schema now types every part."""
    result = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": [message]})
    assert result.status_code == 400 and "messages.0" in result.json["error"]["message"], result.text


def test_an_error_message_quoting_a_lone_surrogate_still_encodes(client: testing.TestClient) -> None:
    """The error writer is total: a message that quotes the request (here keep_alive) cannot make its own 500."""
    body = b'{"model": "tiny", "prompt": "hi", "keep_alive": "a\\ud800b"}'
    result = client.simulate_post("/api/generate", body=body, headers={"Content-Type": "application/json"})
    assert result.status_code == 400, result.text
    assert isinstance(result.json["error"], str) and result.json["error"], result.text
