"""Tables of ggml tensor types and llama.cpp file types (``general.file_type``)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from power.errors import InvalidRequest

__all__ = [
    "TensorType", "TENSOR_TYPES", "FILE_TYPE_NAMES", "QUANTIZE_TYPES", "BITS_PER_WEIGHT", "can_quantize",
    "file_type_name", "parse_quantize_type", "file_type_from_tensors", "f32_shortest",
]


@dataclass(frozen=True)
class TensorType:
    """A ggml tensor type: its name and how many bytes a block of elements takes."""

    name: str
    block_size: int
    type_size: int

    def nbytes(self, n_elements: int) -> int:
        return n_elements // self.block_size * self.type_size


# ggml_type id -> (name, elements per block, bytes per block). Ids left out were removed from ggml.
TENSOR_TYPES: dict[int, TensorType] = {
    i: TensorType(n, b, s) for i, (n, b, s) in {
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
        13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
        16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
        19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
        26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
        30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
        39: ("MXFP4", 32, 17),
    }.items()
}

# llama_ftype id -> the name Ollama shows as quantization_level.
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_F16", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4",
}

# Quantization targets `create --quantize` accepts (canonical spelling -> llama_ftype id).
QUANTIZE_TYPES: dict[str, int] = {
    "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7, "Q2_K": 10, "Q3_K_S": 11,
    "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17,
    "Q6_K": 18, "F16": 1, "BF16": 32, "F32": 0,
}

# Input file types a quantization may start from.
QUANTIZE_SOURCES = frozenset({"F32", "F16", "BF16"})

# About how many bits a weight each type takes (llama-quantize's list): a model already quantized may be
# requantized only to a type of fewer (a smaller draft model made from its target, issue 17).
BITS_PER_WEIGHT: dict[str, float] = {
    "Q2_K": 2.96, "Q3_K_S": 3.41, "Q3_K_M": 3.74, "Q3_K_L": 4.03, "Q4_0": 4.34, "Q4_K_S": 4.37, "Q4_K_M": 4.58,
    "Q4_1": 4.78, "Q5_0": 5.21, "Q5_K_S": 5.21, "Q5_K_M": 5.33, "Q5_1": 5.65, "Q6_K": 6.14, "Q8_0": 7.96,
    "F16": 16.0, "BF16": 16.0, "F32": 32.0,
}


def can_quantize(have: str, want: str) -> bool:
    """Whether a model of file type ``have`` may be quantized to ``want``: from F32/F16/BF16 to any type, or
    requantized from another type to a smaller one."""
    if have in QUANTIZE_SOURCES:
        return True
    return have in BITS_PER_WEIGHT and BITS_PER_WEIGHT[want] < BITS_PER_WEIGHT[have]


def file_type_name(file_type: int | None) -> str:
    if file_type is None:
        return "unknown"
    return FILE_TYPE_NAMES.get(file_type, "unknown")


def parse_quantize_type(text: str) -> str:
    """Return the canonical spelling of a quantization name (``q4_k_m`` -> ``Q4_K_M``)."""
    want = text.strip().upper()
    if want not in QUANTIZE_TYPES:
        raise InvalidRequest(f"unsupported quantization type {text}")
    return want


def file_type_from_tensors(types: list[int]) -> int | None:
    """Guess ``general.file_type`` from the most common tensor type, as llama.cpp does."""
    counts: dict[int, int] = {}
    for t in types:
        counts[t] = counts.get(t, 0) + 1
    if not counts:
        return None
    if set(counts) == {0}:
        return 0
    dominant = max((t for t in counts if t != 0), key=lambda t: counts[t])
    by_tensor = {1: 1, 30: 32, 2: 2, 3: 3, 6: 8, 7: 9, 8: 7, 10: 10, 11: 12, 12: 15, 13: 17,
                 14: 18, 16: 19, 17: 20, 18: 23, 19: 24, 20: 25, 21: 26, 22: 28, 23: 30, 29: 31,
                 34: 36, 35: 37, 39: 38}
    return by_tensor.get(dominant)


def f32_shortest(value: float) -> float:
    """Return the shortest decimal that rounds to the same float32 (1e-05, not 9.99e-06)."""
    if not math.isfinite(value):
        return value
    want = struct.pack("<f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.pack("<f", candidate) == want:
                return candidate
        except OverflowError:  # rounding up past float32's range
            continue
    return value
