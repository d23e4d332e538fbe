"""The option table: every value of every option is in its range or a 400, the same for requests and Modelfiles."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from power.engine.options import INT32_MAX, OPTIONS, LoadOptions, max_threads, parse_options
from power.errors import InvalidRequest
from power.store.params import coerce_parameter, parse_parameter

NUMBERS = st.one_of(st.integers(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([2**31, 2**31 - 1, -(2**31) - 1, 2**63, -(10**20), 1e308, -1e308, 0.5, 1e-45,
                                     3.4e38, 3.5e38, -2, -1, 0, 1]))
VALUES = st.one_of(NUMBERS, st.booleans(), st.text(max_size=5), st.none(), st.lists(st.text(max_size=3), max_size=3),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
LIVE = sorted(k for k, o in OPTIONS.items() if not o.deprecated)


def in_range(key: str, value: Any) -> bool:
    spec = OPTIONS[key]
    if spec.kind is bool:
        return isinstance(value, bool)
    if spec.kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    ok_type = isinstance(value, int) if spec.kind is int else isinstance(value, float) and math.isfinite(value)
    return ok_type and spec.contains(value)


@settings(max_examples=2000, deadline=None)
@given(key=st.sampled_from(LIVE), value=VALUES)
def test_parse_options_returns_in_range_or_refuses(key: str, value: Any) -> None:
    try:
        out = parse_options({key: value})
    except InvalidRequest as exc:
        assert f'"{key}"' in str(exc)
        return
    if value is None:
        assert out == {}
        return
    assert in_range(key, out[key]), (key, value, out)


@settings(max_examples=1500, deadline=None)
@given(key=st.sampled_from(sorted(OPTIONS)), value=NUMBERS)
def test_modelfile_parameters_use_the_same_table(key: str, value: Any) -> None:
    """/api/create (JSON values) and PARAMETER lines (text) accept exactly what requests accept."""
    spec = OPTIONS[key]
    if spec.kind not in (int, float):
        return
    try:
        expected: Any = parse_options({key: value}).get(key) if not spec.deprecated else None
        accepted = True
    except InvalidRequest:
        accepted = False
    try:
        got = coerce_parameter(key, value)
        assert spec.deprecated or accepted, (key, value, got)
        assert spec.deprecated or (float(got) if spec.kind is float else got) == expected
    except InvalidRequest:
        assert spec.deprecated or not accepted, (key, value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            parsed = parse_parameter(key, str(value))
        except InvalidRequest:
            assert not in_range(key, value if spec.kind is int else float(value)) or abs(value) >= 2**63
        else:
            assert in_range(key, parsed if spec.kind is int else float(parsed)), (key, value, parsed)


@pytest.mark.parametrize("key,value", [("top_k", 2**31), ("top_k", -(10**20)), ("repeat_last_n", 2**31),
                                       ("num_predict", 1e308), ("num_predict", 1.5), ("num_predict", 2**31),
                                       ("num_keep", -2), ("num_thread", -1), ("num_batch", -1), ("num_batch", 0),
                                       ("num_gpu", -2), ("main_gpu", -1), ("num_ctx", 2**31), ("seed", 2**63),
                                       ("draft_num_predict", -1), ("temperature", -0.1), ("top_p", 1.01),
                                       ("min_p", -1), ("typical_p", 2), ("repeat_penalty", 0),
                                       ("presence_penalty", 1e39), ("frequency_penalty", -1e39)])
def test_out_of_range_names_the_option_and_its_range(key: str, value: Any) -> None:
    with pytest.raises(InvalidRequest, match=f'option "{key}" must be') as info:
        parse_options({key: value})
    assert "from" in str(info.value) or "greater than" in str(info.value) or "integer" in str(info.value)
    with pytest.raises(InvalidRequest):
        coerce_parameter(key, value)


def test_modelfile_text_out_of_range() -> None:
    with pytest.raises(InvalidRequest, match='"top_k"'):
        parse_parameter("top_k", "2147483648")
    with pytest.raises(InvalidRequest, match="invalid int value"):
        parse_parameter("num_ctx", "9" * 5000)  # refused before int() spends time on it
    assert parse_parameter("num_predict", "-2") == -2


def test_load_options_are_fitted_to_the_machine() -> None:
    load = LoadOptions.from_options(parse_options({"num_thread": INT32_MAX, "num_batch": INT32_MAX,
                                                   "num_ctx": INT32_MAX, "num_gpu": INT32_MAX}))
    assert load.num_thread == max_threads() <= 512
    assert load.num_batch == 8192 and load.num_ctx == 1 << 24
    assert LoadOptions.from_options(parse_options({"num_ctx": -5})).num_ctx == 4  # as Ollama


@settings(max_examples=40, deadline=None)
@given(opts=st.fixed_dictionaries({}, optional={
    "top_k": st.sampled_from([-1, 0, 1, 5, 1024, 1025, INT32_MAX]),
    "repeat_last_n": st.sampled_from([-1, 0, 1, 64, INT32_MAX]),
    "num_keep": st.sampled_from([-1, 0, 4, INT32_MAX]),
    "seed": st.sampled_from([-(2**63), -1, 0, 2**32, 2**63 - 1]),
    "temperature": st.sampled_from([0.0, 1e-45, 1e-30, 0.8, 1e30, 3.4e38]),
    "repeat_penalty": st.sampled_from([1e-45, 0.5, 1.0, 1.1, 3.4e38]),
    "presence_penalty": st.sampled_from([-3.4e38, -2.0, 0.0, 2.0, 3.4e38]),
    "frequency_penalty": st.sampled_from([-3.4e38, 0.0, 3.4e38]),
    "top_p": st.sampled_from([0.0, 0.5, 1.0]), "min_p": st.sampled_from([0.0, 0.5, 1.0]),
    "typical_p": st.sampled_from([0.0, 0.5, 1.0])}))
def test_any_in_range_sampling_options_generate(engine: Any, opts: dict[str, Any]) -> None:
    """In-range extremes reach llama.cpp fitted (no 2^31-token penalty window, no NaN crash): the request ends."""
    out = engine.submit("hello world " * 8, {**opts, "num_predict": 3}).result()
    assert out.done_reason in ("length", "stop") and out.eval_count <= 3  # a sampled end-of-text is fine


def test_the_engine_fits_raw_counts_past_int32(engine: Any) -> None:
    """Callers that skip parse_options (RequestOptions directly) cannot overflow the C struct either."""
    from power.engine.options import RequestOptions

    opts = RequestOptions(top_k=10**20, repeat_last_n=10**20, seed=10**30, num_predict=3, num_keep=10**20)
    assert engine.submit("hi there", opts, logprobs=10**12).result().eval_count == 3


def test_the_engine_refuses_what_llama_cpp_cannot_take(engine: Any) -> None:
    """Text with a lone surrogate and ids outside the vocabulary are the caller's fault (400), not a crash."""
    for call in (lambda: engine.submit("a\ud800b", {"num_predict": 1}), lambda: engine.tokenize("\udfff"),
                 lambda: engine.detokenize([engine.info.n_vocab]), lambda: engine.detokenize([2**40]),
                 lambda: engine.submit([1, -1], {"num_predict": 1}), lambda: engine.submit([1.5], {"num_predict": 1})):
        with pytest.raises(InvalidRequest):
            call()
    assert engine.submit("still serving", {"num_predict": 2}).result().eval_count == 2
