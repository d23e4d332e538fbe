"""Layers offloaded to a GPU backend (CUDA, Metal, Vulkan), checked against the same model on the CPU.

Skipped unless llama.cpp's backends found a GPU device, so a CPU build never runs them. Without a GPU
they run on a Vulkan build over Mesa's lavapipe (software Vulkan on the CPU; ggml's Vulkan backend
skips CPU-type Vulkan devices unless ``GGML_VK_VISIBLE_DEVICES`` names them), see README::

    GGML_VK_VISIBLE_DEVICES=0 A3S_POWER_LIB_DIR=$PWD/build/vulkan/bin \\
        .venv/bin/python -m pytest tests/engine/test_gpu_offload.py

What is observable of the placement is llama.cpp's own report at load ("offloaded N/M layers to GPU",
"<device> model buffer size = ..."), which the binding forwards to the ``power.llama`` logger.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from power import native
from power.engine import Chunk, Engine, LoadOptions

GPUS = [d for d in native.devices() if d.kind in ("gpu", "igpu")]

pytestmark = pytest.mark.skipif(
    not GPUS, reason=f"no GPU backend device (llama.cpp found only {', '.join(d.name for d in native.devices())}): "
                     "needs a CUDA, Metal or Vulkan build and a device (Mesa's lavapipe: GGML_VK_VISIBLE_DEVICES=0)")

N_LAYER = 2  # tests/tinymodels.py write_llama's default: 2 blocks + the output layer
PROMPTS = ["once upon a time", "the quick brown fox", "hello", "1 2 3 4"]
GREEDY = {"temperature": 0, "num_predict": 24}
# The backends' kernels sum in other orders: the chosen tokens' logprobs (measured on lavapipe)
# differ by up to ~0.015 over 24 tokens on the tiny model (0.04 over 64). A greedy choice may
# therefore only flip where the CPU's best two tokens are closer than this.
TIE = 0.05


@contextmanager
def llama_log(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """llama.cpp's INFO lines while the block runs (the binding forwards only warnings by default)."""
    quiet = 3 if not native.log.isEnabledFor(logging.DEBUG) else 1
    lines: list[str] = []
    caplog.set_level(logging.INFO, logger=native.log.name)
    native._lib.pw_set_log(native._on_log, native._ffi.NULL, 2)
    try:
        yield lines
    finally:
        native._lib.pw_set_log(native._on_log, native._ffi.NULL, quiet)
        lines.extend(r.getMessage() for r in caplog.records if r.name == native.log.name)


def offloaded(lines: Sequence[str]) -> tuple[int, int]:
    for line in lines:
        m = re.search(r"offloaded (\d+)/(\d+) layers to GPU", line)
        if m:
            return int(m.group(1)), int(m.group(2))
    raise AssertionError("llama.cpp logged no offload line:\n" + "\n".join(lines))


def weights_mib(lines: Sequence[str]) -> dict[str, float]:
    """MiB of model weights per buffer ("CPU_Mapped", "Vulkan0", ...)."""
    out: dict[str, float] = {}
    for line in lines:
        m = re.search(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def test_the_gpu_device_is_listed_and_offload_is_supported() -> None:
    dev = GPUS[0]
    assert dev.name and dev.description
    assert dev.memory_total > 0 and 0 < dev.memory_free <= dev.memory_total
    assert native._lib.pw_supports_gpu_offload()
    assert any(d.kind == "cpu" for d in native.devices())  # the host backend is always there too


@pytest.mark.parametrize(("num_gpu", "expect"), [(-1, N_LAYER + 1), (99, N_LAYER + 1), (1, 1), (0, 0)])
def test_num_gpu_decides_how_many_layers_the_device_holds(tiny_model: Path, caplog: pytest.LogCaptureFixture,
                                                         num_gpu: int, expect: int) -> None:
    with llama_log(caplog) as lines:
        native.Model(tiny_model, n_gpu_layers=num_gpu).close()
    assert offloaded(lines) == (expect, N_LAYER + 1)
    mib = weights_mib(lines)
    on_gpu = sum(v for k, v in mib.items() if k in {d.name for d in GPUS})
    total = sum(mib.values())
    if expect == N_LAYER + 1:  # everything but the token embeddings (llama.cpp keeps the input layer home)
        assert on_gpu > 0.8 * total, mib
    elif expect:
        assert 0 < on_gpu < 0.8 * total, mib
    else:
        assert on_gpu == 0, mib


@pytest.fixture(scope="module")
def cpu(tiny_model: Path) -> Iterator[Engine]:
    with Engine(str(tiny_model), LoadOptions(num_ctx=256, num_gpu=0, num_parallel=4, num_batch=64)) as eng:
        yield eng


@pytest.fixture(scope="module")
def gpu(tiny_model: Path) -> Iterator[Engine]:
    with Engine(str(tiny_model), LoadOptions(num_ctx=256, num_gpu=99, num_parallel=4, num_batch=64)) as eng:
        yield eng


def generate(eng: Engine, prompt: str) -> Chunk:
    out = eng.submit(prompt, GREEDY, logprobs=2).result()
    assert out.done_reason == "length" and len(out.tokens) == GREEDY["num_predict"]
    return out


def assert_agree(want: Chunk, got: Chunk) -> int:
    """Same greedy tokens, except after a near-tie of the CPU run; returns how many agree."""
    n = 0
    for w, g, lp in zip(want.tokens, got.tokens, want.logprobs):
        if w != g:
            margin = lp.top[0][1] - lp.top[1][1]
            assert margin < TIE, f"token {n} differs ({g} for {w}) where the CPU's choice led by {margin:.4f}"
            break
        n += 1
    return n


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generation_on_the_gpu_matches_the_cpu(cpu: Engine, gpu: Engine, prompt: str) -> None:
    want, got = generate(cpu, prompt), generate(gpu, prompt)
    n = assert_agree(want, got)
    assert n >= 6  # the tiny model's first near-tie on these prompts is at token 6 ("hello")
    assert [x.logprob for x in got.logprobs[:n]] == pytest.approx([x.logprob for x in want.logprobs[:n]], abs=TIE)


def test_batched_sequences_on_the_gpu_match_the_cpu(cpu: Engine, gpu: Engine) -> None:
    reqs = gpu.submit_many(PROMPTS, GREEDY, logprobs=2)
    for prompt, req in zip(PROMPTS, reqs):
        assert assert_agree(generate(cpu, prompt), req.result()) >= 6


def test_a_partial_offload_matches_the_cpu(tiny_model: Path, cpu: Engine) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=256, num_gpu=1, num_batch=64)) as part:
        for prompt in PROMPTS[:2]:
            assert assert_agree(generate(cpu, prompt), generate(part, prompt)) >= 6


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.mark.parametrize("which", ["embed_model", "tiny_model"])
def test_embeddings_on_the_gpu_match_the_cpu(request: pytest.FixtureRequest, which: str) -> None:
    path = str(request.getfixturevalue(which))
    texts = ["hello world", "a different text", "the quick brown fox jumps over the lazy dog"]
    vecs = {}
    for num_gpu in (0, 99):
        with Engine(path, LoadOptions(num_ctx=128, num_gpu=num_gpu)) as eng:
            vecs[num_gpu] = eng.embed(texts, normalize=False).embeddings
    for c, g in zip(vecs[0], vecs[99]):
        assert len(g) == len(c) == 64
        assert cosine(c, g) > 0.999
        assert math.hypot(*g) == pytest.approx(math.hypot(*c), rel=1e-3)
    assert cosine(vecs[99][0], vecs[99][1]) < 0.99  # different texts stay different


def test_main_gpu_out_of_range_is_ignored_under_layer_split(tiny_model: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    # llama.cpp reads main_gpu only in split mode "none"; the shim loads with its default, "layer", which
    # spreads the layers over every GPU (as Ollama's runner does): no error, and the same placement.
    with llama_log(caplog) as lines:
        native.Model(tiny_model, n_gpu_layers=99, main_gpu=len(GPUS) + 7).close()
    assert offloaded(lines) == (N_LAYER + 1, N_LAYER + 1)


@contextmanager
def served(tmp_path: Path, tiny_model: Path, gpus: list | None) -> Iterator[Any]:
    """The app over a real scheduler and runners, with ``tiny`` in its store."""
    from falcon import testing

    from power.config import load_settings
    from power.runner.resolve import store_resolver
    from power.runner.scheduler import Scheduler
    from power.server import create_app
    from power.server.storeport import StorePort
    from power.store import ModelStore

    settings = load_settings({"A3S_POWER_HOME": str(tmp_path), "OLLAMA_MODELS": str(tmp_path / "models"),
                              "OLLAMA_NUM_PARALLEL": "1", "OLLAMA_CONTEXT_LENGTH": "256"})
    library = ModelStore(settings.models, noprune=True)
    for _ in library.create({"model": "tiny", "files": {tiny_model.name: library.blobs.add_file(tiny_model).digest}}):
        pass
    scheduler = Scheduler(settings, store_resolver(library), gpus=gpus, runner_log_level="DEBUG")
    try:
        yield testing.TestClient(create_app(settings, StorePort(library), scheduler),
                                 headers={"Host": "127.0.0.1:11434"})
    finally:
        scheduler.close(deadline=5.0)


def test_the_server_offloads_what_a_request_asks(tmp_path: Path, tiny_model: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    out = {}
    with served(tmp_path, tiny_model, gpus=[]) as client:  # no GPUs for the scheduler: only as asked
        for num_gpu in (0, 99):  # a load option: the second request reloads the runner
            r = client.simulate_post("/api/generate", json={
                "model": "tiny", "prompt": "once upon a time", "stream": False,
                "options": {"temperature": 0, "num_predict": 12, "num_gpu": num_gpu}})
            assert r.status_code == 200, r.text
            out[num_gpu] = r.json["response"]
    err = capfd.readouterr().err  # the runners' logs (their stderr is the server's)
    assert f"offloaded 0/{N_LAYER + 1} layers to GPU" in err
    assert f"offloaded {N_LAYER + 1}/{N_LAYER + 1} layers to GPU" in err
    assert out[99] == out[0] and out[0]  # no near-tie in these 12 tokens (CPU margins >= 0.2)


def test_the_server_finds_the_device_and_offloads_by_default(tmp_path: Path, tiny_model: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    # No NVML, nvidia-smi or Metal here: the scheduler asks llama.cpp in a subprocess (power.runner.probe)
    with served(tmp_path, tiny_model, gpus=None) as client:
        r = client.simulate_post("/api/generate", json={"model": "tiny", "prompt": "hello", "stream": False,
                                                        "options": {"temperature": 0, "num_predict": 4}})
        assert r.status_code == 200, r.text
        ps = client.simulate_get("/api/ps").json["models"]
        assert ps and ps[0]["size_vram"] > 0
    assert f"offloaded {N_LAYER + 1}/{N_LAYER + 1} layers to GPU" in capfd.readouterr().err
