"""A pure-Python GGUF reader (v2 and v3): header, metadata and tensor descriptors.

Hostile files are the normal case here (CVE-2024-12055, CVE-2025-0312/0315/0317
were all GGUF parsers trusting counts): every count, length, type and offset is
checked against the bytes that remain and against fixed caps before anything
is allocated, and the only exception that leaves this module is GGUFError.
Weights are never read; the file is memory-mapped and only the header is touched.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from power.errors import GGUFError
from power.store.ggml_types import TENSOR_TYPES, f32_shortest, file_type_from_tensors, file_type_name

__all__ = ["GGUFFile", "TensorInfo", "ArraySummary", "read_gguf", "parse_gguf", "is_gguf"]

MAGIC = b"GGUF"
MAX_DIMS = 4
MAX_TENSOR_NAME = 64  # GGML_MAX_NAME: llama.cpp refuses names this long or longer
MAX_KEY = 65535
MAX_STRING = 64 << 20
MAX_ARRAY = 1 << 22
MAX_TENSORS = 1 << 20
MAX_KVS = 1 << 20
DEFAULT_ALIGNMENT = 32
_INT64_MAX = (1 << 63) - 1

# GGUF value type -> (struct code, size); 8 = string and 9 = array are handled apart.
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4),
    6: ("f", 4), 7: ("B", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8),
}
_STRING, _ARRAY, _BOOL = 8, 9, 7


@dataclass(frozen=True)
class ArraySummary:
    """An array whose items were not kept (longer than the caller asked for)."""

    item_type: int
    count: int


@dataclass(frozen=True)
class TensorInfo:
    """One tensor descriptor: name, shape (ggml order), type and data offset."""

    name: str
    shape: tuple[int, ...]
    type: int
    offset: int

    @property
    def type_name(self) -> str:
        return TENSOR_TYPES[self.type].name

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        return TENSOR_TYPES[self.type].nbytes(self.n_elements)


@dataclass(frozen=True)
class GGUFFile:
    """What a GGUF file says about itself."""

    version: int
    metadata: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int
    file_size: int
    big_endian: bool = False

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else ""

    def arch_value(self, suffix: str, default: Any = None) -> Any:
        """Return ``<architecture>.<suffix>`` (e.g. ``context_length``)."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)

    @property
    def kind(self) -> str:
        """``general.type``: model, adapter, projector/mmproj ..."""
        kind = self.metadata.get("general.type")
        return kind if isinstance(kind, str) else "model"

    @property
    def file_type(self) -> int | None:
        ft = self.metadata.get("general.file_type")
        if isinstance(ft, int) and not isinstance(ft, bool):
            return ft
        return file_type_from_tensors([t.type for t in self.tensors])

    @property
    def file_type_name(self) -> str:
        return file_type_name(self.file_type)

    @property
    def parameter_count(self) -> int:
        count = self.metadata.get("general.parameter_count")
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            return count
        return sum(t.n_elements for t in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


class _Cursor:
    """Bounds-checked reads from a buffer; every overrun is a GGUFError."""

    def __init__(self, buf: Any, size: int, endian: str) -> None:
        self.buf, self.size, self.pos, self.e = buf, size, 0, endian

    @property
    def left(self) -> int:
        return self.size - self.pos

    def _take(self, n: int, what: str) -> int:
        if n < 0 or n > self.size - self.pos:
            raise GGUFError(f"truncated GGUF file reading {what} at offset {self.pos}")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, code: str, size: int, what: str) -> Any:
        return struct.unpack_from(self.e + code, self.buf, self._take(size, what))[0]

    def u32(self, what: str) -> int:
        return int(self.unpack("I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.unpack("Q", 8, what))

    def raw_string(self, limit: int, what: str) -> bytes:
        n = self.u64(what)
        if n > limit:
            raise GGUFError(f"{what} length {n} exceeds the limit of {limit}")
        start = self._take(n, what)
        return bytes(self.buf[start:start + n])

    def string(self, limit: int, what: str) -> str:
        return self.raw_string(limit, what).decode("utf-8", "replace")

    def skip_strings(self, count: int, what: str) -> None:
        for _ in range(count):
            n = self.u64(what)
            if n > MAX_STRING:
                raise GGUFError(f"{what} length {n} exceeds the limit of {MAX_STRING}")
            self._take(n, what)

    def scalars(self, vtype: int, count: int, what: str) -> list[Any]:
        code, size = _SCALARS[vtype]
        start = self._take(size * count, what)
        values = list(struct.unpack_from(f"{self.e}{count}{code}", self.buf, start))
        return [bool(v) for v in values] if vtype == _BOOL else values


def _value(cur: _Cursor, vtype: int, key: str, max_items: int | None) -> Any:
    if vtype in _SCALARS:
        value = cur.scalars(vtype, 1, key)[0]
        return f32_shortest(value) if vtype == 6 else value
    if vtype == _STRING:
        return cur.string(MAX_STRING, key)
    if vtype != _ARRAY:
        raise GGUFError(f"key {key!r} has invalid value type {vtype}")
    item_type = cur.u32(key)
    count = cur.u64(key)
    if item_type == _ARRAY:
        raise GGUFError(f"key {key!r} is an array of arrays, which GGUF readers do not support")
    min_size = 8 if item_type == _STRING else _SCALARS.get(item_type, ("", 0))[1]
    if min_size == 0:
        raise GGUFError(f"key {key!r} has an array of invalid type {item_type}")
    if count > MAX_ARRAY or count * min_size > cur.left:
        raise GGUFError(f"key {key!r} has an array count {count} larger than the file allows")
    keep = max_items is None or count <= max_items
    if item_type == _STRING:
        if keep:
            return [cur.string(MAX_STRING, key) for _ in range(count)]
        cur.skip_strings(count, key)
    elif keep:
        return cur.scalars(item_type, count, key)
    else:
        cur._take(count * min_size, key)
    return ArraySummary(item_type, count)


def _header(buf: Any, size: int) -> tuple[_Cursor, int]:
    if size < 24 or bytes(buf[:4]) != MAGIC:
        raise GGUFError("not a GGUF file (bad magic)")
    (version,) = struct.unpack_from("<I", buf, 4)
    endian = "<"
    if version & 0xFFFF == 0 and (version >> 24) in (2, 3):
        endian, version = ">", version >> 24
    if version == 1:
        raise GGUFError("GGUF version 1 is not supported; convert the model again")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    cur = _Cursor(buf, size, endian)
    cur.pos = 8
    return cur, version


def parse_gguf(buf: Any, *, max_array_items: int | None = None,
               size: int | None = None, check_data: bool = True) -> GGUFFile:
    """Parse GGUF from a bytes-like object (bytes, mmap, memoryview).

    Arrays longer than ``max_array_items`` are walked but kept only as
    :class:`ArraySummary`. With ``check_data`` every tensor must lie inside the
    buffer, as llama.cpp requires; turn it off to parse a header read alone.
    """
    try:
        size = len(buf) if size is None else size
        return _parse(buf, size, max_array_items, check_data)
    except GGUFError:
        raise
    except (struct.error, ValueError, OverflowError, MemoryError, IndexError) as exc:
        raise GGUFError(f"invalid GGUF file: {exc}") from None


def _parse(buf: Any, size: int, max_items: int | None, check_data: bool) -> GGUFFile:
    cur, version = _header(buf, size)
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    if n_tensors > MAX_TENSORS or n_tensors * 24 > cur.left:
        raise GGUFError(f"tensor count {n_tensors} is larger than the file allows")
    if n_kv > MAX_KVS or n_kv * 13 > cur.left:
        raise GGUFError(f"metadata count {n_kv} is larger than the file allows")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        try:
            key = cur.raw_string(MAX_KEY, "metadata key").decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError("metadata key is not valid UTF-8") from None
        if key in metadata:
            raise GGUFError(f"duplicate metadata key {key!r}")
        metadata[key] = _value(cur, cur.u32(key), key, max_items)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0
            or alignment & (alignment - 1)):
        raise GGUFError(f"general.alignment {alignment!r} is not a power of two")
    tensors = _tensors(cur, n_tensors)
    data_offset = -(-cur.pos // alignment) * alignment
    _check_offsets(tensors, alignment, size - data_offset if check_data else None)
    return GGUFFile(version, metadata, tensors, alignment, data_offset, size, cur.e == ">")


def _tensors(cur: _Cursor, count: int) -> tuple[TensorInfo, ...]:
    out: list[TensorInfo] = []
    seen: set[str] = set()
    for i in range(count):
        try:
            name = cur.raw_string(MAX_TENSOR_NAME - 1, f"tensor {i} name").decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"tensor {i} name is not valid UTF-8") from None
        if name in seen:
            raise GGUFError(f"duplicate tensor name {name!r}")
        seen.add(name)
        n_dims = cur.u32(name)
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        shape = tuple(cur.u64(name) for _ in range(n_dims))
        total = 1
        for d in shape:
            total *= d
            if d > _INT64_MAX or total > _INT64_MAX:
                raise GGUFError(f"tensor {name!r} has an impossible shape {list(shape)}")
        ttype = cur.u32(name)
        info = TENSOR_TYPES.get(ttype)
        if info is None:
            raise GGUFError(f"tensor {name!r} has invalid ggml type {ttype}")
        if shape and shape[0] % info.block_size:
            raise GGUFError(f"tensor {name!r} row size {shape[0]} is not a multiple of the "
                            f"{info.name} block size {info.block_size}")
        out.append(TensorInfo(name, shape, ttype, cur.u64(name)))
    return tuple(out)


def _check_offsets(tensors: tuple[TensorInfo, ...], alignment: int, data_size: int | None) -> None:
    expected = 0
    for t in tensors:
        if t.offset != expected:
            raise GGUFError(f"tensor {t.name!r} has offset {t.offset}, expected {expected}")
        expected += -(-t.n_bytes // alignment) * alignment
    if data_size is not None and tensors and tensors[-1].offset + tensors[-1].n_bytes > data_size:
        raise GGUFError("tensor data extends past the end of the file (truncated download?)")


def read_gguf(path: Path | str, *, max_array_items: int | None = None) -> GGUFFile:
    """Read the header of a GGUF file on disk without reading its weights."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < 24:
                raise GGUFError("not a GGUF file (too short)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return parse_gguf(mm, max_array_items=max_array_items, size=size)
    except OSError as exc:
        raise GGUFError(f"cannot read {Path(path).name}: {exc.strerror or exc}") from None


def is_gguf(path: Path | str) -> bool:
    """Tell whether a file starts with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False
