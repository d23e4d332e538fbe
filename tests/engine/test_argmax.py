"""Greedy sampling's argmax (the shim's block scan, split over threads) against numpy's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power import native


def expected(row: np.ndarray) -> int:
    """The first index of the largest number; NaN never wins; nothing above -inf gives 0."""
    clean = np.where(np.isnan(row), -np.inf, row)
    return int(np.argmax(clean)) if np.any(clean > -np.inf) else 0


SIZES = (1, 7, 1023, 1024, 1025, 2047, 2048, 3000, 5120)


@settings(max_examples=150, deadline=None)
@given(n=st.sampled_from(SIZES), n_rows=st.integers(1, 5), threads=st.integers(1, 4), seed=st.integers(0, 2**31),
       ties=st.booleans(), specials=st.booleans())
def test_matches_numpy(n: int, n_rows: int, threads: int, seed: int, ties: bool, specials: bool) -> None:
    rng = np.random.default_rng(seed)
    rows = rng.integers(-4, 4, size=(n_rows, n)).astype(np.float32) if ties else \
        rng.standard_normal((n_rows, n)).astype(np.float32)
    if specials:
        mask = rng.random((n_rows, n))
        rows[mask < 0.05] = np.nan
        rows[(mask >= 0.05) & (mask < 0.1)] = -np.inf
    assert native.argmax_rows(rows.tolist(), threads) == [expected(r) for r in rows]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_first_of_equal_maxima_across_blocks_and_thread_parts(threads: int) -> None:
    n = 262144  # Gemma 3's vocabulary: many blocks, and a part per thread
    for positions in ([5, 200000], [131071, 131072], [1023, 1024], [n - 1], [0, n - 1]):
        row = [0.0] * n
        for p in positions:
            row[p] = 9.5
        assert native.argmax_rows([row], threads) == [positions[0]]


def test_rows_without_numbers() -> None:
    assert native.argmax_rows([[math.nan] * 3000, [-math.inf] * 3000], 2) == [0, 0]
    assert native.argmax_rows([[math.nan, -math.inf, 1.0]], 2) == [2]
    assert native.argmax_rows([]) == []
    with pytest.raises(ValueError):
        native.argmax_rows([[1.0], [1.0, 2.0]])


def expected_top_k(row: np.ndarray, k: int) -> list[tuple[int, float]]:
    order = sorted((i for i in range(len(row)) if not np.isnan(row[i])), key=lambda i: (-row[i], i))
    return [(i, float(row[i])) for i in order[:k]]


@settings(max_examples=150, deadline=None)
@given(n=st.sampled_from(SIZES), k=st.sampled_from((1, 2, 40, 100, 1024)), seed=st.integers(0, 2**31),
       ties=st.booleans(), specials=st.booleans())
def test_top_k_candidates_match_a_full_sort(n: int, k: int, seed: int, ties: bool, specials: bool) -> None:
    rng = np.random.default_rng(seed)
    row = rng.integers(-3, 3, size=n).astype(np.float32) if ties else rng.standard_normal(n).astype(np.float32)
    if specials:
        mask = rng.random(n)
        row[mask < 0.05] = np.nan
        row[(mask >= 0.05) & (mask < 0.1)] = -np.inf
    assert native.top_k(row.tolist(), k) == expected_top_k(row, k)


def test_top_k_of_a_large_vocabulary_with_late_winners() -> None:
    n = 262144
    row = np.zeros(n, dtype=np.float32)
    winners = [n - 1, 200000, 131073, 5, 1024, 1023]
    for rank, i in enumerate(winners):
        row[i] = 10.0 - rank
    assert [t for t, _ in native.top_k(row.tolist(), 6)] == winners
    assert [t for t, _ in native.top_k(row.tolist(), 8)] == winners + [0, 1]  # then ties, by token id


def expected_penalized(row: np.ndarray, k: int, history: list[int], last_n: int, repeat: float, freq: float,
                       present: float) -> list[tuple[int, float]]:
    """llama.cpp's penalties sampler over the whole row, then a full sort (float32 arithmetic, as in C)."""
    counts: dict[int, int] = {}
    for t in history[-last_n:]:
        counts[t] = counts.get(t, 0) + 1
    vals = row.astype(np.float32).copy()
    for t, c in counts.items():
        v = vals[t]
        v = v * np.float32(repeat) if v <= 0 else v / np.float32(repeat)
        vals[t] = v - np.float32(c) * np.float32(freq) - np.float32(c > 0) * np.float32(present)
    return expected_top_k(vals, k)


@settings(max_examples=200, deadline=None)
@given(n=st.sampled_from((50, 1024, 3000)), k=st.sampled_from((1, 3, 40)), seed=st.integers(0, 2**31),
       n_hist=st.integers(0, 80), last_n=st.sampled_from((1, 6, 64)),
       repeat=st.sampled_from((1.0, 0.5, 1.3, 3.0)), freq=st.sampled_from((0.0, 0.4, -2.0)),
       present=st.sampled_from((0.0, 0.7, -4.0)))
def test_penalized_top_k_matches_penalties_then_a_full_sort(n: int, k: int, seed: int, n_hist: int, last_n: int,
                                                            repeat: float, freq: float, present: float) -> None:
    rng = np.random.default_rng(seed)
    row = (rng.standard_normal(n) * 3).astype(np.float32)  # positive and negative logits
    history = rng.integers(0, n, size=n_hist).tolist()
    got = native.top_k_penalized(row.tolist(), k, history, last_n, repeat, freq, present)
    want = expected_penalized(row, k, history, last_n, repeat, freq, present)
    assert [t for t, _ in got] == [t for t, _ in want]
    assert np.allclose([v for _, v in got], [v for _, v in want], rtol=0, atol=0)
