"""Compatibility with a models folder exactly as Ollama writes it, and the layout's safety rules."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from power.errors import ManifestError, ModelNotFound, StoreError
from power.names import parse_name
from power.store import ModelStore
from power.store.manifest import Manifest

TEMPLATE = "{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>"
PARAMS = b'{"stop":["\\u003c|user|\\u003e","\\u003c|system|\\u003e"],"temperature":0.6}\n'


def _blob(models: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (models / "blobs").mkdir(parents=True, exist_ok=True)
    (models / "blobs" / digest.replace(":", "-")).write_bytes(data)
    return digest, len(data)


def _layer(media: str, digest: str, size: int) -> str:
    return f'{{"mediaType":"application/vnd.ollama.image.{media}","digest":"{digest}","size":{size}}}'


def build_ollama_folder(models: Path, gguf: bytes) -> dict[str, bytes]:
    """Lay out two models byte for byte as Ollama (pull and create) leaves them."""
    g = _blob(models, gguf)
    t = _blob(models, TEMPLATE.encode())
    p = _blob(models, PARAMS)
    lic = _blob(models, b"Apache License 2.0")
    # An older Ollama config: rootfs with diff_ids, no optional fields.
    config = (f'{{"model_format":"gguf","model_family":"llama","model_families":["llama"],'
              f'"model_type":"86K","file_type":"F32","architecture":"amd64","os":"linux",'
              f'"rootfs":{{"type":"layers","diff_ids":["{g[0]}","{t[0]}"]}}}}').encode()
    c = _blob(models, config)
    manifests = {}
    for rel, layers in (
        ("registry.ollama.ai/library/tinyllama/latest",
         [_layer("model", *g), _layer("template", *t), _layer("license", *lic), _layer("params", *p)]),
        ("hf.co/Bartowski/Tiny-GGUF/Q4_K_M", [_layer("model", *g)]),
    ):
        raw = ('{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
               f'"config":{{"mediaType":"application/vnd.docker.container.image.v1+json",'
               f'"digest":"{c[0]}","size":{c[1]}}},"layers":[{",".join(layers)}]}}').encode()
        path = models / "manifests" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
        manifests[rel] = raw
    os.utime(models / "manifests/hf.co/Bartowski/Tiny-GGUF/Q4_K_M", (1_000_000_000, 1_000_000_000))
    return manifests


@pytest.fixture
def ollama(store: ModelStore, tiny_gguf: Path) -> dict[str, bytes]:
    return build_ollama_folder(store.root, tiny_gguf.read_bytes())


def test_lists_an_ollama_folder_in_place(store: ModelStore, ollama: dict[str, bytes]) -> None:
    tags = [m.to_json() for m in store.list()]
    assert [t["name"] for t in tags] == ["tinyllama:latest", "hf.co/Bartowski/Tiny-GGUF:Q4_K_M"]
    first = tags[0]
    raw = ollama["registry.ollama.ai/library/tinyllama/latest"]
    assert first["model"] == "tinyllama:latest"
    assert first["digest"] == hashlib.sha256(raw).hexdigest()
    assert first["size"] == sum(x.size for x in Manifest.from_bytes(raw).layers) \
        + Manifest.from_bytes(raw).config.size
    assert first["details"] == {"parent_model": "", "format": "gguf", "family": "llama",
                                "families": ["llama"], "parameter_size": "86K",
                                "quantization_level": "F32"}


def test_shows_and_loads_an_ollama_model(store: ModelStore, ollama: dict[str, bytes]) -> None:
    shown = store.show("tinyllama")
    assert shown["template"] == TEMPLATE and shown["license"] == "Apache License 2.0"
    assert shown["parameters"].splitlines() == [
        'stop                           "<|user|>"', 'stop                           "<|system|>"',
        "temperature                    0.6"]
    rec = store.get("tinyllama:latest")
    assert rec.model_path is not None and rec.model_path.parent == store.root / "blobs"
    assert rec.parameters == {"stop": ["<|user|>", "<|system|>"], "temperature": 0.6}


def test_names_match_case_insensitively(store: ModelStore, ollama: dict[str, bytes]) -> None:
    assert store.resolve("TinyLlama:LATEST") == parse_name("tinyllama")
    found = store.resolve("HF.CO/bartowski/tiny-gguf:q4_k_m")
    assert found is not None and found.full() == "hf.co/Bartowski/Tiny-GGUF:Q4_K_M"
    assert store.show("hf.co/bartowski/tiny-gguf:Q4_K_M")["details"]["family"] == "llama"
    # A new tag under an existing model adopts the stored casing of the parts it shares.
    new = store.copy("tinyllama", "HF.CO/BARTOWSKI/TINY-GGUF:Fresh")
    assert new.full() == "hf.co/Bartowski/Tiny-GGUF:Fresh"
    assert (store.root / "manifests/hf.co/Bartowski/Tiny-GGUF/Fresh").is_file()


def test_what_we_write_ollama_reads(store: ModelStore, ollama: dict[str, bytes]) -> None:
    list(store.create({"model": "mine", "from": "tinyllama", "system": "Be brief."}))
    raw = (store.root / "manifests/registry.ollama.ai/library/mine/latest").read_bytes()
    assert raw.endswith(b"}\n") and b" " not in raw  # Go's json.Encoder: compact plus newline
    obj = json.loads(raw)
    assert list(obj) == ["schemaVersion", "mediaType", "config", "layers"]
    assert obj["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert obj["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    for layer in [obj["config"], *obj["layers"]]:
        assert list(layer)[:3] == ["mediaType", "digest", "size"]
        blob = store.root / "blobs" / layer["digest"].replace(":", "-")
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == layer["digest"]
        assert blob.stat().st_size == layer["size"]
    config = json.loads((store.root / "blobs" / obj["config"]["digest"].replace(":", "-")).read_bytes())
    assert {"model_format", "model_family", "model_families", "model_type", "file_type",
            "architecture", "os", "rootfs"} <= set(config)
    medias = [x["mediaType"].rsplit(".", 1)[1] for x in obj["layers"]]
    assert medias == ["model", "template", "license", "params", "system"]
    assert all(x["from"] == "tinyllama:latest" for x in obj["layers"][:4])


def test_manifest_refused_while_a_blob_is_missing(store: ModelStore) -> None:
    raw = ('{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
           '"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:'
           + "a" * 64 + '","size":2},"layers":[]}').encode()
    with pytest.raises(StoreError, match="missing blob"):
        store.layout.write(parse_name("half"), raw)
    assert store.list() == [] and not (store.root / "manifests/registry.ollama.ai").exists()


def test_corrupt_and_stray_manifests_are_skipped(store: ModelStore, ollama: dict[str, bytes]) -> None:
    bad = store.root / "manifests/registry.ollama.ai/library/broken/latest"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"{not json")
    stray = store.root / "manifests/registry.ollama.ai/library/.hidden/latest"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"{}")
    (store.root / "manifests/registry.ollama.ai/toplevel-file").write_bytes(b"x")
    assert {m.name.display() for m in store.list()} == {"tinyllama:latest", "hf.co/Bartowski/Tiny-GGUF:Q4_K_M"}
    with pytest.raises(ManifestError):
        store.show("broken")
    # One unreadable manifest might name any blob: pruning must keep everything.
    before = set(os.listdir(store.root / "blobs"))
    assert store.prune(grace=0) == []
    assert set(os.listdir(store.root / "blobs")) == before


@pytest.mark.parametrize("body", [
    b"[]", b'{"config":5}', b'{"config":{"mediaType":"x","digest":"sha256:../../etc","size":1}}',
    b'{"config":{"mediaType":"x","digest":"sha256:' + b"a" * 64 + b'","size":-1}}',
    b'{"config":{"mediaType":"x","digest":"sha256:' + b"a" * 64 + b'","size":1},"layers":{}}',
    b"[" * 100_000,
])
def test_manifest_parser_is_total(body: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_bytes(body)


def test_unknown_model_is_not_found(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match="model 'nope:latest' not found"):
        store.show("nope")
