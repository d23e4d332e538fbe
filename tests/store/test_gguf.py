from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power.errors import GGUFError
from power.store.ggml_types import file_type_name, parse_quantize_type
from power.store.gguf import ArraySummary, parse_gguf, read_gguf
from power.store.record import format_parameter_size
from tests.ggufgen import write_gguf
from tests.tinymodels import write_llama


def header(version: int = 3, n_tensors: int = 0, n_kv: int = 0, endian: str = "<") -> bytes:
    return b"GGUF" + struct.pack(endian + "IQQ", version, n_tensors, n_kv)


def kv_string(key: str, value: bytes, declared: int | None = None) -> bytes:
    k = key.encode()
    return (struct.pack("<Q", len(k)) + k + struct.pack("<I", 8)
            + struct.pack("<Q", len(value) if declared is None else declared) + value)


def test_reads_tiny_llama(tiny_gguf: Path) -> None:
    g = read_gguf(tiny_gguf)
    assert g.version == 3 and g.architecture == "llama" and g.kind == "model"
    assert g.arch_value("context_length") == 2048 and g.arch_value("embedding_length") == 64
    assert g.file_type_name == "F32"
    assert g.get("llama.attention.layer_norm_rms_epsilon") == 1e-05  # float32 printed shortest
    assert len(g.get("tokenizer.ggml.tokens")) > 256
    names = [t.name for t in g.tensors]
    assert names[0] == "token_embd.weight" and "blk.1.ffn_down.weight" in names
    embd = g.tensors[0]
    assert embd.shape[0] == 64 and embd.type_name == "F32" and embd.n_bytes == embd.n_elements * 4
    assert g.parameter_count == sum(t.n_elements for t in g.tensors)
    assert g.data_offset % g.alignment == 0 and g.data_offset + g.tensor_bytes <= g.file_size


def test_agrees_with_gguf_package_reader(tiny_gguf: Path) -> None:
    import gguf

    ref = gguf.GGUFReader(tiny_gguf)
    ours = read_gguf(tiny_gguf)
    assert ours.data_offset == ref.data_offset
    assert [(t.name, t.n_elements) for t in ours.tensors] == [(t.name, int(t.n_elements)) for t in ref.tensors]
    assert set(ours.metadata) == {k for k in ref.fields if not k.startswith("GGUF.")}


def test_long_arrays_summarised_on_request(tiny_gguf: Path) -> None:
    g = read_gguf(tiny_gguf, max_array_items=5)
    tokens = g.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, ArraySummary) and tokens.count > 256


def test_f16_and_guessed_file_type(tmp_path: Path) -> None:
    assert read_gguf(write_llama(tmp_path / "h.gguf", f16=True)).file_type_name == "F16"
    t = {"a.weight": np.zeros((32, 4), dtype=np.float16)}
    assert read_gguf(write_gguf(tmp_path / "g.gguf", "llama", {}, t)).file_type_name == "F16"


def test_version2_and_big_endian(tmp_path: Path) -> None:
    v2 = bytearray(header(2, 0, 1) + kv_string("general.architecture", b"llama"))
    assert parse_gguf(bytes(v2)).version == 2
    import gguf

    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_uint32("llama.context_length", 77)
    w.add_tensor("x.weight", np.ones((32,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    g = read_gguf(path)
    assert g.big_endian and g.arch_value("context_length") == 77 and g.tensors[0].shape == (32,)


@pytest.mark.parametrize("data,match", [
    (b"", "magic"),
    (b"GGML" + bytes(20), "magic"),
    (header(1), "version 1"),
    (header(4), "unsupported GGUF version"),
    (header(3, n_tensors=1 << 40), "tensor count"),
    (header(3, n_kv=1 << 60), "metadata count"),
    (header(3, 0, 1) + kv_string("k", b"", declared=1 << 62), "length"),
    (header(3, 0, 1) + kv_string("k", b"abc", declared=10), "truncated"),
    (header(3, 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 13), "invalid value type"),
    (header(3, 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 4, 1 << 50), "array count"),
    (header(3, 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 9, 1), "array of arrays"),
    (header(3, 0, 2) + kv_string("k", b"a") + kv_string("k", b"b"), "duplicate"),
    (header(3, 0, 1) + struct.pack("<Q", 2) + b"\xff\xfe" + struct.pack("<IB", 0, 1), "UTF-8"),
])
def test_hostile_headers_rejected(data: bytes, match: str) -> None:
    with pytest.raises(GGUFError, match=match):
        parse_gguf(data + bytes(max(0, 24 - len(data))) if data[:4] == b"GGUF" else data)


def tensor_file(name: bytes = b"t", dims: tuple[int, ...] = (32,), ttype: int = 0, offset: int = 0,
                data: int = 128, alignment: int | None = None) -> bytes:
    kvs = b""
    n_kv = 0
    if alignment is not None:
        kvs = struct.pack("<Q", 17) + b"general.alignment" + struct.pack("<II", 4, alignment)
        n_kv = 1
    info = (struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ttype, offset))
    body = header(3, 1, n_kv) + kvs + info
    return body + bytes(-len(body) % 32) + bytes(data)


def test_valid_tensor_file_parses() -> None:
    g = parse_gguf(tensor_file())
    assert g.tensors[0].shape == (32,) and g.tensors[0].n_bytes == 128


@pytest.mark.parametrize("kwargs,match", [
    ({"dims": (1, 1, 1, 1, 1)}, "dimensions"),
    ({"dims": (1 << 40, 1 << 40)}, "impossible shape"),
    ({"dims": (1 << 63,)}, "impossible shape"),
    ({"ttype": 4}, "invalid ggml type"),
    ({"ttype": 999}, "invalid ggml type"),
    ({"ttype": 2, "dims": (33,)}, "block size"),
    ({"offset": 64}, "offset"),
    ({"data": 64}, "past the end"),
    ({"name": b"x" * 64}, "length"),
    ({"alignment": 3}, "power of two"),
    ({"alignment": 0}, "power of two"),
])
def test_hostile_tensors_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(GGUFError, match=match):
        parse_gguf(tensor_file(**kwargs))


def test_every_truncation_is_a_gguf_error(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    g = parse_gguf(data)
    for cut in list(range(0, 600, 7)) + list(range(g.data_offset - 40, g.data_offset + 8)) + [len(data) - 1]:
        with pytest.raises(GGUFError):
            parse_gguf(data[:cut])


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(GGUFError):
        read_gguf(tmp_path / "nope.gguf")
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(GGUFError):
        read_gguf(tmp_path / "empty.gguf")


@pytest.fixture(scope="module")
def seed_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_llama(tmp_path_factory.mktemp("seed") / "s.gguf", n_embd=32, n_layer=1, n_ff=32)
    return path.read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutations_raise_only_gguf_error(seed_bytes: bytes, data: st.DataObject) -> None:
    buf = bytearray(seed_bytes[:4096])
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        width = data.draw(st.sampled_from([1, 4, 8]))
        value = data.draw(st.sampled_from([0, 1, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 62, (1 << 64) - 1]))
        chunk = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        buf[pos:pos + width] = chunk
    cut = data.draw(st.integers(0, len(buf)))
    try:
        parse_gguf(bytes(buf[:cut]), check_data=data.draw(st.booleans()))
    except GGUFError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes_after_magic(tail: bytes) -> None:
    try:
        parse_gguf(b"GGUF\x03\x00\x00\x00" + tail)
    except GGUFError:
        pass


@pytest.mark.parametrize("count,text", [
    (8_030_261_248, "8.0B"), (3_212_749_888, "3.2B"), (7_000_000_000, "7B"), (137_000_000, "137M"),
    (22_564_000, "22.56M"), (86_464, "86K"), (999, "999"),
])
def test_parameter_size_text(count: int, text: str) -> None:
    assert format_parameter_size(count) == text


def test_file_type_and_quantize_names() -> None:
    assert file_type_name(15) == "Q4_K_M" and file_type_name(7) == "Q8_0" and file_type_name(99) == "unknown"
    assert [parse_quantize_type(q) for q in ("q4_K_M", "Q4_K_S", "q5_k_m", "Q8_0")] == \
        ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q8_0"]
