"""Bounded create work (issue 12 item 5): counts and sizes of a create request are capped, work stays linear."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from power.config import Settings
from power.errors import InvalidRequest, TemplateError
from power.prompt import parse_template
from power.prompt.limits import DEFAULT_LIMITS
from power.server.app import create_app
from power.server.storeport import StorePort
from power.store import ModelStore
from power.store.manifest import MEDIA_LICENSE
from power.store.request import CREATE_LIMITS
from tests.store.test_create import snapshot

LIMIT = CREATE_LIMITS


@pytest.fixture
def based(store: ModelStore, model_dir: Path) -> ModelStore:
    """The store with a model ``base`` to create from."""
    list(store.create_from_modelfile("base", "FROM ./tiny.gguf\n", model_dir))
    return store


class NoScheduler:
    def ps(self) -> list[Any]:
        return []

    def unload(self, name: str) -> None:
        pass


def app_client(tmp_path: Path, store: ModelStore) -> testing.TestClient:
    settings = Settings(home=tmp_path, models=store.root)
    return testing.TestClient(create_app(settings, StorePort(store), NoScheduler()),  # type: ignore[arg-type]
                              headers={"Host": "127.0.0.1:11434"})


@pytest.mark.parametrize("field,value,match", [
    ("license", [f"license {i}" for i in range(100_000)], f"license has 100000 entries; at most {LIMIT.licenses}"),
    ("license", [f"license {i}" for i in range(LIMIT.licenses + 1)], f"at most {LIMIT.licenses} are allowed"),
    ("license", ["x" * (LIMIT.text + 1)], f"license is longer than {LIMIT.text} characters"),
    ("messages", [{"role": "user", "content": "hi"}] * (LIMIT.messages + 1), f"at most {LIMIT.messages}"),
    ("messages", [{"role": "user", "content": "x" * (LIMIT.text + 1)}], "message content is longer"),
    ("messages", [{"role": "r" * (LIMIT.name + 1), "content": "hi"}], "message role is longer"),
    ("parameters", {"stop": [f"s{i}" for i in range(LIMIT.parameter_values + 1)]},
     f"parameters has {LIMIT.parameter_values + 1} entries; at most {LIMIT.parameter_values}"),
    ("parameters", {"stop": ["s" * (LIMIT.text + 1)]}, "parameter stop is longer"),
    ("files", {f"f{i}.gguf": "sha256:" + "a" * 64 for i in range(LIMIT.files + 1)}, f"at most {LIMIT.files}"),
    ("adapters", {f"a{i}.gguf": "sha256:" + "a" * 64 for i in range(LIMIT.files + 1)}, "adapters has"),
    ("files", {"f" * (LIMIT.name + 1): "sha256:" + "a" * 64}, "file name is longer"),
    ("system", "s" * (LIMIT.text + 1), f"system is longer than {LIMIT.text} characters"),
    ("template", "t" * (DEFAULT_LIMITS.max_source + 1), f"template is longer than {DEFAULT_LIMITS.max_source}"),
    ("renderer", "r" * (LIMIT.name + 1), "renderer is longer"),
])
def test_oversized_fields_are_refused_quickly_and_change_nothing(based: ModelStore, field: str, value: Any,
                                                                 match: str) -> None:
    before = snapshot(based)
    start = time.monotonic()
    with pytest.raises(InvalidRequest, match=match):
        list(based.create({"model": "x", "from": "base", field: value}))
    assert time.monotonic() - start < 2.0
    assert snapshot(based) == before


def test_http_create_with_100000_licenses_is_a_400_at_once(tmp_path: Path, based: ModelStore) -> None:
    client = app_client(tmp_path, based)
    before = snapshot(based)
    start = time.monotonic()
    r = client.simulate_post("/api/create", json={"model": "x", "from": "base",
                                                  "license": [f"l{i}" for i in range(100_000)]})
    assert r.status_code == 400, r.text
    assert r.json == {"error": f"license has 100000 entries; at most {LIMIT.licenses} are allowed"}
    assert time.monotonic() - start < 5.0
    assert snapshot(based) == before
    ok = client.simulate_post("/api/create", json={"model": "x", "from": "base", "stream": False})
    assert ok.status_code == 200  # the server keeps serving


def test_licenses_at_the_limit_write_one_blob_per_distinct_text(based: ModelStore) -> None:
    half = LIMIT.licenses // 2
    texts = [f"license {i % half}" for i in range(LIMIT.licenses)]  # each text twice
    before = len(based.blobs.digests())
    start = time.monotonic()
    assert list(based.create({"model": "lic", "from": "base", "license": texts}))[-1] == {"status": "success"}
    elapsed = time.monotonic() - start
    layers = [x for x in based.layout.read("lic").manifest.layers if x.media_type == MEDIA_LICENSE]
    assert len(layers) == half
    assert len(based.blobs.digests()) == before + half + 1  # the licenses and a config
    assert based.get("lic").licenses == tuple(f"license {i}" for i in range(half))
    assert elapsed < 10.0


def test_chained_creates_cannot_pile_up_licenses(based: ModelStore) -> None:
    list(based.create({"model": "a", "from": "base", "license": [f"a{i}" for i in range(LIMIT.licenses)]}))
    with pytest.raises(InvalidRequest, match=f"the model would have {LIMIT.licenses + 1} licenses"):
        list(based.create({"model": "b", "from": "a", "license": ["one more"]}))
    again = list(based.create({"model": "b", "from": "a", "license": ["a0"]}))  # already there: fine
    assert again[-1] == {"status": "success"}


def test_template_limit_is_the_renderers_limit(based: ModelStore) -> None:
    """Create stores exactly the templates generation can parse, no larger."""
    assert LIMIT.template == DEFAULT_LIMITS.max_source
    at_limit = "{{ .Prompt }}" + " " * (DEFAULT_LIMITS.max_source - len("{{ .Prompt }}"))
    parse_template(at_limit)  # generation accepts it ...
    assert list(based.create({"model": "t", "from": "base", "template": at_limit}))[-1]["status"] == "success"
    assert based.get("t").template == at_limit  # ... and create stored it
    over = at_limit + " "
    with pytest.raises(TemplateError, match="longer than"):
        parse_template(over)  # generation refuses it ...
    with pytest.raises(InvalidRequest, match=f"template is longer than {DEFAULT_LIMITS.max_source}"):
        list(based.create({"model": "t2", "from": "base", "template": over}))  # ... so create does too


def test_modelfile_limits_apply_before_files_are_copied(store: ModelStore, model_dir: Path) -> None:
    before = snapshot(store)
    many_froms = "".join("FROM ./tiny.gguf\n" for _ in range(LIMIT.files + 1))
    with pytest.raises(InvalidRequest, match=f"FROM has {LIMIT.files + 1} entries; at most {LIMIT.files}"):
        list(store.create_from_modelfile("m", many_froms, model_dir))
    many_licenses = "FROM ./tiny.gguf\n" + "".join(f"LICENSE l{i}\n" for i in range(LIMIT.licenses + 1))
    with pytest.raises(InvalidRequest, match=f"license has {LIMIT.licenses + 1} entries"):
        list(store.create_from_modelfile("m", many_licenses, model_dir))
    template = 'FROM ./tiny.gguf\nTEMPLATE """' + "x" * (DEFAULT_LIMITS.max_source + 1) + '"""\n'
    with pytest.raises(InvalidRequest, match="template is longer than"):
        list(store.create_from_modelfile("m", template, model_dir))
    assert snapshot(store) == before


@pytest.mark.parametrize("field,value", [
    ("system", "\ud800"), ("template", "{{ .Prompt }}\udfff"), ("license", ["ok", "bad \ud800"]),
    ("messages", [{"role": "user", "content": "\ud800"}]), ("messages", [{"role": "us\ud800er", "content": "hi"}]),
    ("parameters", {"stop": ["\ud800"]}), ("renderer", "\ud800"), ("files", {"a\ud800.gguf": "sha256:" + "a" * 64}),
    ("model", "x\ud800"), ("from", "base\ud800"), ("quantize", "q4_\ud800"),
])
def test_lone_surrogates_in_any_create_field_are_a_400(tmp_path: Path, based: ModelStore, field: str,
                                                       value: Any) -> None:
    import json

    body = {"model": "x", "from": "base", field: value}
    r = app_client(tmp_path, based).simulate_post("/api/create", body=json.dumps(body).encode())
    assert r.status_code == 400, r.text
    assert set(r.json) == {"error"}
