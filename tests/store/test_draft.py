"""Draft models (speculative decoding) in the store: DRAFT in Modelfiles and /api/create, the vocabulary check,
the draft layer and config Ollama writes, and show's Modelfile and details."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from power.errors import InvalidName, InvalidRequest, ModelfileError, ModelNotFound, NotFound
from power.store import ModelStore
from power.store.gguf import read_gguf
from power.store.manifest import MEDIA_DRAFT, MEDIA_MODEL, load_json
from power.store.modelfile import parse_modelfile
from power.store.vocab import vocab_mismatch
from tests.ggufgen import write_gguf
from tests.store.test_create import blob_digest, snapshot
from tests.tinymodels import vocabulary, write_llama


def _vocab_gguf(path: Path, *, tokens: list[str] | None = None, types: list[int] | None = None,
                bos: int | None = None, model: str = "gpt2", add_bos: bool = True) -> Path:
    """A GGUF with only a tokenizer (what the check reads), the tiny models' vocabulary unless told."""
    base_tokens, base_types = vocabulary()
    tokens = base_tokens if tokens is None else tokens
    return write_gguf(path, "llama", {
        "tokenizer.ggml.model": model, "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": base_types[:len(tokens)] + [1] * (len(tokens) - len(base_types))
        if types is None else types,
        "tokenizer.ggml.bos_token_id": base_tokens.index("<|bos|>") if bos is None else bos,
        "tokenizer.ggml.eos_token_id": base_tokens.index("<|eos|>"), "tokenizer.ggml.add_bos_token": add_bos})


def test_vocab_rule(tmp_path: Path) -> None:
    tokens, types = vocabulary()
    same = read_gguf(_vocab_gguf(tmp_path / "a.gguf"))
    assert vocab_mismatch(same, read_gguf(_vocab_gguf(tmp_path / "b.gguf"))) is None
    # A few more tokens at the end (llama-server allows 128) and the first five ids are not compared.
    assert vocab_mismatch(same, read_gguf(_vocab_gguf(tmp_path / "c.gguf", tokens=tokens + ["x1", "x2"]))) is None
    assert vocab_mismatch(same, read_gguf(_vocab_gguf(tmp_path / "d.gguf", tokens=["?"] + tokens[1:]))) is None
    cases = {
        "e": ({"tokens": tokens[:100] + ["zz"] + tokens[101:]}, "token 100 is 'zz' in the draft"),
        "f": ({"tokens": tokens + [f"t{i}" for i in range(129)]}, "they may differ by at most 128"),
        "g": ({"model": "llama"}, "tokenizer is 'llama'"),
        "h": ({"bos": 7}, "BOS differs"),
        "i": ({"add_bos": False}, "BOS differs: the draft does not add"),
        "j": ({"types": types[:200] + [3] + types[201:]}, "token 200 .* has type 3 in the draft and 1"),
    }
    for name, (kw, why) in cases.items():
        got = vocab_mismatch(same, read_gguf(_vocab_gguf(tmp_path / f"{name}.gguf", **kw)))
        assert got is not None and re.search(why, got), (name, got)


def test_draft_path_in_a_modelfile(store: ModelStore, model_dir: Path) -> None:
    write_llama(model_dir / "draft.gguf", seed=9, n_layer=1)
    list(store.create_from_modelfile("spec", "FROM ./tiny.gguf\nDRAFT ./draft.gguf\n", model_dir))
    rec = store.get("spec")
    draft = blob_digest(model_dir / "draft.gguf")
    assert [(x.media_type, x.digest) for x in rec.manifest.layers] == [
        (MEDIA_MODEL, blob_digest(model_dir / "tiny.gguf")), (MEDIA_DRAFT, draft)]
    assert rec.draft_path == store.blobs.path(draft)
    config = load_json(store.blobs.read_bytes(rec.manifest.config.digest), "config")
    assert config["draft"] == {"model_format": "gguf", "architecture": "llama"}  # as Ollama writes it
    assert config["model_families"] == ["llama"] and config["file_type"] == "F32"
    shown = store.show("spec")
    assert f"DRAFT {store.blobs.path(draft)}\n" in shown["modelfile"]
    assert shown["details"]["draft"]["family"] == "llama"
    assert shown["details"]["draft"]["parameter_size"] != shown["details"]["parameter_size"]
    # The shown Modelfile creates the same model again (DRAFT round-trips).
    list(store.create_from_modelfile("again", shown["modelfile"], model_dir))
    again = store.get("again").manifest
    assert again.layers_of(MEDIA_MODEL, MEDIA_DRAFT) == rec.manifest.layers_of(MEDIA_MODEL, MEDIA_DRAFT)
    # A child inherits the draft; a later DRAFT replaces it.
    list(store.create({"model": "child", "from": "spec", "system": "s"}))
    assert store.get("child").draft_path == rec.draft_path
    list(store.create({"model": "child2", "from": "spec", "draft": "spec"}))
    assert store.get("child2").draft_path == store.get("spec").model_path
    assert store.get("child2").manifest.layers_of(MEDIA_DRAFT)[0].from_ == "spec:latest"


def test_draft_by_name_and_by_digest(store: ModelStore, model_dir: Path, tiny_gguf: Path) -> None:
    list(store.create_from_modelfile("small", "FROM ./tiny.gguf\n", model_dir))
    list(store.create_from_modelfile("named", "FROM ./tiny.gguf\nDRAFT small\n", model_dir))
    assert store.get("named").draft_path == store.get("small").model_path
    digest = store.blobs.add_file(tiny_gguf).digest
    list(store.create({"model": "json", "files": {"t.gguf": digest}, "draft_files": {"d.gguf": digest}}))
    assert store.get("json").draft_path == store.blobs.path(digest)
    assert "DRAFT " in store.show("json")["modelfile"] and "DRAFT " not in store.show("small")["modelfile"]
    assert "draft" not in store.show("small")["details"]


def test_bad_drafts_change_nothing(store: ModelStore, model_dir: Path, tmp_path: Path) -> None:
    tokens, _ = vocabulary()
    other = write_llama(model_dir / "other.gguf", specials=[f"<|s{i}|>" for i in range(130)])
    changed = _vocab_gguf(model_dir / "vocab.gguf", tokens=tokens[:50] + ["zz"] + tokens[51:])
    list(store.create_from_modelfile("base", "FROM ./tiny.gguf\n", model_dir))
    before = snapshot(store)
    for text, error, match in (
            ("DRAFT ./other.gguf", InvalidRequest,
             "draft model's vocabulary does not match the model's: the draft has 398 tokens and the model 268"),
            ("DRAFT ./vocab.gguf", InvalidRequest, "token 50 is 'zz' in the draft"),
            ("DRAFT ./missing.gguf", ModelfileError, "no such file"),
            ("DRAFT nosuchmodel", ModelNotFound, "model 'nosuchmodel' not found")):
        with pytest.raises(error, match=match):
            list(store.create_from_modelfile("bad", f"FROM ./tiny.gguf\n{text}\n", model_dir))
        assert snapshot(store) == before, text
    digest = store.blobs.add_file(changed).digest
    before = snapshot(store)
    for body, error, match in (
            ({"draft_files": {"a.gguf": digest, "b.gguf": digest}}, InvalidRequest, "single GGUF file"),
            ({"draft": "x", "draft_files": {"a.gguf": digest}}, InvalidRequest, "not both"),
            ({"draft": "bad name!"}, InvalidName, "invalid model name"),
            ({"draft_files": {"../a.gguf": digest}}, InvalidRequest, "relative"),
            ({"draft_files": {"a.gguf": "sha256:" + "b" * 64}}, NotFound, "upload it first")):
        with pytest.raises(error, match=match):
            list(store.create({"model": "bad", "from": "base", **body}))
        assert snapshot(store) == before, body
    # A new model under an inherited draft is checked against it too.
    list(store.create_from_modelfile("spec", "FROM ./tiny.gguf\nDRAFT ./tiny.gguf\n", model_dir))
    before = snapshot(store)
    with pytest.raises(InvalidRequest, match="the draft has 268 tokens and the model 398"):
        list(store.create({"model": "spec2", "from": "spec", "files": {"o.gguf": store.blobs.add_file(other).digest}}))
    assert {k for k in snapshot(store) if "manifests" in k} == {k for k in before if "manifests" in k}
    assert parse_modelfile("FROM a\ndraft ./x.gguf\n").last("draft") == "./x.gguf"


def test_a_draft_quantized_from_its_target(tmp_path: Path) -> None:
    """Issue 17's draft: the target itself requantized to a smaller type (draft_quantize, or create --quantize
    of a quantized model to fewer bits); a larger type is still refused, and the draft needs a DRAFT."""
    pytest.importorskip("power.native", exc_type=ImportError)
    src = write_llama(tmp_path / "f16.gguf", f16=True)
    store = ModelStore(tmp_path / "models")
    list(store.create_from_modelfile("q8", f"FROM {src}\n", tmp_path, quantize="q8_0"))
    q8 = store.get("q8")
    got = [p["status"] for p in store.create({"model": "spec", "from": "q8", "draft": "q8",
                                              "draft_quantize": "q4_0"})]
    assert "quantizing Q8_0 model to Q4_0" in got and got[-1] == "success"
    spec = store.get("spec")
    assert spec.model_path == q8.model_path and spec.draft_path not in (None, q8.model_path)
    assert read_gguf(spec.draft_path, max_array_items=0).file_type_name == "Q4_0"
    assert spec.config.file_type == "Q8_0" and store.show("spec")["details"]["draft"]["quantization_level"] == "Q4_0"
    assert spec.draft_path is not None and spec.draft_path.stat().st_size < q8.model_path.stat().st_size
    list(store.create({"model": "q4", "from": "q8", "quantize": "q4_0"}))  # the model itself, requantized
    assert store.get("q4").config.file_type == "Q4_0"
    with pytest.raises(InvalidRequest, match="Q4_0 to Q8_0 is not"):
        list(store.create({"model": "up", "from": "q4", "quantize": "q8_0"}))
    with pytest.raises(InvalidRequest, match="draft_quantize requires a DRAFT model"):
        list(store.create({"model": "nodraft", "from": "q8", "draft_quantize": "q4_0"}))
