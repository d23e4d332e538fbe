from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from power.errors import (
    GGUFError,
    InvalidDigest,
    InvalidName,
    InvalidRequest,
    ModelfileError,
    ModelNotFound,
    NativeError,
    NotFound,
)
from power.store import ModelStore
from tests.ggufgen import write_gguf, write_tiny_adapter, write_tiny_projector
from tests.tinymodels import write_llama


def snapshot(store: ModelStore) -> dict[str, bytes]:
    out = {}
    for folder, _, files in os.walk(store.root):
        for f in files:
            p = Path(folder, f)
            out[str(p.relative_to(store.root))] = p.read_bytes()
    return out


def statuses(progress) -> list[str]:  # type: ignore[no-untyped-def]
    return [p["status"] for p in progress]


def blob_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_create_from_modelfile_path(store: ModelStore, model_dir: Path) -> None:
    text = "FROM ./tiny.gguf\nPARAMETER temperature 0.7\nPARAMETER stop <|eot|>\nSYSTEM hi\n"
    got = statuses(store.create_from_modelfile("Tiny:v1", text, model_dir))
    gguf = blob_digest(model_dir / "tiny.gguf")
    assert got[:3] == ["gathering model components", "parsing GGUF", f"creating new layer {gguf}"]
    assert got[-2:] == ["writing manifest", "success"]
    assert sum(s.startswith("creating new layer") for s in got) == 3  # model, system, params
    rec = store.get("tiny:V1")
    assert rec.name.display() == "Tiny:v1"
    assert rec.model_path == store.blobs.path(gguf)
    assert rec.system == "hi" and rec.parameters == {"stop": ["<|eot|>"], "temperature": 0.7}
    assert (rec.config.model_format, rec.config.model_family, rec.config.file_type) == ("gguf", "llama", "F32")
    assert rec.config.model_type.endswith("K")


def test_create_from_existing_model_inherits_and_overrides(store: ModelStore, model_dir: Path) -> None:
    list(store.create_from_modelfile("base", "FROM ./tiny.gguf\nPARAMETER temperature 0.7\n"
                                     "PARAMETER stop a\nTEMPLATE {{ .Prompt }}!\n", model_dir))
    blobs_before = len(store.blobs.digests())
    got = statuses(store.create({"model": "child", "from": "base", "system": "new system",
                                 "parameters": {"temperature": 0.2, "top_k": "5"}}))
    model_layer = store.get("base").manifest.layers[0].digest
    assert f"using existing layer {model_layer}" in got
    child = store.get("child")
    assert child.parameters == {"stop": ["a"], "temperature": 0.2, "top_k": 5}
    assert child.template == "{{ .Prompt }}!" and child.system == "new system"
    assert child.parent_model == "base:latest"
    assert len(store.blobs.digests()) == blobs_before + 3  # system, params, config; model reused


def test_create_from_uploaded_blobs_json_form(store: ModelStore, tiny_gguf: Path) -> None:
    digest = store.blobs.add_file(tiny_gguf).digest
    got = statuses(store.create({"name": "jsonform", "files": {"tiny.gguf": digest},
                                 "template": "{{ .System }}{{ .Prompt }}", "license": ["A", "B"],
                                 "messages": [{"role": "user", "content": "hey"}],
                                 "parameters": {"stop": ["x", "y"]}}))
    assert got[0] == "parsing GGUF" and f"using existing layer {digest}" in got
    rec = store.get("jsonform")
    assert rec.licenses == ("A", "B") and rec.messages == ({"role": "user", "content": "hey"},)
    assert rec.parameters == {"stop": ["x", "y"]}


def test_identical_layers_are_shared(store: ModelStore, model_dir: Path) -> None:
    list(store.create_from_modelfile("one", "FROM ./tiny.gguf\nSYSTEM same\n", model_dir))
    before = snapshot(store)
    got = statuses(store.create_from_modelfile("two", "FROM ./tiny.gguf\nSYSTEM same\n", model_dir))
    assert not any(s.startswith("creating new layer") for s in got)
    after = snapshot(store)
    assert {k for k in after if k.startswith("blobs")} == {k for k in before if k.startswith("blobs")}
    assert store.get("one").digest == store.get("two").digest


def test_adapter_and_projector_layers(store: ModelStore, model_dir: Path) -> None:
    write_tiny_adapter(model_dir / "lora.gguf")
    write_tiny_projector(model_dir / "mmproj.gguf")
    text = "FROM ./tiny.gguf\nFROM ./mmproj.gguf\nADAPTER ./lora.gguf\n"
    list(store.create_from_modelfile("vis", text, model_dir))
    rec = store.get("vis")
    medias = [x.media_type.rsplit(".", 1)[1] for x in rec.manifest.layers]
    assert medias == ["model", "projector", "adapter"]
    assert rec.projector_paths == (store.blobs.path(blob_digest(model_dir / "mmproj.gguf")),)
    assert rec.adapter_paths == (store.blobs.path(blob_digest(model_dir / "lora.gguf")),)
    assert rec.config.model_families == ("llama", "clip")
    shown = store.show("vis")
    assert "vision" in shown["capabilities"] and shown["projector_info"]["clip.has_vision_encoder"] is True
    assert "ADAPTER " in shown["modelfile"]


@pytest.mark.parametrize("body,error,match", [
    ({"model": "x"}, InvalidRequest, "neither 'from' or 'files' was specified"),
    ({"model": "bad name!", "from": "y"}, InvalidName, "invalid model name"),
    ({"from": "y"}, InvalidName, "invalid model name"),
    ({"model": "x", "files": {"/etc/passwd": "sha256:" + "a" * 64}}, InvalidRequest, "relative"),
    ({"model": "x", "files": {"../up.gguf": "sha256:" + "a" * 64}}, InvalidRequest, "relative"),
    ({"model": "x", "files": {"m.gguf": "sha256:../../x"}}, InvalidDigest, "invalid digest"),
    ({"model": "x", "files": {"m.gguf": "sha256:" + "a" * 64}}, NotFound, "upload it first"),
    ({"model": "x", "from": "missing"}, ModelNotFound, "model 'missing' not found"),
    ({"model": "x", "from": "y", "parameters": {"nope": 1}}, InvalidRequest, "unknown parameter"),
    ({"model": "x", "from": "y", "parameters": {"num_ctx": "many"}}, InvalidRequest, "invalid int"),
    ({"model": "x", "from": "y", "quantize": "q9_z"}, InvalidRequest, "unsupported quantization"),
])
def test_bad_create_requests_change_nothing(store: ModelStore, body: dict, error: type, match: str) -> None:
    before = snapshot(store)
    with pytest.raises(error, match=match):
        list(store.create(body))
    assert snapshot(store) == before


def test_non_gguf_blob_and_adapter_without_base(store: ModelStore, model_dir: Path) -> None:
    junk = store.blobs.add_bytes(b"not a model at all").digest
    tiny = store.blobs.add_file(model_dir / "tiny.gguf").digest
    write_tiny_adapter(model_dir / "lora.gguf")
    lora = store.blobs.add_file(model_dir / "lora.gguf").digest
    before = snapshot(store)
    with pytest.raises(InvalidRequest, match="not a GGUF"):
        list(store.create({"model": "x", "files": {"junk.gguf": junk}}))
    with pytest.raises(InvalidRequest, match="no base model"):
        list(store.create({"model": "x", "files": {"a.gguf": lora}}))
    with pytest.raises(InvalidRequest, match="not a LoRA adapter"):
        list(store.create({"model": "x", "files": {"a.gguf": tiny}, "adapters": {"b.gguf": tiny}}))
    # The uploads a failed create named, which nothing else uses, went with it (test_orphans.py).
    gone = {f"blobs/sha256-{d[7:]}" for d in (junk, lora, tiny)}
    assert snapshot(store) == {k: v for k, v in before.items() if k not in gone}


@pytest.mark.parametrize("text,error,match", [
    ("FROM ./missing.gguf\n", ModelfileError, r"\(line 1\): no such file"),
    ("SYSTEM x\nFROM ./notgguf.txt\n", ModelfileError, r"\(line 2\): .* is not a GGUF file"),
    ("FROM ./tiny.gguf\nADAPTER ./missing-lora.gguf\n", ModelfileError, "no such file"),
    ("FROM ./truncated.gguf\n", GGUFError, "truncated"),
    ("FROM nosuchmodel\n", ModelNotFound, "nosuchmodel"),
    ("FROM ./tiny.gguf\nFOO x\n", ModelfileError, "command must be one of"),
])
def test_bad_modelfiles_change_nothing(store: ModelStore, model_dir: Path, text: str, error: type,
                                       match: str) -> None:
    (model_dir / "notgguf.txt").write_text("hello")
    (model_dir / "truncated.gguf").write_bytes((model_dir / "tiny.gguf").read_bytes()[:5000])
    before = snapshot(store)
    with pytest.raises(error, match=match):
        list(store.create_from_modelfile("x", text, model_dir))
    assert snapshot(store) == before


def fake_quantizer(calls: list) -> object:  # type: ignore[type-arg]
    def quantize(src: str, dst: str, ftype: str, nthreads: int = 0) -> None:
        calls.append((src, dst, ftype))
        write_gguf(Path(dst), "llama", {"general.file_type": 15, "llama.block_count": 2},
                   {"w.weight": __import__("numpy").zeros((256,), dtype="float32")})
    return quantize


def test_quantize_statuses_and_config(tmp_path: Path, model_dir: Path) -> None:
    calls: list = []
    store = ModelStore(tmp_path / "models", quantizer=fake_quantizer(calls))  # type: ignore[arg-type]
    progress = list(store.create_from_modelfile("q", "FROM ./tiny.gguf\n", model_dir, quantize="q4_k_m"))
    got = [p["status"] for p in progress]
    assert "quantizing F32 model to Q4_K_M" in got
    assert got.index("verifying conversion") > got.index("quantizing F32 model to Q4_K_M")
    first = next(p for p in progress if p["status"].startswith("quantizing"))
    assert first["total"] == (model_dir / "tiny.gguf").stat().st_size and first["completed"] == 0
    assert calls[0][2] == "Q4_K_M" and Path(calls[0][1]).parent == store.blobs.root
    rec = store.get("q")
    assert rec.config.file_type == "Q4_K_M"
    assert not any(n.startswith(".a3s-tmp") for n in os.listdir(store.blobs.root))


def test_failed_quantize_rolls_everything_back(tmp_path: Path, model_dir: Path) -> None:
    def broken(src: str, dst: str, ftype: str, nthreads: int = 0) -> None:
        Path(dst).write_bytes(b"half written")
        raise NativeError("llama.cpp said no")

    store = ModelStore(tmp_path / "models", quantizer=broken)
    with pytest.raises(NativeError):
        list(store.create_from_modelfile("q", "FROM ./tiny.gguf\n", model_dir, quantize="Q8_0"))
    assert os.listdir(store.blobs.root) == [] and store.list() == []


def test_quantize_refuses_quantized_input(tmp_path: Path, store: ModelStore) -> None:
    q = write_gguf(tmp_path / "q.gguf", "llama", {"general.file_type": 15})
    digest = store.blobs.add_file(q).digest
    with pytest.raises(InvalidRequest, match="only supported for F16"):
        list(store.create({"model": "x", "files": {"q.gguf": digest}, "quantize": "q8_0"}))


def test_abandoned_create_rolls_back(store: ModelStore, model_dir: Path) -> None:
    progress = store.create_from_modelfile("gone", "FROM ./tiny.gguf\nSYSTEM s\n", model_dir)
    for p in progress:
        if p["status"].startswith("creating new layer"):
            break
    progress.close()  # type: ignore[attr-defined]
    assert store.list() == [] and os.listdir(store.blobs.root) == []


def test_overwrite_collects_the_old_layers(store: ModelStore, model_dir: Path, tmp_path: Path) -> None:
    list(store.create_from_modelfile("m", "FROM ./tiny.gguf\nSYSTEM old\n", model_dir))
    old_system = store.get("m").manifest.layers_of("application/vnd.ollama.image.system")[0].digest
    list(store.create_from_modelfile("m", "FROM ./tiny.gguf\nSYSTEM new\n", model_dir))
    assert not store.blobs.exists(old_system) and store.get("m").system == "new"
    keep = ModelStore(store.root, noprune=True)
    list(keep.create_from_modelfile("m", "FROM ./tiny.gguf\nSYSTEM newer\n", model_dir))
    new_system = store.get("m").manifest.layers_of("application/vnd.ollama.image.system")[0]
    assert keep.get("m").system == "newer" and new_system.digest != old_system
    assert len([d for d in keep.blobs.digests()]) == 5  # gguf, two systems, two configs


def test_template_autodetection_hook(tmp_path: Path) -> None:
    gguf = write_llama(tmp_path / "c.gguf", chat_template="{{ bos_token }}<|im_start|>")
    store = ModelStore(tmp_path / "models", template_detector=lambda t: (
        "chatml", "{{ .Prompt }}<|im_end|>", {"stop": ["<|im_end|>"]}) if "im_start" in t else None)
    got = statuses(store.create_from_modelfile("c", f"FROM {gguf}\n", tmp_path))
    assert "using autodetected template chatml" in got
    assert store.get("c").parameters == {"stop": ["<|im_end|>"]}


def test_native_quantize(tmp_path: Path) -> None:
    native = pytest.importorskip("power.native", exc_type=ImportError)
    if not hasattr(native, "quantize"):
        pytest.skip("power.native has no quantize")
    src = write_llama(tmp_path / "f16.gguf", f16=True)
    store = ModelStore(tmp_path / "models")
    got = statuses(store.create_from_modelfile("nq", f"FROM {src}\n", tmp_path, quantize="q8_0"))
    assert "quantizing F16 model to Q8_0" in got and got[-1] == "success"
    rec = store.get("nq")
    assert rec.config.file_type == "Q8_0"
    assert rec.model_path is not None and rec.model_path.stat().st_size < src.stat().st_size
    shutil.rmtree(tmp_path / "models")
