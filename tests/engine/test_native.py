"""The C boundary: one test per shim entry point family, on real GGUF files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from power import native
from power.errors import NativeError

VOCAB_DIR = Path(__file__).resolve().parents[2] / "vendor" / "llama.cpp" / "models"


def test_abi_and_commit_match_the_pin() -> None:
    import tomllib

    pin = tomllib.loads((Path(__file__).resolve().parents[2] / "vendor" / "pin.toml").read_text())
    assert native.llama_commit() == pin["llama_cpp_commit"]
    assert native._lib.pw_abi_version() == native.ABI_VERSION
    assert "CPU" in native.system_info() or native.system_info()


def test_pin_and_unpacked_tree_agree() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2] / "vendor"
    pin = tomllib.loads((root / "pin.toml").read_text())
    stamp = (root / "llama.cpp" / ".power-pin").read_text().split()
    assert stamp == [pin["sha256"], pin["llama_cpp_commit"]]


def test_devices_include_the_cpu() -> None:
    devs = native.devices()
    assert any(d.kind == "cpu" for d in devs)


def test_model_info_and_metadata(tiny_model: Path) -> None:
    with native.Model(tiny_model) as m:
        assert m.info.n_layer == 2 and m.info.n_embd == 64
        assert m.info.n_ctx_train == 2048
        meta = m.metadata()
        assert meta["general.architecture"] == "llama"
        assert m.meta("llama.block_count") == "2"
        assert m.meta("no.such.key") is None
        assert m.chat_template() is None
        assert "llama" in m.description()


def test_tokenize_detokenize_round_trip(tiny_model: Path) -> None:
    with native.Model(tiny_model) as m:
        text = "the weather in Zürich is ☀️ today"
        toks = m.tokenize(text, add_special=False)
        assert m.detokenize(toks) == text
        with_bos = m.tokenize(text)
        assert with_bos[0] == m.info.token_bos and with_bos[1:] == toks
        assert m.tokenize("<|im_start|>", add_special=False, parse_special=True) == [m.info.n_vocab - 2]
        assert m.is_eog(m.info.token_eos)
        assert m.token_bytes(toks[0]) == b"t" or len(m.token_bytes(toks[0])) >= 1


def test_bad_token_is_an_error_not_a_crash(tiny_model: Path) -> None:
    with native.Model(tiny_model) as m:
        with pytest.raises(NativeError, match="out of range"):
            m.detokenize([10**6])


def test_non_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"this is not a model at all")
    with pytest.raises(NativeError, match="not a GGUF file"):
        native.Model(bad)
    with pytest.raises(NativeError, match="cannot open"):
        native.Model(tmp_path / "missing.gguf")


def test_truncated_gguf_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    data = tiny_model.read_bytes()
    for cut in (6, 200, len(data) // 2):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(NativeError, match="failed to load model"):
            native.Model(bad)


def test_progress_callback_can_cancel(tiny_model: Path) -> None:
    seen: list[float] = []

    def progress(p: float) -> bool:
        seen.append(p)
        return False

    with pytest.raises(NativeError):
        native.Model(tiny_model, progress=progress)
    assert seen


def _vocab_cases(name: str) -> list[tuple[str, list[int]]]:
    inp = (VOCAB_DIR / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8")
    out = (VOCAB_DIR / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8")
    texts = inp.split("\n__ggml_vocab_test__\n")
    ids = out.split("\n")
    return [(t, [int(x) for x in i.split()]) for t, i in zip(texts, ids)]


@pytest.mark.parametrize("name", ["llama-spm", "llama-bpe", "qwen2", "gpt-2", "phi-3", "bert-bge"])
def test_vocab_only_tokenizers_match_llama_cpp_expectations(name: str) -> None:
    path = VOCAB_DIR / f"ggml-vocab-{name}.gguf"
    if not path.is_file():
        pytest.skip(f"{path.name} is not in the pinned tree")
    m = native.load_vocab(path)
    try:
        cases = _vocab_cases(name)
        assert cases
        for text, expected in cases:
            assert m.tokenize(text, add_special=False, parse_special=False) == expected, text
    finally:
        m.close()


def test_quantize_f16_to_q8_0(tmp_path: Path) -> None:
    from tests.tinymodels import write_llama

    src = write_llama(tmp_path / "f32.gguf", n_embd=64, seed=5)
    dst = tmp_path / "q8.gguf"
    native.quantize(src, dst, "Q8_0")
    with native.Model(dst) as m:
        assert m.info.ftype == native.FTYPES["q8_0"]
    assert os.path.getsize(dst) < os.path.getsize(src)


def test_quantize_unknown_type_is_refused(tmp_path: Path) -> None:
    from power.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        native.quantize(tmp_path / "a", tmp_path / "b", "q9_z")
