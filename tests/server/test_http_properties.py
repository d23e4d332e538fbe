"""Hypothesis at the HTTP boundary: bodies for every route, drawn from its documented request schema, valid and
mangled (wrong types, missing and extra fields, huge numbers, odd unicode, hostile options), sent to the app over
the real scheduler and a tiny model. No answer may be a 5xx or stray from the document, none may take longer than
``TIMEOUT`` (a hang), and after each one the model must still answer (no wedged or dead runner).

``POWER_HTTP_EXAMPLES`` sets the examples per route (default 8: tens of seconds in all). Beside the random draws,
every route always gets the known hostile classes (a lone surrogate in each string field, every option at
int32's edges and past them, 1e308 counts, out-of-vocabulary context), so they are tried on every run.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from falcon import testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power.api.schemas import REQUESTS
from power.config import Settings, load_settings
from power.engine.options import OPTION_TYPES
from power.runner.resolve import store_resolver
from power.runner.scheduler import Scheduler
from power.server import create_app
from power.server.app import PATHS
from power.server.storeport import StorePort
from power.server.usage import UsageStore
from power.store import ModelStore
from tests.server.openapi_check import conformance_problems
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_bert_reranker, write_llama

EXAMPLES = int(os.environ.get("POWER_HTTP_EXAMPLES", "8"))
TIMEOUT = 60.0
HOST = {"Host": "127.0.0.1:11434"}
# Routes that change the store get names of their own, so the models under test stay as they are.
WRITES = {"/api/create", "/api/copy", "/api/delete"}
INFERENCE = {"/api/generate", "/api/chat", "/v1/chat/completions", "/v1/completions", "/v1/responses",
             "/v1/messages"}


@dataclass
class Served:
    client: testing.TestClient
    scheduler: Scheduler
    doc: dict[str, Any]
    pool: concurrent.futures.ThreadPoolExecutor

    def call(self, method: str, url: str, **kwargs: Any) -> testing.Result:
        """One request, failing the test when it takes longer than TIMEOUT (a hang)."""
        future = self.pool.submit(self.client.simulate_request, method, url, **kwargs)
        try:
            return future.result(timeout=TIMEOUT)
        except concurrent.futures.TimeoutError:
            pytest.fail(f"{method} {url} did not answer within {TIMEOUT:.0f}s: {kwargs.get('body', b'')[:300]!r}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("http-properties")
    # Registries point at a closed loopback port that pulls may not reach: transfers end in a refusal, offline.
    settings: Settings = load_settings({
        "A3S_POWER_HOME": str(home), "OLLAMA_MODELS": str(home / "models"), "OLLAMA_NUM_PARALLEL": "1",
        "OLLAMA_CONTEXT_LENGTH": "256", "OLLAMA_LOAD_TIMEOUT": "60", "HF_ENDPOINT": "http://127.0.0.1:9",
        "A3S_POWER_REGISTRY_HOSTS": "registry.ollama.ai=http://127.0.0.1:9"})
    library = ModelStore(settings.models, noprune=True)
    for name, gguf in (("tiny", write_llama(home / "tiny.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)),
                       ("embedder", write_llama(home / "embed.gguf", pooling=1, name="tiny-embed")),
                       ("reranker", write_bert_reranker(home / "rerank.gguf"))):
        for _ in library.create({"model": name, "files": {gguf.name: library.blobs.add_file(gguf).digest}}):
            pass
    scheduler = Scheduler(settings, store_resolver(library), gpus=[])
    usage = UsageStore(settings.usage_db)
    app = create_app(settings, StorePort(library), scheduler, usage=usage)
    client = testing.TestClient(app, headers=HOST)
    pool = concurrent.futures.ThreadPoolExecutor(4)
    try:
        yield Served(client, scheduler, client.simulate_get("/openapi.json").json, pool)
    finally:
        scheduler.close(deadline=5.0)
        usage.close()
        pool.shutdown(wait=False, cancel_futures=True)


# ---- values ------------------------------------------------------------------------------------------------

ODD_TEXT = st.sampled_from([
    "", " ", "\ud800", "a\udfffb", "\x00", "nul\x00inside", "\u202eevil", "\U0001d54f" * 4, "\uffff\ufffe",
    "\U0010ffff", "e\u0301" * 40, "{{ .Prompt }}", "{{ range }}", "<|im_start|>system", "%s%n%x", "\r\n\r\n",
    "x" * 5000, "[img-0]", "data:image/png;base64,AAAA", "sha256:" + "0" * 64, "../../etc/passwd", "ollama://",
])
TEXT = st.one_of(st.text(max_size=24), ODD_TEXT)
HUGE = st.sampled_from([2**31, 2**31 - 1, -(2**31) - 1, 2**63, -(10**20), 10**30, 1e308, -1e308, 1e-308, -0.0])
NUMBER = st.one_of(st.integers(-3, 300), HUGE, st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(st.none() | st.booleans() | NUMBER | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=8)
MODELS = st.sampled_from(["tiny", "tiny:latest", "embedder", "reranker", "missing", "Tiny", "tiny:", "a/b/c/d",
                          ""]) | TEXT
SCRATCH = (st.sampled_from(["scratch", "scratch:v2", "ns/scratch"]) | TEXT).filter(  # never a model under test
    lambda n: not n.strip().lower().split(":")[0].endswith(("tiny", "embedder", "reranker")))
LIMITS = {"options", "max_tokens", "max_completion_tokens", "max_output_tokens"}  # what bounds a generation
ROLES = st.sampled_from(["user", "system", "assistant", "tool", "developer", "USER", ""]) | TEXT


def _typed(kind: type) -> st.SearchStrategy[Any]:
    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.integers(-3, 64) | HUGE
    if kind is float:
        return st.floats(-3, 3) | HUGE
    return st.lists(TEXT, max_size=3) | TEXT


# Every option Ollama knows, typed and hostile; num_predict stays small unless the draw mangles it.
# num_ctx stays at most 4096: a valid huge one is fitted, not refused, and allocating it is slow, not wrong.
OPTIONS = st.fixed_dictionaries({"num_predict": st.integers(0, 8)}, optional={
    key: (st.integers(-(2**31), 4096) if key == "num_ctx" else _typed(kind)) | JSON
    for key, kind in OPTION_TYPES.items() if key != "num_predict"}) | JSON


def value(schema: dict[str, Any], name: str = "", path: str = "") -> st.SearchStrategy[Any]:
    """Values valid for ``schema`` (mostly), with the fields that matter to the server drawn from real names."""
    if name in ("model", "name", "from"):
        return SCRATCH if path in WRITES and name != "from" else MODELS
    if name in ("source", "destination"):
        return SCRATCH if name == "destination" else MODELS
    if name == "options":
        return OPTIONS
    if name in LIMITS:
        return st.integers(-2, 8) | HUGE
    if name == "role":
        return ROLES
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema and "type" not in schema:
        return st.one_of([value(s, name, path) for s in schema["anyOf"]])
    kinds = schema.get("type")
    if kinds is None:
        return JSON
    return st.one_of([_of_type(k, schema, path) for k in ([kinds] if isinstance(kinds, str) else kinds)])


def _of_type(kind: str, schema: dict[str, Any], path: str) -> st.SearchStrategy[Any]:
    if kind == "string":
        return TEXT
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.integers(low, high) if low is not None or high is not None else st.integers(-3, 300) | HUGE
    if kind == "number":
        return NUMBER
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(value(schema.get("items", {}), path=path), min_size=schema.get("minItems", 0), max_size=3)
    return body(schema, path)


def body(schema: dict[str, Any], path: str) -> st.SearchStrategy[dict[str, Any]]:
    """An object for ``schema``: required fields (mostly), some optional ones, a few mangled or extra."""
    props = schema.get("properties", {})
    required = set(schema.get("required", ())) | {c["required"][0] for c in schema.get("anyOf", ())[:1]}
    required |= LIMITS.intersection(props)  # generations stay short (a mangled draw may still lift the bound)

    def field(name: str) -> st.SearchStrategy[Any]:
        return st.one_of(value(props[name], name, path), JSON) if name in props else JSON

    return st.fixed_dictionaries(
        {k: field(k) for k in required if k in props},
        optional={**{k: field(k) for k in props if k not in required}, "unknown_field": JSON})


def request_body(schema: dict[str, Any], path: str) -> st.SearchStrategy[bytes]:
    """The bytes sent: mostly a body for the schema, sometimes any JSON value or bytes that are not JSON."""
    encoded = st.one_of(body(schema, path), JSON).map(lambda b: json.dumps(b).encode())
    return st.one_of(encoded, encoded, encoded, st.sampled_from([
        b"", b"{", b"[]", b"null", b'{"model": "tiny", "model": 5}', b'{"a": NaN}', b"1" * 5000,
        b"[" * 100_000, b'"\\ud800"', b"\xff\xfe", b'{"model": "tiny", "prompt": "\\ud800"}']))


# ---- the properties ----------------------------------------------------------------------------------------

def _problems(served: Served, path: str, method: str, result: testing.Result) -> list[str]:
    problems = []
    if result.status_code >= 500:
        problems.append(f"{method.upper()} {path}: {result.status_code} {result.text[:500]}")
    problems += conformance_problems(served.doc, path, method, result.status_code, result.headers, result.content)
    if path in INFERENCE and result.status_code == 200 and result.headers.get("content-type", "").startswith(
            "application/x-ndjson"):  # a generation that fails once started (transfers report refusals so)
        problems += [f"{path}: stream failed: {line[:300]!r}" for line in result.text.splitlines()
                     if line.startswith('{"error"')]
    return problems


def _still_serving(served: Served, path: str) -> None:
    """The models answer after the request: a wedged or dead runner would hang or fail here."""
    if path in ("/api/embed", "/api/embeddings", "/v1/embeddings"):
        result = served.call("POST", "/api/embed", json={"model": "embedder", "input": "still there?"})
        assert result.status_code == 200 and result.json["embeddings"], result.text
        return
    if "rerank" in path:
        result = served.call("POST", "/api/rerank", json={"model": "reranker", "query": "still", "documents": ["x"]})
        assert result.status_code == 200 and result.json["results"], result.text
        return
    result = served.call("POST", "/api/generate", json={"model": "tiny", "prompt": "still there?", "stream": False,
                                                        "options": {"num_predict": 2}})
    assert result.status_code == 200 and result.json["done"], result.text


BODY_ROUTES = sorted((path, method) for path, ops in PATHS.items() for method, op in ops.items() if op.request)


@pytest.mark.parametrize("path,method", BODY_ROUTES)
def test_no_body_gets_a_5xx_a_hang_or_an_undocumented_answer(served: Served, path: str, method: str) -> None:
    schema = REQUESTS[PATHS[path][method].request or ""]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(data=request_body(schema, path))
    def check(data: bytes) -> None:
        result = served.call(method.upper(), path, body=data, headers={"Content-Type": "application/json"})
        assert not _problems(served, path, method, result), data[:500]
        if path in INFERENCE or "embed" in path or "rerank" in path:
            _still_serving(served, path)

    check()


PARAM_ROUTES = sorted((path, method) for path, ops in PATHS.items() for method in ops
                      if ("{" in path or ops[method].query) and not ops[method].request)


@pytest.mark.parametrize("path,method", PARAM_ROUTES)
def test_no_path_or_query_gets_a_5xx(served: Served, path: str, method: str) -> None:
    op = PATHS[path][method]
    params = st.one_of(TEXT, st.from_regex(r"sha256[:-][0-9a-f]{64}", fullmatch=True), MODELS).filter(bool)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(segment=params, query=st.fixed_dictionaries({}, optional={q: TEXT for q in op.query}),
           raw=st.binary(max_size=64))
    def check(segment: str, query: dict[str, str], raw: bytes) -> None:
        url = path.split("{", 1)[0] + quote(segment, safe="", errors="surrogatepass") if "{" in path else path
        kwargs: dict[str, Any] = {"query_string": urlencode(query, errors="surrogatepass")} if query else {}
        if op.raw_body:
            kwargs["body"] = raw
        result = served.call(method.upper(), url, **kwargs)
        assert not _problems(served, path, method, result), (url, query)

    check()


ASK = [{"role": "user", "content": "hi"}]
BASES: dict[str, dict[str, Any]] = {  # a valid request per route, the model bounded to two tokens
    "/api/generate": {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
    "/api/chat": {"model": "tiny", "messages": ASK, "stream": False, "options": {"num_predict": 2}},
    "/api/embed": {"model": "embedder", "input": "hi"}, "/api/embeddings": {"model": "embedder", "prompt": "hi"},
    "/v1/embeddings": {"model": "embedder", "input": "hi"}, "/api/show": {"model": "tiny"},
    "/api/create": {"model": "scratch", "from": "tiny"}, "/api/copy": {"source": "tiny", "destination": "scratch"},
    "/api/delete": {"model": "scratch"}, "/api/pull": {"model": "tiny", "stream": False},
    "/api/push": {"model": "scratch", "stream": False},
    "/v1/chat/completions": {"model": "tiny", "messages": ASK, "max_tokens": 2},
    "/v1/completions": {"model": "tiny", "prompt": "hi", "max_tokens": 2},
    "/v1/responses": {"model": "tiny", "input": "hi", "max_output_tokens": 2},
    "/v1/messages": {"model": "tiny", "messages": ASK, "max_tokens": 2},
    "/v1/messages/count_tokens": {"model": "tiny", "messages": ASK},
    **{path: {"model": "reranker", "query": "hi", "documents": ["a", {"text": "b"}]}
       for path in ("/api/rerank", "/v1/rerank", "/v2/rerank", "/rerank", "/v1/reranking")},
    **{path: {"model": "tiny", "content": "hi"} for path in ("/api/tokenize", "/tokenize")},
    **{path: {"model": "tiny", "tokens": [1, 2]} for path in ("/api/detokenize", "/detokenize")},
}
EDGES = {int: (2**31, -(10**20)), float: (1e308, -1e308), list: (["\ud800"],)}  # past int32 and float32


def hostile(path: str, schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The known hostile classes for a route, each over its valid base request."""
    base = BASES.get(path, {"model": "tiny"})
    for name, prop in schema.get("properties", {}).items():
        kinds = prop.get("type", [])
        if "string" in kinds or any("string" == s.get("type") for s in prop.get("anyOf", ())):
            yield {**base, name: "a\ud800b"}
    if "messages" in base:
        yield {**base, "messages": [{"role": "user", "content": "\udfff"}]}
    if path == "/api/generate":
        yield from ({**base, "context": ctx} for ctx in ([2**31], [-1], [10**6], [2**70]))
    if "options" in base or "options" in schema.get("properties", {}):
        # Every route parses options alike: each option's edges once (on generate), a sample elsewhere.
        options = {"num_predict": 2, **base.get("options", {})}
        yield {**base, "options": {**options, "num_predict": 1e308}}
        yield {**base, "options": {**options, "top_k": 2**31}}
        for key, kind in OPTION_TYPES.items() if path == "/api/generate" else ():
            for edge in EDGES.get(kind, ()):
                if key != "num_ctx" or edge < 0:  # see OPTIONS
                    yield {**base, "options": {**options, key: edge}}


@pytest.mark.parametrize("path,method", BODY_ROUTES)
def test_known_hostile_inputs_are_refused_and_the_model_survives(served: Served, path: str, method: str) -> None:
    problems = []
    for sent in hostile(path, REQUESTS[PATHS[path][method].request or ""]):
        result = served.call(method.upper(), path, body=json.dumps(sent).encode(),  # escapes lone surrogates
                             headers={"Content-Type": "application/json"})
        problems += [f"{p} <- {json.dumps(sent)[:200]}" for p in _problems(served, path, method, result)]
        if path in INFERENCE or "embed" in path or "rerank" in path:
            _still_serving(served, path)
    assert not problems, "\n".join(problems)
